"""The model zoo: every arch is a ``Classifier`` (``body`` → features, ``head`` → logits).

Importing this package registers every arch in ``MODELS``; config names
resolve through it (``build_model("resnet18", ...)``). The archs built from
torchvision's import it inside their builder: importing torchvision pulls in
torch._dynamo, ~1.3 s of every pipeline job's start-up, and most jobs never
build one of those archs.
"""

from __future__ import annotations

# Imported for their @MODELS.register side effects.
from poisonlab.models import densenet, mobilenet, resnet, resnet9, smallcnn, tinycnn, vgg, vit  # noqa: F401
from poisonlab.models.base import MODELS, Classifier

__all__ = ["MODELS", "Classifier", "build_model"]


def build_model(arch: str, *, num_classes: int, in_channels: int, image_size: int) -> Classifier:
    """Build ``arch`` untrained (no pretrained weights exist here); bad sizes raise ConfigError."""
    return MODELS.build(arch, num_classes=num_classes, in_channels=in_channels, image_size=image_size)
