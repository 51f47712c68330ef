"""Compression sanitizers: ``jpeg-<q>``, ``grayscale``, ``bdr``, ``blur`` — run once on the poisoned training set.

Liu et al., "Image Shortcut Squeezing: Countering Perturbative Availability
Poisons with Compression" (ISS, ICML 2023) squeeze the perturbation out with
plain compression; APBench (Qin et al., 2023) runs the same four as
baselines. Both apply them to the uint8 training images (PIL, before crop and
flip), deterministically, so one pass over the set is the same thing. The
settings, read from their code (ISS ``augmentations.py``, APBench ``util.py``):

- ``jpeg-<q>``: PIL JPEG at quality q, 10 in ISS (its table: JPEG-10 restores
  AR from 13% to 85% on CIFAR-10). Here libjpeg through torchvision's
  ``encode_jpeg``/``decode_jpeg`` on the rounded uint8 image, as ISS encodes its
  PIL image; grayscale images (C = 1) are encoded as one channel.
- ``grayscale``: torchvision's ``Grayscale(3)``, ITU-R 601 luma
  0.299 R + 0.587 G + 0.114 B copied to every channel; one channel stays as it is.
- ``bdr``: torchvision's ``RandomPosterize(bits=2, p=1)``: each uint8 channel
  keeps its ``bits`` high bits, v ↦ ⌊v / 2^(8−b)⌋·2^(8−b), so 2 bits leave the
  levels 0, 64, 128, 192. (Not the rounding round(x·(2^b−1))/(2^b−1) of feature
  squeezing, whose levels are 0, 85, 170, 255: the originals posterize.)
- ``blur``: ``GaussianBlur(3, sigma=0.1)`` in both. Note that at σ = 0.1 a
  neighbour's weight is e^(−50) ≈ 2e−22 of the centre's, so the published
  setting leaves images unchanged; σ around 1 is needed for a visible blur.
  torchvision's batched ``gaussian_blur`` (reflect padding, as theirs).

Every sanitizer returns float32 images in [0, 1]; ``apply_sanitizer`` rounds
them to uint8 as the originals store their images.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import torch

from poisonlab.checks import Number, Positive
from poisonlab.defenses.base import DEFENSES, Sanitizer

CHUNK = 1024  # images a step: a blur's padded copy or a list of JPEG buffers stays small on ImageNet-sized sets
LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2, as torchvision's and PIL's grayscale


def _in_chunks(transform: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor) -> torch.Tensor:
    return torch.cat([transform(chunk) for chunk in images.split(CHUNK)]) if len(images) else images.clone()


def _as_uint8(images: torch.Tensor) -> torch.Tensor:
    """[0, 1] floats → uint8, rounded as poisons.base.to_uint8 stores them."""
    return images.clamp(0, 1).mul(255).round().to(torch.uint8)


@DEFENSES.register("jpeg", level="data", numbered="quality")
def jpeg(*, quality: Annotated[int, Number(ge=1, le=100, integer=True)] = 10) -> Sanitizer:
    """JPEG encode and decode at ``quality`` (1..100; ISS uses 10), on the uint8 image."""
    def compress(chunk: torch.Tensor) -> torch.Tensor:
        # torchvision is imported when a sanitizer runs, not at the top nor when it is built: it costs
        # ~1.3 s of start-up (it pulls in torch._dynamo), and every training job imports this package and
        # Snakemake's own process builds every configured defense to check its options.
        from torchvision.io import ImageReadMode, decode_jpeg, encode_jpeg

        # libjpeg on the CPU whatever the device, so the sanitized set does not depend on the machine.
        encoded = encode_jpeg(list(_as_uint8(chunk).cpu()), quality=quality)
        decoded = decode_jpeg(encoded, mode=ImageReadMode.UNCHANGED)
        return torch.stack(decoded).to(chunk.device).float().div_(255)

    def apply(images: torch.Tensor, labels: torch.Tensor, *, num_classes: int,
              generator: torch.Generator) -> torch.Tensor:
        return _in_chunks(compress, images)

    return Sanitizer(apply=apply)


@DEFENSES.register("grayscale", level="data")
def grayscale() -> Sanitizer:
    """ITU-R 601 luma copied to every channel (ISS's grayscale); single-channel images are left as they are."""

    def apply(images: torch.Tensor, labels: torch.Tensor, *, num_classes: int,
              generator: torch.Generator) -> torch.Tensor:
        channels = images.shape[1]
        if channels == 1:
            return images.clone()
        if channels != len(LUMA):
            raise ValueError(f"defense 'grayscale' needs RGB or single-channel images; got {channels} channels")
        weights = torch.tensor(LUMA, dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
        return (images * weights).sum(1, keepdim=True).clamp_(0, 1).expand_as(images).contiguous()

    return Sanitizer(apply=apply)


@DEFENSES.register("bdr", level="data")
def bdr(*, bits: Annotated[int, Number(ge=1, le=8, integer=True)] = 2) -> Sanitizer:
    """Bit-depth reduction: keep the ``bits`` (1..8; ISS and APBench use 2) high bits of each uint8 channel."""
    step = 2 ** (8 - bits)

    def apply(images: torch.Tensor, labels: torch.Tensor, *, num_classes: int,
              generator: torch.Generator) -> torch.Tensor:
        return _as_uint8(images).div(step, rounding_mode="floor").mul_(step).float().div_(255)

    return Sanitizer(apply=apply)


@DEFENSES.register("blur", level="data")
def blur(*, kernel_size: Annotated[int, Number(ge=3, integer=True, odd=True)] = 3, sigma: Positive = 0.1) -> Sanitizer:
    """Gaussian blur, ``kernel_size`` (odd, >= 3) × same, std ``sigma``; ISS and APBench: 3 and 0.1 (a no-op)."""
    def apply(images: torch.Tensor, labels: torch.Tensor, *, num_classes: int,
              generator: torch.Generator) -> torch.Tensor:
        from torchvision.transforms.v2.functional import gaussian_blur  # here, as in jpeg

        return _in_chunks(lambda chunk: gaussian_blur(chunk, [kernel_size, kernel_size], [float(sigma)] * 2), images)

    return Sanitizer(apply=apply)
