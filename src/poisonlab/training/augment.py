"""Batched augmentations that run where the data lives (CPU or GPU).

Each augmentation takes a raw batch ``x`` (B, C, H, W) of pixel values in
[0, 255] — uint8, or float16 for sanitized data — soft targets ``y`` (B, K)
— or (B, K, H, W) for segmentation, which crop, flip and cutmix move with the
pixels — and the run's ``torch.Generator``, and returns both, changed. Geometric ones
keep the dtype, so crops and flips move bytes, not floats; mixing ones
return float32. Randomness comes only from that generator, so a seed fixes every
crop and mix and a checkpoint of the generator's state resumes them exactly.
We write the crop, flip, cutout and mixes ourselves instead of using kornia's
modules because those draw from the global RNG, which a resumed run could not
replay, and because the crop below is one gather for the whole batch. The
rotation, affine and colour jitter of strong augmentation are kornia's, run
inside ``seeded_global_rng`` so that the run's generator still fixes them.

Defaults, and where they come from:

- ``crop``: the originals of every paper here — AR (``lightning_modules``),
  CUDA, cuda-sharpening, learn-from-unlearnable (``constants.py``), ISS and
  APBench — crop with torchvision's ``RandomCrop(32, padding=4)``, whose
  ``padding_mode`` is ``constant`` with fill 0: the shifted-in border is black
  (13.5% of the pixels of a CIFAR batch). ``mode: constant`` is therefore the
  default; ``reflect`` and ``replicate`` remain options.
- ``rotate``, ``affine``, ``color-jitter``: the strong augmentation of the
  orthogonal projection's retraining (learn-from-unlearnable,
  ``orthogonal_projection_step_2.py``): torchvision's ``RandomRotation(10)``,
  ``RandomAffine(0, shear=10, scale=(0.8, 1.2))`` — both nearest-neighbour,
  zero fill, applied to every image — and ``ColorJitter(0.2, 0.2, 0.2)``,
  which clamps to the pixel range; here kornia's equivalents, each image with
  its own draw.
- ``cutmix``: ``p`` is the chance that a batch is mixed at all; the
  projection's retraining uses β = 1, p = 0.5 (its ``--beta`` and
  ``--cutmix_prob``, one draw a batch, as here). p = 1, the default, mixes
  every batch once. (The AR repository's CutMix and MixUp defenses differ
  again: per image, two rounds of p = 0.5 each, ``augmentations.py``; not
  reproduced here.)
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import numpy as np
import torch

from poisonlab.registry import ConfigError, Registry

Augmentation = Callable[[torch.Tensor, torch.Tensor, torch.Generator], tuple[torch.Tensor, torch.Tensor]]

AUGMENTATIONS: Registry[Callable[..., Augmentation]] = Registry("augmentation")


def _uniform(n: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.rand(n, generator=generator, device=generator.device).to(device)


def _integers(high: int, n: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.randint(high, (n,), generator=generator, device=generator.device).to(device)


def _beta(alpha: float, generator: torch.Generator) -> float:
    """One Beta(α, α) draw driven by the run's generator (torch has no seeded Beta sampler)."""
    seed = int(torch.randint(2**62, (), generator=generator, device=generator.device))
    return float(np.random.default_rng(seed).beta(alpha, alpha))


