"""Datasets: config name → loader → ``ImageDataset`` (DESIGN.md, Names and Contracts).

Every module in this package is imported here, so adding a dataset is adding a
module: its ``@DATASETS.register`` line (``poisonlab.data.base``) is the only
other change. ``build_dataset`` is the one entry point the CLI and the Snakemake
scripts call.
"""

import importlib
import pkgutil

from poisonlab.data.base import DATASETS, build_dataset, image_size
from poisonlab.data.container import ImageDataset
from poisonlab.data.subset import stratified_subset

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["DATASETS", "ImageDataset", "build_dataset", "image_size", "stratified_subset"]
