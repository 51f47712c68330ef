"""``smallcnn``: the 3-block CNN of the embedded (MNIST-5k) and cifar10-small scales.

Sized for 2 CPU cores: three conv3×3-BN-ReLU blocks (32/64/128 channels), each
halving the map, then a global average pool. Global pooling rather than a
flattened map keeps the head the same for 28×28×1 and 32×32×3 inputs.
"""

from __future__ import annotations

from torch import nn

from poisonlab.models.base import MODELS, Classifier, check_sizes, global_pool

WIDTHS = (32, 64, 128)


def conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),  # BN supplies the bias
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


@MODELS.register("smallcnn")
def smallcnn(*, num_classes: int, in_channels: int, image_size: int) -> Classifier:
    # Each of the three pools needs at least 2×2 to halve: 8 px.
    check_sizes("smallcnn", num_classes=num_classes, in_channels=in_channels, image_size=image_size,
                min_image_size=2 ** len(WIDTHS))
    channels = (in_channels, *WIDTHS)
    stages = [(f"block{i + 1}", conv_block(channels[i], channels[i + 1])) for i in range(len(WIDTHS))]
    return Classifier([*stages, ("pool", global_pool())], WIDTHS[-1], num_classes)
