"""The one shape every architecture is built into: ``body`` (image → features) then ``head``.

Later stages rely on this split, not on any family's own layout: DFR refits
``head``, linear probes read ``body``, and Progressive Staged Training freezes
or slows ``stages[:k]``. Builders here also validate their size arguments, so a
bad config fails with the field's name whether it came through
``build_model`` or straight through ``MODELS.build``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable

import torch
from torch import nn

from poisonlab.registry import ConfigError, Registry

# Images at most this size get the CIFAR-style stems (stride-1 first conv, no
# early pooling); larger ones (ImageNet-100) get the original ImageNet stems.
# 96 takes in STL-10: the AR repository trains its CIFAR-stemmed ResNet-18 on
# STL-10's 96×96 images (models/resnet.py, average pool 12 = 96 / 8).
SMALL_IMAGE = 96

# Arch name → builder ``(*, num_classes, in_channels, image_size) -> Classifier``;
# re-exported by the package, filled in by importing its family modules.
MODELS: Registry[Callable[..., Classifier]] = Registry("arch")


class Classifier(nn.Module):
    """``head(body(x))``, where ``body`` is a sequence of named stages ending in a flat vector."""

    def __init__(self, stages: Iterable[tuple[str, nn.Module]], feature_dim: int, num_classes: int) -> None:
        super().__init__()
        self.body = nn.Sequential(OrderedDict(stages))
        self.head = nn.Linear(feature_dim, num_classes)
        self.feature_dim = feature_dim

    @property
    def stages(self) -> list[nn.Module]:
        """The body's top-level stages from input to output; names via ``body.named_children()``."""
        return list(self.body)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def global_pool() -> nn.Module:
    """Final stage of the CNNs: average over space, so any input size gives (B, C)."""
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())


def check_sizes(
    arch: str, *, num_classes: int, in_channels: int, image_size: int, min_image_size: int
) -> None:
    """Raise ConfigError naming the first field outside its allowed range."""
    limits = {"num_classes": 1, "in_channels": 1, "image_size": min_image_size}
    values = {"num_classes": num_classes, "in_channels": in_channels, "image_size": image_size}
    for field, minimum in limits.items():
        value = values[field]
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ConfigError(f"arch '{arch}': {field} must be an integer >= {minimum}, got {value!r}")


def init_conv(conv: nn.Conv2d, mode: str = "fan_out") -> nn.Conv2d:
    """He init, as torchvision gives the convs it builds itself; used for the stems swapped in."""
    nn.init.kaiming_normal_(conv.weight, mode=mode, nonlinearity="relu")
    return conv
