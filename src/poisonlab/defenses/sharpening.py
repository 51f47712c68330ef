"""``rsk``, ``ssk``, ``ff``, ``rsk-ff``, ``ssk-ff``: sharpening and low-pass filtering against CUDA's blur.

Kim & Sandoval-Segura, "Learning from Convolution-Based Unlearnable Datasets"
(AdvML-Frontiers @ NeurIPS 2024). CUDA blurs each class with its own filter;
a sharpening kernel undoes part of the blur and a low-pass filter removes the
high frequencies where the class filters differ most. All settings below are
from the paper and its public repository (``augments.py`` / README):

- Kernel: plus-shaped 3×3, corners 0, centre c and the four neighbours −n.
  SSK is fixed: c = 2.5 (the repository's ``--sharp-center`` default) and
  n = (c − 1)/4 = 0.375, so the kernel sums to 1 and flat regions keep their
  value. RSK draws c ~ N(2.5, 0.1) and then each neighbour independently
  n ~ N((c − 1)/4, 0.1) — 0.1 is a standard deviation (``np.random.normal``) —
  so its sum is 1 only on average (std ≈ 0.2): RSK also jitters brightness.
  The repository draws one kernel per image (a per-sample torchvision
  transform); so do we, from the run's generator. The same kernel acts on
  every channel.
- No padding: the 3×3 window is applied only where it fits, so an H×W image
  becomes (H−2)×(W−2); the result is clamped to the pixel range.
- FF: orthonormal 2-D DCT per channel, keep the lowest ``int(30% · H)`` rows ×
  ``int(30% · W)`` columns of coefficients (9 × 9 on CIFAR's 32 px and on the
  sharpened 30 px), inverse DCT, clamp. ``keep`` is that fraction; rounding
  down is the repository's ``int(H * percentage / 100)``.
- Order: sharpen → FF → the recipe's crop and flip. The paper's training
  recipe (ResNet-18, 60 epochs, batch 512, SGD 0.1, cosine, grad clip 5) is a
  recipe, not part of the defense.

"Crop restores size", read exactly: the repository feeds the (H−2)×(W−2)
result to torchvision's ``RandomCrop(32, padding=4)``, which zero-pads it by 4
and cuts a 32×32 window: the 30×30 image lands at a top-left offset uniform in
−2…4 on each axis, on black. Our transforms must return the input's size (the
test images are H×W), so the sharpened (and filtered) image is zero-padded by
1 px on each side, and the defense turns the recipe's crop of padding p into a
zero-fill crop of padding p − 1 (``recipe_augment``): offsets 1 + (−3…3) =
−2…4 for p = 4, the original's, window for window. (Padding 1 px and then the
recipe's ±4 gave −3…5, two offsets the original never draws.) A recipe without
a crop leaves the image centred.

The DCT is a matrix product: keeping the lowest k coefficients of an
orthonormal DCT-II ``D`` and inverting is the projection ``P = D[:k]ᵀ D[:k]``,
so the whole filter is ``P_H · X · P_W`` for a batch, built once per size.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Annotated

import torch
import torch.nn.functional as F

from poisonlab.checks import Fraction, Number, Positive
from poisonlab.defenses.base import DEFENSES
from poisonlab.training.augment import Augmentation
from poisonlab.training.procedure import TrainingDefense

SHARP_CENTER = 2.5  # the repository's --sharp-center default
KERNEL_STD = 0.1  # RSK's spread of the centre and of each neighbour
FF_KEEP = 0.3  # the repository's --ff_percentage default, 30

# (row, column) in the 3×3 window of the plus kernel's taps: centre, up, left, right, down.
PLUS_TAPS = ((1, 1), (0, 1), (1, 0), (1, 2), (2, 1))

TapSampler = Callable[[int, torch.Generator], torch.Tensor]  # (batch size, generator) → (B, 5) tap weights


# ---------------------------------------------------------------- sharpening


def sharpen(x: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """Unpadded plus-kernel cross-correlation, image b with weights ``taps[b]``: (B, C, H−2, W−2), float32."""
    x = x.float()
    height, width = x.shape[-2] - 2, x.shape[-1] - 2
    weights = taps.to(x.device, torch.float32).view(len(x), len(PLUS_TAPS), 1, 1, 1)
    out = weights[:, 0] * x[..., 1:1 + height, 1:1 + width]
    for tap, (row, col) in enumerate(PLUS_TAPS[1:], start=1):
        out.addcmul_(weights[:, tap], x[..., row:row + height, col:col + width])
    return out


def fixed_taps(center: float) -> TapSampler:
    """SSK: centre c, each neighbour −(c − 1)/4, the same for every image (weights sum to 1)."""
    neighbour = -(center - 1) / 4

    def sample(batch: int, generator: torch.Generator) -> torch.Tensor:
        return torch.tensor([center] + [neighbour] * 4, device=generator.device).expand(batch, -1)

    return sample


def random_taps(center: float, std: float) -> TapSampler:
    """RSK: per image c ~ N(center, std), then each neighbour −N((c − 1)/4, std), independently."""

    def sample(batch: int, generator: torch.Generator) -> torch.Tensor:
        noise = torch.randn(batch, len(PLUS_TAPS), generator=generator, device=generator.device) * std
        drawn_center = center + noise[:, :1]
        return torch.cat([drawn_center, -((drawn_center - 1) / 4 + noise[:, 1:])], dim=1)

    return sample


# ---------------------------------------------------------------- low-frequency filter (FF)


def dct_matrix(size: int) -> torch.Tensor:
    """Orthonormal DCT-II as a (size, size) float64 matrix: coefficients = D @ signal, signal = Dᵀ @ coefficients."""
    frequency = torch.arange(size, dtype=torch.float64)[:, None]
    position = torch.arange(size, dtype=torch.float64)[None, :]
    matrix = torch.cos(math.pi * (2 * position + 1) * frequency / (2 * size)) * math.sqrt(2 / size)
    matrix[0] /= math.sqrt(2)
    return matrix


def kept_frequencies(size: int, keep: float) -> int:
    """How many of ``size`` DCT frequencies FF keeps: ⌊keep · size⌋ as the repository, at least 1."""
    return max(1, math.floor(keep * size + 1e-9))  # the epsilon keeps 0.3 · 30 at 9, not 8.999…


@functools.lru_cache(maxsize=16)
def _low_pass_projection(size: int, kept: int, device: torch.device) -> torch.Tensor:
    low = dct_matrix(size)[:kept]
    return (low.T @ low).to(device, torch.float32)  # symmetric: the same matrix filters rows and columns


def low_pass(x: torch.Tensor, keep: float) -> torch.Tensor:
    """Keep each channel's lowest ⌊keep·H⌋ × ⌊keep·W⌋ 2-D DCT coefficients, unclamped: float32, same shape."""
    height, width = x.shape[-2:]
    rows = _low_pass_projection(height, kept_frequencies(height, keep), x.device)
    cols = _low_pass_projection(width, kept_frequencies(width, keep), x.device)
    return rows @ x.float() @ cols


