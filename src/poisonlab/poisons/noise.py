"""Class-wise random noise and region noise: the synthetic L∞ baselines of the poison benchmarks.

Both add one fixed perturbation a class to every image of that class, then clamp
to [0, 1]; they are the "synthetic poisons" benchmarked against error-minimizing
and error-maximizing noise in Sandoval-Segura et al., "Poisons that are learned
faster are more effective" (CVPR-W 2022), and kept as baselines in
"Autoregressive Perturbations for Data Poisoning" (NeurIPS 2022).

- ``random-noise``: one image of i.i.d. U(−ε, ε) noise a class, per pixel and
  channel (the class-wise random noise of Huang et al., "Unlearnable Examples",
  ICLR 2021, used as the benchmarks' baseline), ε = 8/255 (the papers' CIFAR
  budget).
- ``random-noise-bernoulli``: the class-wise random noise of the learned-faster
  author's code, as issue 19's side-by-side run of it found: each entry
  Bernoulli(½)·ε, so 0 or +ε, never negative (mean ε/2: it also brightens
  every image of the class). The learned-faster table's "Random Noise" row
  uses it; the file it comes from could not be read here, only that report.
- ``regions-4`` / ``regions-16``: the image is cut into a 2×2 / 4×4 grid of
  equal regions; each region of each class is one constant colour offset, every
  channel ±ε with a fair random sign, ε = 8/255. The sign (rather than a value
  uniform in [−ε, ε]) follows the public benchmark code of these region
  poisons (``ε · sign(randn)`` a class, region and channel): every entry moves
  by exactly ε before clamping, and only the sign pattern carries the class.

Where the papers are silent: a grid that does not divide the image (regions-16
on a 30-pixel image) is refused rather than cropped, so every region has the
same size; classes absent from the training set still get their noise drawn, so
a class's noise does not depend on which other classes are present.
"""

from __future__ import annotations

from functools import partial
from typing import Annotated

import torch
import torch.nn.functional as F

from poisonlab.checks import DividesImage, Fraction
from poisonlab.poisons.base import POISONS

LINF_8 = 8 / 255


def _add_classwise(images: torch.Tensor, labels: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Add each image's class noise (noise is (num_classes, C, H, W)) and clamp to the image range."""
    # Gather into a fresh tensor and add in place: one image-sized allocation instead of two.
    return noise.to(images.device)[labels].add_(images).clamp_(0, 1)


def random_noise_pattern(shape: torch.Size, *, num_classes: int, generator: torch.Generator,
                         epsilon: float) -> torch.Tensor:
    """(num_classes, C, H, W) noise, i.i.d. U(−ε, ε) per class, pixel and channel."""
    uniform = torch.rand((num_classes, *shape[1:]), generator=generator, device=generator.device)
    return (2 * uniform - 1) * epsilon


def bernoulli_noise_pattern(shape: torch.Size, *, num_classes: int, generator: torch.Generator,
                            epsilon: float) -> torch.Tensor:
    """(num_classes, C, H, W) noise, i.i.d. Bernoulli(½)·ε per class, pixel and channel: 0 or +ε."""
    coins = torch.randint(0, 2, (num_classes, *shape[1:]), generator=generator, device=generator.device)
    return coins.float() * epsilon


def regions_pattern(shape: torch.Size, *, num_classes: int, generator: torch.Generator, epsilon: float,
                    grid: int) -> torch.Tensor:
    """(num_classes, C, H, W) noise: a grid × grid mosaic of constant ±ε colour offsets a class."""
    _, channels, height, width = shape
    signs = torch.randint(0, 2, (num_classes, channels, grid, grid), generator=generator,
                          device=generator.device)
    cells = (2 * signs - 1).float() * epsilon
    # Nearest-neighbour upsampling spreads each cell's value over its whole region.
    return F.interpolate(cells, size=(height, width), mode="nearest")


@POISONS.register("random-noise")
def random_noise(images: torch.Tensor, labels: torch.Tensor, *, num_classes: int, generator: torch.Generator,
                 epsilon: Fraction = LINF_8) -> torch.Tensor:
    """Class-wise uniform noise in the L∞ ball of radius ``epsilon`` (8/255, the papers' CIFAR budget)."""
    noise = random_noise_pattern(images.shape, num_classes=num_classes, generator=generator, epsilon=epsilon)
    return _add_classwise(images, labels, noise)


@POISONS.register("random-noise-bernoulli")
def random_noise_bernoulli(images: torch.Tensor, labels: torch.Tensor, *, num_classes: int,
                           generator: torch.Generator, epsilon: Fraction = LINF_8) -> torch.Tensor:
    """Class-wise noise of 0 or +``epsilon`` a pixel and channel, a fair coin each (8/255), as learned-faster."""
    noise = bernoulli_noise_pattern(images.shape, num_classes=num_classes, generator=generator, epsilon=epsilon)
    return _add_classwise(images, labels, noise)


def regions(images: torch.Tensor, labels: torch.Tensor, *, num_classes: int, generator: torch.Generator, name: str,
            grid: Annotated[int, DividesImage()], epsilon: Fraction = LINF_8) -> torch.Tensor:
    """Class-wise ±``epsilon`` colour offsets on a ``grid`` × ``grid`` of equal regions (ε = 8/255)."""
    noise = regions_pattern(images.shape, num_classes=num_classes, generator=generator, epsilon=epsilon,
                            grid=grid)
    return _add_classwise(images, labels, noise)


POISONS.register("regions-4")(partial(regions, name="regions-4", grid=2))
POISONS.register("regions-16")(partial(regions, name="regions-16", grid=4))
