"""``tinycnn``: smallcnn's design at half the width: the embedded scale's model and the one the attribution
evaluation retrains.

Counterfactual support retrains a model a few hundred times per (method, kind), so at the embedded
scale the retrained model must train in seconds on a CPU core: three conv3×3-BN-ReLU-pool blocks of
16/32/64 channels reach ~95% on MNIST-5k in 3 epochs in about a quarter of smallcnn's time (design
note ``ssl-attribution.md`` §4, measured on a 2-core CPU). For the same reason it is the embedded main job's
arch: a training job of the grid takes ~8 s instead of smallcnn's ~22 s on a core without bf16, ~2 points lower
on clean digits and as poisonable (paper/baselines/README.md). Same body/head split as every arch.
"""

from __future__ import annotations

from poisonlab.models.base import MODELS, Classifier, check_sizes, global_pool
from poisonlab.models.smallcnn import conv_block

WIDTHS = (16, 32, 64)


@MODELS.register("tinycnn")
def tinycnn(*, num_classes: int, in_channels: int, image_size: int) -> Classifier:
    check_sizes("tinycnn", num_classes=num_classes, in_channels=in_channels, image_size=image_size,
                min_image_size=2 ** len(WIDTHS))
    channels = (in_channels, *WIDTHS)
    stages = [(f"block{i + 1}", conv_block(channels[i], channels[i + 1])) for i in range(len(WIDTHS))]
    return Classifier([*stages, ("pool", global_pool())], WIDTHS[-1], num_classes)
