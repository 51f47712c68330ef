"""Helpers the tests import (``from helpers import ...``): paths, a Snakemake runner, toy data, a quick trainer.

Fixtures live in conftest.py; plain functions and constants live here, so a test module imports
them like any other module instead of reaching into conftest.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the venv's bin: snakemake, dvc, python
SHARED_CIFAR = ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"


def project_files() -> list[str]:
    """Tracked files and new ones git does not ignore: what a fresh clone plus this change holds."""
    listing = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout
    return [name for name in listing.split("\0") if name and os.path.lexists(ROOT / name)]


def snakemake(repo: Path, *args: str, env: dict[str, str], check: bool = True,
              timeout: float = 600) -> subprocess.CompletedProcess:
    result = subprocess.run([str(BIN / "snakemake"), *args], cwd=repo, env=env, capture_output=True, text=True,
                            timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}")
    return result


# ---------------------------------------------------------------- a toy dataset the trainer learns in seconds


def quadrant_dataset(n_train: int = 256, n_test: int = 64, seed: int = 0, channels: int = 1):
    """Four classes told apart by which quadrant of an 8×8 image is bright: learnable in a few epochs."""
    import numpy as np

    from poisonlab.data.container import ImageDataset

    rng = np.random.default_rng(seed)

    def make(n):
        y = np.arange(n) % 4
        x = rng.integers(0, 60, size=(n, 8, 8, channels), dtype=np.uint8)
        for i, label in enumerate(y):
            r, c = divmod(label, 2)
            x[i, r * 4:(r + 1) * 4, c * 4:(c + 1) * 4] += 150
        return x, y

    (xtr, ytr), (xte, yte) = make(n_train), make(n_test)
    return ImageDataset(xtr, ytr, xte, yte, classes=np.array(list("abcd")))


# ---------------------------------------------------------------- natural images for poison and defense tests


def quick_recipe(*, epochs: int = 8, augment: bool = True):
    """The natural-image tests' recipe: smallcnn-sized SGD, cosine, crop + flip as the papers (or none)."""
    from poisonlab.training import Recipe

    return Recipe.from_dict({"epochs": epochs, "batch_size": 64, "lr": 0.05, "nesterov": True, "schedule": "cosine",
                             "warmup_epochs": 1,
                             "augment": {"crop": {"padding": 4}, "flip": {}} if augment else {}})


def quick_test_accuracy(dataset, *, epochs: int = 8, seed: int = 0, defense=None, augment: bool = True) -> float:
    """Train smallcnn briefly by ``quick_recipe`` and return its final clean-test accuracy in %.

    ``defense``: a training-time defense (``poisonlab.training.procedure.TrainingDefense``) or None.
    """
    import torch

    from poisonlab.models import build_model
    from poisonlab.training import DeviceData, fit

    torch.manual_seed(seed)
    height, _, channels = dataset.image_shape
    model = build_model("smallcnn", num_classes=dataset.num_classes, in_channels=channels, image_size=height)
    return fit(model, DeviceData.from_container(dataset, torch.device("cpu")), quick_recipe(epochs=epochs,
               augment=augment), seed=seed, progress=False, defense=defense).final_test_acc
