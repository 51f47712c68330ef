"""Segmentation networks by name: image (B, C, H, W) → logits (B, K, H, W) at the input's resolution.

- ``tinyunet``: the embedded scale's U-Net (Ronneberger et al. 2015, shrunk:
  ``depth`` levels of ``width``·2^level channels, a 2× pooling between levels,
  skip connections; the design note's 16/32/64 by default), sized for 2 CPU
  cores. A deeper bottom lets each pixel see the whole 28-px digit it must name.
- ``pspnet50``: PSPNet with a dilated ResNet-50 (output stride 8, pyramid
  pooling over bins 1/2/3/6, dropout 0.1), the architecture of hszhao/semseg
  that the likely companion repository (psandovalsegura/Robust-Semantic-
  Segmentation, a DDC-AT fork) trains: deep stem (three 3×3 convs, 64/64/128),
  layer3 dilated 2 and layer4 dilated 4 on every block's 3×3 conv. Its modules
  carry hszhao's names (``layer0``…``layer4``, ``ppm.features.i``, ``cls``), so
  a DDC-AT checkpoint loads after ``map_keys`` strips DataParallel's
  ``module.`` and drops the training-only auxiliary head (``aux.*``), as their
  test scripts do with ``strict=False``. smp's PSPNet is a different network
  (no dilation, other PPM placement), so it is not used.
- ``deeplabv3-r50``: torchvision's DeepLabv3-ResNet-50, built with
  ``weights=None, weights_backbone=None`` (no download); a torchvision-format
  checkpoint loads after the same mapping. DDC-AT's own DeepLabv3 files use
  other module names and are not mapped here.

No builder downloads anything; weights come from a user's checkpoint through
``load_weights``, whose unmatched keys stop the load with one message.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from poisonlab.registry import ConfigError, Registry

SEG_MODELS: Registry[Callable[..., nn.Module]] = Registry("segmentation model")


def _check(arch: str, num_classes: int, in_channels: int) -> None:
    for field, value in (("num_classes", num_classes), ("in_channels", in_channels)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"segmentation model '{arch}': {field} must be an integer >= 1, got {value!r}")


# ---------------------------------------------------------------- tinyunet


def _double_conv(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels), nn.ReLU(True),
        nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels), nn.ReLU(True),
    )


class TinyUNet(nn.Module):
    """Encoder of ``len(widths)`` double convs with a 2× pooling between each, decoder back up with skips."""

    def __init__(self, num_classes: int, in_channels: int, widths: tuple[int, ...]) -> None:
        super().__init__()
        channels = (in_channels, *widths)
        self.down = nn.ModuleList(_double_conv(channels[i], channels[i + 1]) for i in range(len(widths)))
        self.up = nn.ModuleList(nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2)
                                for i in reversed(range(len(widths) - 1)))
        self.decode = nn.ModuleList(_double_conv(2 * widths[i], widths[i]) for i in reversed(range(len(widths) - 1)))
        self.out = nn.Conv2d(widths[0], num_classes, 1)
        self.multiple = 2 ** (len(widths) - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        # Pad to a multiple of 2^poolings and crop back, so any canvas size works.
        y = F.pad(x, (0, -w % self.multiple, 0, -h % self.multiple))
        skips = []
        for level, block in enumerate(self.down):
            y = block(y if level == 0 else F.max_pool2d(y, 2))
            skips.append(y)
        for up, decode, skip in zip(self.up, self.decode, reversed(skips[:-1])):
            y = decode(torch.cat([up(y), skip], 1))
        return self.out(y)[..., :h, :w]


@SEG_MODELS.register("tinyunet")
def tinyunet(*, num_classes: int, in_channels: int, width: int = 16, depth: int = 3) -> nn.Module:
    """``depth`` levels of widths ``width`` · 2^level (the design note's 16/32/64 by default)."""
    _check("tinyunet", num_classes, in_channels)
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1 or width < 1:
        raise ConfigError(f"segmentation model 'tinyunet': depth and width must be integers >= 1; got {depth}, "
                          f"{width}")
    return TinyUNet(num_classes, in_channels, tuple(width * 2 ** level for level in range(depth)))


# ---------------------------------------------------------------- PSPNet (hszhao/semseg layout)


def _resnet_layer(inplanes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
    from torchvision.models.resnet import Bottleneck  # here: torchvision costs ~1.3 s of start-up

    downsample = None
    if stride != 1 or inplanes != planes * Bottleneck.expansion:
        downsample = nn.Sequential(nn.Conv2d(inplanes, planes * Bottleneck.expansion, 1, stride=stride, bias=False),
                                   nn.BatchNorm2d(planes * Bottleneck.expansion))
    layers = [Bottleneck(inplanes, planes, stride, downsample)]
    layers += [Bottleneck(planes * Bottleneck.expansion, planes) for _ in range(1, blocks)]
    return nn.Sequential(*layers)


def _dilate(layer: nn.Sequential, dilation: int) -> None:
    """hszhao's surgery: every block's 3×3 conv dilated, no stride; the shortcut no stride either."""
    for name, module in layer.named_modules():
        if name.endswith("conv2"):
            module.dilation, module.padding, module.stride = (dilation, dilation), (dilation, dilation), (1, 1)
        elif name.endswith("downsample.0"):
            module.stride = (1, 1)


class PPM(nn.Module):
    """Pyramid pooling: the features, and each of them average-pooled to a bin grid, reduced and upsampled."""

    def __init__(self, in_dim: int, reduction_dim: int, bins: tuple[int, ...]) -> None:
        super().__init__()
        self.features = nn.ModuleList(nn.Sequential(
            nn.AdaptiveAvgPool2d(b), nn.Conv2d(in_dim, reduction_dim, 1, bias=False), nn.BatchNorm2d(reduction_dim),
            nn.ReLU(True)) for b in bins)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        return torch.cat([x, *(F.interpolate(f(x), size, mode="bilinear", align_corners=True)
                               for f in self.features)], 1)


class PSPNet(nn.Module):
    def __init__(self, num_classes: int, in_channels: int, bins: tuple[int, ...] = (1, 2, 3, 6),
                 dropout: float = 0.1) -> None:
        super().__init__()

        def conv_bn(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True)]

        # Indices as hszhao's layer0: conv1 0, bn1 1, conv2 3, bn2 4, conv3 6, bn3 7, max pool 9.
        self.layer0 = nn.Sequential(*conv_bn(in_channels, 64, 2), *conv_bn(64, 64), *conv_bn(64, 128),
                                    nn.MaxPool2d(3, stride=2, padding=1))
        self.layer1 = _resnet_layer(128, 64, 3, 1)
        self.layer2 = _resnet_layer(256, 128, 4, 2)
        self.layer3 = _resnet_layer(512, 256, 6, 2)
        self.layer4 = _resnet_layer(1024, 512, 3, 2)
        _dilate(self.layer3, 2)
        _dilate(self.layer4, 4)
        self.ppm = PPM(2048, 2048 // len(bins), bins)
        self.cls = nn.Sequential(nn.Conv2d(4096, 512, 3, padding=1, bias=False), nn.BatchNorm2d(512), nn.ReLU(True),
                                 nn.Dropout2d(dropout), nn.Conv2d(512, num_classes, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        y = self.layer4(self.layer3(self.layer2(self.layer1(self.layer0(x)))))
        return F.interpolate(self.cls(self.ppm(y)), size, mode="bilinear", align_corners=True)


@SEG_MODELS.register("pspnet50")
def pspnet50(*, num_classes: int, in_channels: int = 3) -> nn.Module:
    _check("pspnet50", num_classes, in_channels)
    return PSPNet(num_classes, in_channels)


# ---------------------------------------------------------------- DeepLabv3 (torchvision)


class _OutOnly(nn.Module):
    """torchvision's segmentation models return {"out": logits}; the trainer wants the tensor."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)["out"]


@SEG_MODELS.register("deeplabv3-r50")
def deeplabv3_r50(*, num_classes: int, in_channels: int = 3) -> nn.Module:
    _check("deeplabv3-r50", num_classes, in_channels)
    if in_channels != 3:
        raise ConfigError(f"segmentation model 'deeplabv3-r50' takes RGB images (in_channels 3); got {in_channels}")
    from torchvision.models.segmentation import deeplabv3_resnet50

    return _OutOnly(deeplabv3_resnet50(weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=False))


def build_seg_model(arch: str, *, num_classes: int, in_channels: int, **options) -> nn.Module:
    return SEG_MODELS.build(arch, num_classes=num_classes, in_channels=in_channels, **options)


# ---------------------------------------------------------------- weights from a user's checkpoint


def map_keys(state: dict[str, torch.Tensor], arch: str) -> dict[str, torch.Tensor]:
    """A checkpoint's state dict → ``arch``'s names: DataParallel's ``module.`` stripped, training-only heads dropped.

    DDC-AT saves ``{"state_dict": {"module.layer0.0.weight", …, "module.aux.…"}}`` (hszhao's train.py);
    torchvision's DeepLabv3 has ``backbone.…``/``classifier.…`` under our wrapper's ``net.``.
    """
    mapped = {}
    for key, value in state.items():
        key = key.removeprefix("module.")
        if key.startswith("aux.") or key.startswith("aux_classifier."):  # auxiliary losses: training only
            continue
        if arch == "deeplabv3-r50" and not key.startswith("net."):
            key = f"net.{key}"
        mapped[key] = value
    return mapped


def load_weights(model: nn.Module, path: str | os.PathLike, arch: str) -> nn.Module:
    """Load a user's checkpoint (a state dict, or one under "state_dict"/"model") into ``model``, all keys matched."""
    if not os.path.exists(path):
        raise ConfigError(f"segmentation checkpoint {path} does not exist")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    for wrapper in ("state_dict", "model"):
        if isinstance(checkpoint, dict) and isinstance(checkpoint.get(wrapper), dict):
            checkpoint = checkpoint[wrapper]
    state = map_keys(checkpoint, arch)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    misshapen = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or misshapen:
        raise ConfigError(f"checkpoint {path} does not fit '{arch}': {len(missing)} missing (e.g. {missing[:3]}), "
                          f"{len(unexpected)} unexpected (e.g. {unexpected[:3]}), {len(misshapen)} of another shape "
                          f"(e.g. {misshapen[:3]})")
    model.load_state_dict(state)
    return model
