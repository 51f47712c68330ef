"""Availability poisons, one module a family, each registered under its DESIGN.md name.

Every module in this package is imported here, so adding a poison is adding a
module: its ``@POISONS.register`` line is the only other change.
"""

import importlib
import pkgutil

from poisonlab.poisons.base import POISONS, apply_poison, perturbation_norms, to_float, to_uint8

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["POISONS", "apply_poison", "perturbation_norms", "to_float", "to_uint8"]
