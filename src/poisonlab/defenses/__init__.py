"""Defenses against availability poisons, one module a family, each registered under its DESIGN.md name.

Every module in this package is imported here, so adding a defense is adding a
module: its ``@DEFENSES.register`` line is the only other change.
"""

import importlib
import pkgutil

from poisonlab.defenses.base import (DEFENSES, EpochContext, Sanitizer, TrainingDefense, apply_sanitizer,
                                     build_defense, is_sanitizer)

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["DEFENSES", "EpochContext", "Sanitizer", "TrainingDefense", "apply_sanitizer", "build_defense",
           "is_sanitizer"]
