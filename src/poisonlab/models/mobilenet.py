"""``mobilenetv2``: torchvision's MobileNetV2, with the CIFAR strides for small images.

As the usual CIFAR variants do, small images keep full resolution through the
first conv and the first strided block (stride 2 → 1 in both), leaving 8×
downsampling instead of 32×. Stages follow the rows of the inverted-residual
table (one row = one width). torchvision's dropout before the classifier is
dropped: ``head`` is a plain linear layer for every arch, so DFR can refit it.
"""

from __future__ import annotations

from torch import nn

from poisonlab.models.base import MODELS, SMALL_IMAGE, Classifier, check_sizes, global_pool, init_conv

# (expansion t, width c, blocks n, first stride s): the paper's table; the
# second row's stride is the one the CIFAR variant sets to 1.
SETTING = [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 3, 2], [6, 64, 4, 2],
           [6, 96, 3, 1], [6, 160, 3, 2], [6, 320, 1, 1]]


@MODELS.register("mobilenetv2")
def mobilenetv2(*, num_classes: int, in_channels: int, image_size: int) -> Classifier:
    # Three stride-2 rows remain at small sizes, each needing 2×2: 8 px.
    check_sizes("mobilenetv2", num_classes=num_classes, in_channels=in_channels, image_size=image_size,
                min_image_size=8)
    small = image_size <= SMALL_IMAGE
    setting = [[t, c, n, 1 if small and i == 1 else s] for i, (t, c, n, s) in enumerate(SETTING)]
    from torchvision.models import mobilenet_v2  # lazily: see models/__init__.py

    net = mobilenet_v2(weights=None, inverted_residual_setting=setting)
    stem = net.features[0]
    conv = nn.Conv2d(in_channels, stem[0].out_channels, 3, stride=1 if small else 2, padding=1, bias=False)
    stem[0] = init_conv(conv)
    stages: list[tuple[str, nn.Module]] = [("stem", stem)]
    start = 1
    for i, (_, _, n, _) in enumerate(setting):
        stages.append((f"block{i + 1}", net.features[start : start + n]))
        start += n
    stages += [("last_conv", net.features[start]), ("pool", global_pool())]
    return Classifier(stages, net.last_channel, num_classes)
