"""``densenet121``: torchvision's DenseNet-121, re-stemmed for small images and split into stages.

Small images get the CIFAR stem (3×3 stride-1 conv, no ``pool0``), so a
32×32 input reaches the dense blocks at full size instead of 8×8.
"""

from __future__ import annotations

from torch import nn

from poisonlab.models.base import MODELS, SMALL_IMAGE, Classifier, check_sizes, global_pool, init_conv


@MODELS.register("densenet121")
def densenet121(*, num_classes: int, in_channels: int, image_size: int) -> Classifier:
    # The CIFAR variant's three transitions each halve the map and need 2×2: 8 px.
    check_sizes("densenet121", num_classes=num_classes, in_channels=in_channels, image_size=image_size,
                min_image_size=8)
    from torchvision.models import densenet121 as tv_densenet121  # lazily: see models/__init__.py

    f = tv_densenet121(weights=None).features
    small = image_size <= SMALL_IMAGE
    conv0 = (nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False) if small
             else nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False))
    pool0 = nn.Identity() if small else f.pool0
    stem = nn.Sequential(init_conv(conv0, mode="fan_in"), f.norm0, f.relu0, pool0)
    stages = [
        ("stem", stem),
        ("block1", nn.Sequential(f.denseblock1, f.transition1)),
        ("block2", nn.Sequential(f.denseblock2, f.transition2)),
        ("block3", nn.Sequential(f.denseblock3, f.transition3)),
        # torchvision applies this last ReLU functionally in forward(); here it is a layer.
        ("block4", nn.Sequential(f.denseblock4, f.norm5, nn.ReLU(inplace=True))),
        ("pool", global_pool()),
    ]
    return Classifier(stages, f.norm5.num_features, num_classes)