def _box_mask(size_h: torch.Tensor, size_w: torch.Tensor, shape: torch.Size, generator: torch.Generator) -> torch.Tensor:
    """Boolean (B, 1, H, W) masks of boxes with the given sizes at uniform random centres."""
    b, _, h, w = shape
    device = size_h.device
    cy, cx = _integers(h, b, generator, device), _integers(w, b, generator, device)
    rows = torch.arange(h, device=device)[None, :]
    cols = torch.arange(w, device=device)[None, :]
    in_rows = (rows >= (cy - size_h // 2)[:, None]) & (rows < (cy - size_h // 2 + size_h)[:, None])
    in_cols = (cols >= (cx - size_w // 2)[:, None]) & (cols < (cx - size_w // 2 + size_w)[:, None])
    return (in_rows[:, :, None] & in_cols[:, None, :])[:, None]


def _reflect(index: torch.Tensor, size: int) -> torch.Tensor:
    """Mirror out-of-range indices back inside (−1 → 1, size → size − 2), as reflect padding does."""
    index = index.abs()
    return torch.where(index >= size, 2 * (size - 1) - index, index)


# How a crop reads the pixels it shifts in from beyond the border.
_BORDERS = {
    "reflect": _reflect,
    "replicate": lambda index, size: index.clamp(0, size - 1),
    "constant": lambda index, size: index.clamp(0, size - 1),  # then zeroed: see random_crop
}


@AUGMENTATIONS.register("crop")
def random_crop(*, padding: int = 4, mode: str = "constant") -> Augmentation:
    """Random crop of the image padded by ``padding`` px on each side, as one gather for the batch.

    ``constant`` pads with zeros, as torchvision's ``RandomCrop(32, padding=4)`` of the originals.
    No padded copy is made: each image's shifted rows and columns are index arithmetic
    on the batch itself, in whatever dtype it has (uint8 stays uint8).
    """
    if padding < 0:
        raise ConfigError(f"crop.padding must be >= 0; got {padding}")
    if mode not in _BORDERS:
        raise ConfigError(f"crop.mode must be one of {', '.join(sorted(_BORDERS))}; got '{mode}'")

    def apply(x, y, generator):
        b, c, h, w = x.shape
        shift = _integers(2 * padding + 1, 2 * b, generator, x.device) - padding
        rows = shift[:b, None] + torch.arange(h, device=x.device)  # (B, H) source rows
        cols = shift[b:, None] + torch.arange(w, device=x.device)
        # Two 1-D gathers (rows, then columns): 3× faster on the CPU than one 4-index gather.
        out = x.gather(2, _BORDERS[mode](rows, h)[:, None, :, None].expand(b, c, h, w))
        out = out.gather(3, _BORDERS[mode](cols, w)[:, None, None, :].expand(b, c, h, w))
        outside = ((rows < 0) | (rows >= h))[:, None, :, None] | ((cols < 0) | (cols >= w))[:, None, None, :]
        if mode == "constant":
            out = out.masked_fill(outside, 0)
        if y.dim() == 4:  # a segmentation target (B, K, H, W) moves with its image; shifted-in pixels have no label
            k = y.shape[1]
            y = y.gather(2, _BORDERS[mode](rows, h)[:, None, :, None].expand(b, k, h, w))
            y = y.gather(3, _BORDERS[mode](cols, w)[:, None, None, :].expand(b, k, h, w)).masked_fill(outside, 0)
        return out, y

    return apply


@AUGMENTATIONS.register("flip")
def random_flip(*, p: float = 0.5) -> Augmentation:
    """Horizontal flip of each image with probability ``p``."""

    def apply(x, y, generator):
        flip = _uniform(len(x), generator, x.device) < p
        if y.dim() == 4:  # a segmentation target (B, K, H, W) is mirrored with its image
            y = torch.where(flip[:, None, None, None], y.flip(-1), y)
        return torch.where(flip[:, None, None, None], x.flip(-1), x), y

    return apply


@AUGMENTATIONS.register("cutout")
def cutout(*, size: int = 16) -> Augmentation:
    """Zero a ``size``×``size`` square at a random centre (it may hang over the edge), as DeVries & Taylor."""
    if size < 1:
        raise ConfigError(f"cutout.size must be >= 1; got {size}")

    def apply(x, y, generator):
        sizes = torch.full((len(x),), size, device=x.device)
        return x.masked_fill(_box_mask(sizes, sizes, x.shape, generator), 0.0), y

    return apply


@AUGMENTATIONS.register("mixup")
def mixup(*, alpha: float = 1.0) -> Augmentation:
    """Convex mix of the batch with a permutation of itself, λ ~ Beta(α, α), targets mixed alike."""
    if alpha <= 0:
        raise ConfigError(f"mixup.alpha must be > 0; got {alpha}")

    def apply(x, y, generator):
        lam = _beta(alpha, generator)
        perm = torch.randperm(len(x), generator=generator, device=generator.device).to(x.device)
        return lam * x + (1 - lam) * x[perm], lam * y + (1 - lam) * y[perm]

    return apply


@AUGMENTATIONS.register("cutmix")
def cutmix(*, alpha: float = 1.0, p: float = 1.0) -> Augmentation:
    """Paste a box from a permuted batch; targets weighted by the pasted area (Yun et al.).

    With probability ``p`` a batch (one draw a batch, as the originals); p = 1 mixes every batch
    without drawing, so runs made before ``p`` existed replay the same generator stream.
    """
    if alpha <= 0:
        raise ConfigError(f"cutmix.alpha must be > 0; got {alpha}")
    _check_probability("cutmix", p)

    def apply(x, y, generator):
        if p < 1 and not _uniform(1, generator, x.device).item() < p:
            return x, y
        b, _, h, w = x.shape
        lam = _beta(alpha, generator)
        cut = (1.0 - lam) ** 0.5
        size_h = torch.full((b,), int(h * cut), device=x.device)
        size_w = torch.full((b,), int(w * cut), device=x.device)
        perm = torch.randperm(b, generator=generator, device=generator.device).to(x.device)
        box = _box_mask(size_h, size_w, x.shape, generator)
        if y.dim() == 4:  # segmentation: each pasted pixel brings its own label
            return torch.where(box, x[perm], x), torch.where(box, y[perm], y)
        pasted_fraction = box.flatten(1).float().mean(1, keepdim=True)
        return torch.where(box, x[perm], x), (1 - pasted_fraction) * y + pasted_fraction * y[perm]

    return apply


# ---------------------------------------------------------------- kornia's, for strong augmentation


def _check_probability(name: str, p: float) -> None:
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p <= 1:
        raise ConfigError(f"{name}.p must lie in [0, 1]; got {p!r}")


@contextlib.contextmanager
def seeded_global_rng(generator: torch.Generator, device: torch.device) -> Iterator[None]:
    """Inside the block torch's global RNG is seeded by one draw from ``generator``, and restored after.

    kornia samples its parameters from the global RNG; this keeps the run's generator the only
    source of randomness (a seed fixes every draw, a resumed run replays them) and leaves the
    global state as it was.
    """
    seed = int(torch.randint(2**62, (), generator=generator, device=generator.device))
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


def _kornia(name: str, *, keep_dtype: bool, **options) -> Augmentation:
    """kornia.augmentation.<name>(**options) on the [0, 255] batch: scaled to [0, 1] for it, in float32, and back.

    ``keep_dtype``: geometric ones with nearest-neighbour sampling only move pixels, so a uint8
    batch stays uint8; colour ones return float32. kornia is imported at the first batch, not when
    the recipe is built: every pipeline job validates every recipe, and the import costs ~1 s.
    """
    modules: list[torch.nn.Module] = []

    def apply(x, y, generator):
        if not modules:
            import kornia.augmentation as K

            modules.append(getattr(K, name)(**options))
        if keep_dtype and y.dim() != 2:  # kornia moves the image alone: a label map would no longer match it
            raise ConfigError("rotate and affine take class labels only, not segmentation maps")
        # Full precision: the training step's bf16 autocast must not round the pixels.
        with seeded_global_rng(generator, x.device), torch.autocast(x.device.type, enabled=False):
            out = modules[0](x.float() / 255).mul_(255)
        return (out.round_().to(x.dtype) if keep_dtype and x.dtype == torch.uint8 else out), y

    return apply


@AUGMENTATIONS.register("rotate")
def random_rotation(*, degrees: float = 10.0) -> Augmentation:
    """Rotate each image by an angle U(−degrees, degrees), nearest neighbour, zero fill (RandomRotation)."""
    if not degrees > 0:
        raise ConfigError(f"rotate.degrees must be > 0; got {degrees}")
    return _kornia("RandomRotation", keep_dtype=True, degrees=degrees, resample="nearest", p=1.0)


@AUGMENTATIONS.register("affine")
def random_affine(*, degrees: float = 0.0, shear: float = 10.0, scale: tuple[float, float] = (0.8, 1.2)
                  ) -> Augmentation:
    """Affine map per image: rotation U(±degrees), x-shear U(±shear) degrees, isotropic scale U(scale).

    As torchvision's ``RandomAffine(degrees, shear=shear, scale=scale)``: nearest neighbour, zero fill.
    """
    if degrees < 0 or shear < 0:
        raise ConfigError(f"affine.degrees and affine.shear must be >= 0; got {degrees}, {shear}")
    low, high = scale
    if not 0 < low <= high:
        raise ConfigError(f"affine.scale must be [low, high] with 0 < low <= high; got {list(scale)}")
    return _kornia("RandomAffine", keep_dtype=True, degrees=degrees, shear=shear or None, scale=(low, high),
                   resample="nearest", padding_mode="zeros", p=1.0)


@AUGMENTATIONS.register("color-jitter")
def color_jitter(*, brightness: float = 0.2, contrast: float = 0.2, saturation: float = 0.2, hue: float = 0.0
                 ) -> Augmentation:
    """Brightness, contrast, saturation and hue factors per image, in random order, clamped (ColorJitter)."""
    if min(brightness, contrast, saturation, hue) < 0 or hue > 0.5:
        raise ConfigError("color-jitter: brightness, contrast and saturation must be >= 0 and hue in [0, 0.5]; "
                          f"got {brightness}, {contrast}, {saturation}, {hue}")
    return _kornia("ColorJitter", keep_dtype=False, brightness=brightness, contrast=contrast, saturation=saturation,
                   hue=hue, p=1.0)


def build_augmentations(spec: dict[str, dict] | None) -> list[Augmentation]:
    """``{"crop": {"padding": 4}, "flip": {}}`` → the augmentations, applied in that order."""
    return [AUGMENTATIONS.build(name, **(options or {})) for name, options in (spec or {}).items()]
