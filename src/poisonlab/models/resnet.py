"""``resnet18``: torchvision's ResNet-18, re-stemmed for small images and split into stages.

At CIFAR/MNIST sizes the ImageNet stem (7×7 stride-2 conv + max-pool) would
shrink a 32×32 image to 8×8 before the first residual block, so small images
get the usual CIFAR stem: one 3×3 stride-1 conv and no pool.
"""

from __future__ import annotations

from torch import nn

from poisonlab.models.base import MODELS, SMALL_IMAGE, Classifier, check_sizes, global_pool, init_conv


@MODELS.register("resnet18")
def resnet18(*, num_classes: int, in_channels: int, image_size: int) -> Classifier:
    # The CIFAR variant halves the map three times (layer2..layer4), each needing 2×2: 8 px.
    check_sizes("resnet18", num_classes=num_classes, in_channels=in_channels, image_size=image_size,
                min_image_size=8)
    from torchvision.models import resnet18 as tv_resnet18  # lazily: see models/__init__.py

    net = tv_resnet18(weights=None)
    small = image_size <= SMALL_IMAGE
    conv1 = (nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False) if small
             else nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False))
    maxpool = nn.Identity() if small else net.maxpool
    stem = nn.Sequential(init_conv(conv1), net.bn1, net.relu, maxpool)
    stages = [("stem", stem), ("layer1", net.layer1), ("layer2", net.layer2),
              ("layer3", net.layer3), ("layer4", net.layer4), ("pool", global_pool())]
    return Classifier(stages, net.fc.in_features, num_classes)
