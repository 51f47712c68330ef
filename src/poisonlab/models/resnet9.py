"""``resnet9``: the FFCV/TRAK "ResNet-9" that the ssl-attribution repository retrains.

Layout as in vasusingla/simple-data-attribution ``models/resnet.py`` (commit d2016b4): conv-bn 64 →
conv-bn 128 (5×5, stride 2) → residual(2 × conv-bn 128) → conv-bn 256 → max-pool 2 → residual(2 ×
conv-bn 256) → conv-bn 128 without padding → global max-pool → linear without bias, ×0.2. Every
conv-bn is conv (no bias) + BatchNorm + ReLU, 3×3 unless said. Here the ×0.2 is applied to the
pooled features, before the head: for a bias-free linear head that is the same function, and it
keeps the project's ``body``/``head`` split (DFR and linear probes read ``body``).
"""

from __future__ import annotations

import torch
from torch import nn

from poisonlab.models.base import MODELS, Classifier, check_sizes

OUTPUT_SCALE = 0.2


def _conv_bn(in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
             padding: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class _Residual(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.module = nn.Sequential(_conv_bn(channels, channels), _conv_bn(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.module(x)


class _Scale(nn.Module):
    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor


@MODELS.register("resnet9")
def resnet9(*, num_classes: int, in_channels: int, image_size: int) -> Classifier:
    # Stride 2, pool 2, then a 3×3 conv without padding: 10 px leaves a 1×1 map.
    check_sizes("resnet9", num_classes=num_classes, in_channels=in_channels, image_size=image_size,
                min_image_size=10)
    stages = [
        ("prep", _conv_bn(in_channels, 64)),
        ("layer1", nn.Sequential(_conv_bn(64, 128, kernel_size=5, stride=2, padding=2), _Residual(128))),
        ("layer2", nn.Sequential(_conv_bn(128, 256), nn.MaxPool2d(2), _Residual(256))),
        ("layer3", _conv_bn(256, 128, padding=0)),
        ("pool", nn.Sequential(nn.AdaptiveMaxPool2d(1), nn.Flatten(), _Scale(OUTPUT_SCALE))),
    ]
    model = Classifier(stages, 128, num_classes)
    model.head = nn.Linear(128, num_classes, bias=False)
    return model
