"""The poison interface: (uint8 images, labels, params, seed) → poisoned images, plus their norms.

A poison is a function registered under its DESIGN.md name::

    @POISONS.register("cuda")
    def cuda(images, labels, *, num_classes, generator, kernel_size=3, blur_parameter=0.3):
        ...
        return poisoned

``images`` is float32 (N, C, H, W) in [0, 1] on the device the caller chose,
``labels`` int64 (N,), ``generator`` a ``torch.Generator`` seeded by the
caller (the only source of randomness a poison may use, so a seed fixes the
output byte for byte), and the keyword options are the poison's budget and
settings from config. It returns the poisoned images, same shape, in [0, 1].
``apply_poison`` does the rest once for every poison: quantises to uint8,
measures each image's perturbation (L2 and L∞ in [0, 1] units) and writes the
container.

Quantisation follows each original's saving code. ``apply_poison`` rounds to
the nearest of the 256 levels: the AR original rounds (half up; a tie never
occurs in practice), OPS's pixels are whole levels already, and the L∞ poisons
are on the grid up to float error. The CUDA and LSP originals instead cast
x·255 to uint8, which truncates: those poisons return
``floor_to_levels(x)``, already on the grid, so the rounding keeps their floor
(about half of the values one level below the rounded ones).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from poisonlab.data.container import ImageDataset
from poisonlab.registry import Registry

Poison = Callable[..., torch.Tensor]

# gpu: the poison trains a model (a surrogate), so at scale its job asks for the scale's GPU
# (resources.poison_surrogate) instead of the CPU resources of the others (resources.poison).
POISONS: Registry[Poison] = Registry("poison", facts={"gpu": False}, supplied=("num_classes", "generator"))


@POISONS.register("clean")
def clean(images: torch.Tensor, labels: torch.Tensor, *, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """No poison: the baseline row of every table is one more poison name."""
    return images


def to_float(x: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 (N, H, W, C) → float32 (N, C, H, W) in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(x)).to(device).permute(0, 3, 1, 2).float().div_(255)


def floor_to_levels(x: torch.Tensor) -> torch.Tensor:
    """floor(x·255)/255 of x clamped to [0, 1]: what a uint8 cast of x·255 stores, as the CUDA and LSP originals."""
    return x.clamp(0, 1).mul(255).floor_().div_(255)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """float (N, C, H, W) in [0, 1] → uint8 (N, H, W, C), rounded as torchvision's ToPILImage does not (it floors)."""
    return x.clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def perturbation_norms(clean: np.ndarray, poisoned: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-image L2 and L∞ of (poisoned − clean) in [0, 1] units, as saved (after quantisation)."""
    delta = (poisoned.astype(np.float64) - clean.astype(np.float64)).reshape(len(clean), -1) / 255
    return np.linalg.norm(delta, axis=1).astype(np.float32), np.abs(delta).max(axis=1).astype(np.float32)


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Run torch's CPU ops on one thread inside the block (or decorated function), restoring the setting."""
    # Poison generation (AR's fill, CUDA's per-image filters) is thousands of small ops (the fill) and a few hundred small GEMMs; on shared cores
    # a two-thread fork/join per op cost more than the op (measured: 10-class impulse responses 2.5 s
    # instead of 0.1 s; 50k CIFAR-100 images 9 s instead of 1.5 s).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def apply_poison(name: str, dataset: ImageDataset, *, seed: int, params: dict[str, Any] | None = None,
                 device: torch.device | str = "cpu") -> ImageDataset:
    """Poison ``dataset``'s training set with ``name``; the test set stays clean."""
    params = dict(params or {})
    POISONS.check_options(name, params, {"image_size": tuple(dataset.x_train.shape[1:3])})
    generator = torch.Generator(device=device).manual_seed(seed)
    images = to_float(dataset.x_train, device)
    labels = torch.from_numpy(dataset.y_train).to(device)
    poisoned = POISONS.get(name)(images, labels, num_classes=dataset.num_classes, generator=generator, **params)
    if poisoned.shape != images.shape:
        raise RuntimeError(f"poison '{name}' returned shape {tuple(poisoned.shape)} for {tuple(images.shape)}")
    x_train = to_uint8(poisoned)
    l2, linf = perturbation_norms(dataset.x_train, x_train)
    meta = {**dataset.meta, "poison": {"name": name, "params": params, "seed": seed,
                                       "mean_l2": float(l2.mean()), "max_linf": float(linf.max())}}
    return ImageDataset(x_train, dataset.y_train, dataset.x_test, dataset.y_test, dataset.classes, meta=meta,
                        extras={"perturbation_l2": l2, "perturbation_linf": linf})
