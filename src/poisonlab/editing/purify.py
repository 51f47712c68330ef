"""Purification: JPEG at a sweep of qualities, through the project's ``jpeg-<q>`` sanitizer (one codec).

The paper (Sandoval-Segura, Geiping, Goldstein, arXiv 2304.02234) sweeps JPEG quality; its list of
qualities is not known (the design note), so the default sweep is this project's choice:
``QUALITIES`` = 100, 95, 90, 85, 75, 65, 50, 25. The codec is ``defenses.sanitizers.jpeg``
(libjpeg through torchvision, on the uint8 image, 4:2:0 chroma), so ISS's ``jpeg-10`` and this
sweep compress alike. The immunized photos reach it as uint8 — a shared image is quantised before
anyone compresses it.
"""

from __future__ import annotations

import torch

from poisonlab.defenses import build_defense
from poisonlab.registry import ConfigError

QUALITIES = (100, 95, 90, 85, 75, 65, 50, 25)


def jpeg(images: torch.Tensor, quality: int) -> torch.Tensor:
    """``images`` (N, 3, H, W) in [0, 1] → JPEG at ``quality`` and back, through the ``jpeg-<q>`` sanitizer."""
    sanitizer = build_defense(f"jpeg-{quality}")
    labels = torch.zeros(len(images), dtype=torch.long)  # the sanitizer's interface; JPEG reads no label
    return sanitizer.apply(images, labels, num_classes=1, generator=torch.Generator())


def jpeg_photos(photos, quality: int):
    """A ``PhotoSet`` compressed at ``quality``; its meta records the quality and the codec."""
    if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
        raise ConfigError(f"jpeg quality must be an integer in 1..100; got {quality!r}")
    return photos.with_images(jpeg(photos.tensor(), quality), jpeg_quality=quality,
                              jpeg_codec="defenses.sanitizers.jpeg (torchvision libjpeg, 4:2:0)")
