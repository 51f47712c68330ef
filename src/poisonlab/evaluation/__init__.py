"""Evaluations of a trained run, each registered under its DESIGN.md name (``peak``, ``dfr``, ``linsep``).

Every module in this package is imported here, so adding an evaluation is
adding a module: its ``@EVALUATIONS.register`` line is the only other change.
``evaluate_run`` is the one entry point.
"""

import importlib
import pkgutil

from poisonlab.evaluation.base import EVALUATIONS, IDENTITY_KEYS, TrainedRun, evaluate_run

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["EVALUATIONS", "IDENTITY_KEYS", "TrainedRun", "evaluate_run"]
