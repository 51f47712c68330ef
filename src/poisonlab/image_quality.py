"""PSNR and SSIM of images against their references, both in [0, 1]: the one implementation every paper uses.

kornia's metrics (data range 1; SSIM with its 11 px Gaussian window, σ 1.5, "same" padding, averaged over
its whole map). Not torchmetrics': the same quantities, but importing torchmetrics' image metrics takes
~4.6 s of a job's start (it loads torchvision and ``torch._dynamo``) against kornia's ~0.2 s, measured
warm on a 2-core AMD EPYC (30 s once on a loaded one).
"""

from __future__ import annotations

import torch


def psnr(images: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """PSNR (dB) of each image (N, C, H, W) against its reference; inf where identical."""
    from kornia.metrics import psnr as kornia_psnr

    return torch.stack([kornia_psnr(image, target, 1.0) for image, target in zip(images, reference)])


def ssim(images: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """SSIM of each image (N, C, H, W) against its reference: the mean of kornia's SSIM map."""
    from kornia.metrics import ssim as kornia_ssim

    return kornia_ssim(images, reference, 11, max_val=1.0).mean(dim=(1, 2, 3))