# ---------------------------------------------------------------- transforms and defenses


def sharpening_transform(sample_taps: TapSampler, keep: float | None) -> Augmentation:
    """Sharpen without padding, clamp, optionally FF and clamp, then zero-pad 1 px back to the input's size."""

    def apply(x, y, generator):
        out = sharpen(x, sample_taps(len(x), generator)).clamp_(0, 255)
        if keep is not None:
            out = low_pass(out, keep).clamp_(0, 255)
        return F.pad(out, (1, 1, 1, 1)), y

    return apply


def low_pass_transform(keep: float) -> Augmentation:
    def apply(x, y, generator):
        return low_pass(x, keep).clamp_(0, 255), y

    return apply


def smaller_image_crop(spec: dict[str, dict]) -> dict[str, dict]:
    """The recipe's crop of padding p → zero-fill padding p − 1, for the 1-px-bordered sharpened image."""
    if "crop" not in spec:
        return spec
    options = spec["crop"]
    return {**spec, "crop": {**options, "padding": max(options.get("padding", 4) - 1, 0), "mode": "constant"}}


def sharpening_defense(sample_taps: TapSampler, keep: float | None) -> TrainingDefense:
    return TrainingDefense(transforms=[sharpening_transform(sample_taps, keep)], recipe_augment=smaller_image_crop)


# A centre of 1 leaves images as they are; below 1 the kernel blurs.
Center = Annotated[float, Number(ge=1)]


@DEFENSES.register("ssk")
def ssk(*, center: Center = SHARP_CENTER) -> TrainingDefense:
    """Fixed sharpening kernel, centre ``center`` (2.5), neighbours −(center − 1)/4."""
    return sharpening_defense(fixed_taps(center), keep=None)


@DEFENSES.register("rsk")
def rsk(*, center: Center = SHARP_CENTER, std: Positive = KERNEL_STD) -> TrainingDefense:
    """A random kernel per image: centre c ~ N(``center`` 2.5, ``std`` 0.1), neighbours −N((c − 1)/4, std)."""
    return sharpening_defense(random_taps(center, std), keep=None)


@DEFENSES.register("ff")
def ff(*, keep: Fraction = FF_KEEP) -> TrainingDefense:
    """Low-frequency filter: the lowest ``keep`` (0.3) of DCT rows × columns."""
    return TrainingDefense(transforms=[low_pass_transform(keep)])


@DEFENSES.register("ssk-ff")
def ssk_ff(*, center: Center = SHARP_CENTER, keep: Fraction = FF_KEEP) -> TrainingDefense:
    """SSK, then FF on the sharpened image."""
    return sharpening_defense(fixed_taps(center), keep)


@DEFENSES.register("rsk-ff")
def rsk_ff(*, center: Center = SHARP_CENTER, std: Positive = KERNEL_STD,
           keep: Fraction = FF_KEEP) -> TrainingDefense:
    """RSK, then FF on the sharpened image: the paper's strongest defense against CUDA."""
    return sharpening_defense(random_taps(center, std), keep)
