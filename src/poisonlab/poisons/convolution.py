"""``cuda``: Convolution-based Unlearnable DAtaset.

Sadasivan et al., "CUDA: Convolution-based Unlearnable Datasets" (CVPR 2023).
Each class owns one random k×k filter s: entries drawn U(0, p_b), then one
entry, at a uniformly random position, set to 1. Every image of the class is
convolved with it, the same filter on each channel with zero padding k // 2 so
the size is kept, and divided by its own maximum: x̃ = (x ∗ s) / max(x ∗ s).
The filter is non-negative, so x̃ lies in [0, 1] with its brightest value at
1. A larger p_b blurs more; the single 1 keeps a shifted copy of the image.

Settings from the paper: CIFAR k = 3, p_b = 0.3 (the defaults); ImageNet-100
k = 9, p_b = 0.06. (torch's conv2d is a cross-correlation, as used here: for a
random filter the same thing.)

Stored as the original stores it (``final_filter_unlearnable.py``: x·255
assigned into the uint8 CIFAR array, a truncation): floor(x·255), not the
nearest level.

Chosen where the paper is silent: the maximum is taken over the whole image
(all channels), so colour balance survives; an all-black image (maximum 0)
stays black instead of dividing by zero.
"""

from __future__ import annotations

from typing import Annotated

import torch
import torch.nn.functional as F

from poisonlab.checks import Fraction, Number
from poisonlab.poisons.base import POISONS, floor_to_levels, single_thread

CHUNK = 256  # images blurred at a time: ~3 MB of CIFAR, in cache


def cuda_filters(num_classes: int, kernel_size: int, blur_parameter: float, generator: torch.Generator) -> torch.Tensor:
    """(K, k, k) class filters: entries U(0, p_b), one random entry a filter set to 1."""
    device = generator.device
    filters = torch.rand(num_classes, kernel_size * kernel_size, generator=generator, device=device)
    filters.mul_(blur_parameter)
    peak = torch.randint(kernel_size * kernel_size, (num_classes, 1), generator=generator, device=device)
    filters.scatter_(1, peak, 1.0)
    return filters.view(num_classes, kernel_size, kernel_size)


@single_thread()
def convolve_classwise(images: torch.Tensor, labels: torch.Tensor, filters: torch.Tensor) -> torch.Tensor:
    """Blur each image with its class's filter (same on every channel) and divide it by its maximum."""
    n, _, height, width = images.shape
    kernel_size = filters.shape[-1]
    pad = kernel_size // 2
    taps = filters.to(images)[labels.to(images.device)].view(n, -1, 1, 1, 1)  # each image's filter, flat
    out = torch.empty_like(images)
    # Cross-correlation as torch's conv2d computes it: a sum over the k² taps of tap weight × shifted
    # image, each image with its own filter, on chunks that stay in cache, on one thread. Measured on 50k
    # CIFAR images: 0.5 s, against 1-30 s for conv2d (depthwise, or a class at a time) or two threads.
    for first in range(0, n, CHUNK):
        padded = F.pad(images[first : first + CHUNK], (pad, pad, pad, pad))
        weights = taps[first : first + CHUNK]
        blurred = out[first : first + CHUNK]
        torch.mul(padded[:, :, :height, :width], weights[:, 0], out=blurred)
        for tap in range(1, kernel_size * kernel_size):
            row, col = divmod(tap, kernel_size)
            blurred.addcmul_(padded[:, :, row : row + height, col : col + width], weights[:, tap])
        peak = blurred.flatten(1).amax(1).clamp_min(torch.finfo(blurred.dtype).tiny)
        blurred.div_(peak.view(-1, 1, 1, 1))
    return out


@POISONS.register("cuda")
def cuda(images: torch.Tensor, labels: torch.Tensor, *, num_classes: int, generator: torch.Generator,
         kernel_size: Annotated[int, Number(ge=1, integer=True, odd=True)] = 3,
         blur_parameter: Fraction = 0.3) -> torch.Tensor:
    """Class-wise random blur, k = ``kernel_size`` (3; 9 for ImageNet-100), entries U(0, ``blur_parameter``) (0.3),
    one set to 1."""
    filters = cuda_filters(num_classes, kernel_size, blur_parameter, generator)
    # In [0, 1] (non-negative, divided by its maximum), then floored to the uint8 grid as the original saves it.
    return floor_to_levels(convolve_classwise(images, labels, filters))
