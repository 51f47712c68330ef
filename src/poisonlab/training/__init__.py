"""Training: recipes from config, batched on-device augmentation and a resumable loop.

Whole runs with their MLflow record (``RunSpec``, ``train_run``) live in ``poisonlab.training.run``,
imported from there so the trainer itself needs no tracking server or MLflow install.
"""

from poisonlab.training.augment import AUGMENTATIONS, build_augmentations
from poisonlab.training.loop import DeviceData, TrainResult, evaluate, fit, pick_device
from poisonlab.training.recipe import OPTIMIZERS, SCHEDULES, Recipe

__all__ = ["AUGMENTATIONS", "OPTIMIZERS", "SCHEDULES", "DeviceData", "Recipe", "TrainResult",
           "build_augmentations", "evaluate", "fit", "pick_device"]
