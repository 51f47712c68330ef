"""Self-supervised backbones (MoCo, SimCLR) with lightly's losses and heads, trained like every poisonlab run.

From vasusingla/simple-data-attribution ``self_supervised_models/`` (commit d2016b4; lightly's
benchmark script): MoCo is the default backbone — ``MoCoProjectionHead`` on the backbone's pooled
features, a momentum encoder updated with 0.99, ``NTXentLoss`` with temperature 0.1 and a memory
bank of 4096, the loss symmetrised over the two views; SGD lr 0.06 × batch/128, momentum 0.9, wd
5e-4, cosine; SimCLR augmentations with blur disabled; a kNN monitor (k 200, t 0.1). Chosen here:
the backbone is any registered arch's ``body`` (``smallcnn`` at the embedded scale, ``resnet18`` with
its CIFAR stem at the paper scale, where the repository used lightly's ``ResNetGenerator``); SimCLR
uses lightly's ``SimCLRProjectionHead`` and NT-Xent at temperature 0.5 (SimCLR's default; the
repository's SimCLR settings were not read); views are made on the device by one kornia affine warp
per batch (crop-and-resize with rotation), brightness/contrast (and saturation, grayscale on colour
images) and optional flips, every draw from the run's ``torch.Generator``, so a resumed run replays
them (lightly 1.6's transforms are per-image PIL, and kornia's augmentation modules draw from the
global RNG). The optimiser and schedule are a ``Recipe``'s, the step ``training.loop.train_step``.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from poisonlab.registry import ConfigError, Registry
from poisonlab.training.recipe import Recipe

SSL_METHODS: Registry[Callable[..., nn.Module]] = Registry("SSL method")


# ---------------------------------------------------------------- methods


class MoCo(nn.Module):
    def __init__(self, backbone: nn.Module, feature_dim: int, *, projection_dim: int = 128,
                 temperature: float = 0.1, memory_bank_size: int = 4096, momentum: float = 0.99) -> None:
        super().__init__()
        from lightly.loss import NTXentLoss
        from lightly.models.modules import MoCoProjectionHead
        from lightly.models.utils import deactivate_requires_grad

        self.backbone = backbone
        self.head = MoCoProjectionHead(feature_dim, feature_dim, projection_dim)
        self.backbone_momentum, self.head_momentum = copy.deepcopy(backbone), copy.deepcopy(self.head)
        deactivate_requires_grad(self.backbone_momentum)
        deactivate_requires_grad(self.head_momentum)
        self.criterion = NTXentLoss(temperature=temperature, memory_bank_size=(memory_bank_size, projection_dim))
        self.momentum = momentum

    def loss(self, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        from lightly.models.utils import update_momentum

        update_momentum(self.backbone, self.backbone_momentum, self.momentum)
        update_momentum(self.head, self.head_momentum, self.momentum)
        q0, q1 = self.head(self.backbone(x0)), self.head(self.backbone(x1))
        with torch.no_grad():
            k0, k1 = self.head_momentum(self.backbone_momentum(x0)), self.head_momentum(self.backbone_momentum(x1))
        return 0.5 * (self.criterion(q0, k1) + self.criterion(q1, k0))


class SimCLR(nn.Module):
    def __init__(self, backbone: nn.Module, feature_dim: int, *, projection_dim: int = 128,
                 temperature: float = 0.5) -> None:
        super().__init__()
        from lightly.loss import NTXentLoss
        from lightly.models.modules import SimCLRProjectionHead

        self.backbone = backbone
        self.head = SimCLRProjectionHead(feature_dim, feature_dim, projection_dim)
        self.criterion = NTXentLoss(temperature=temperature)

    def loss(self, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        return self.criterion(self.head(self.backbone(x0)), self.head(self.backbone(x1)))


@SSL_METHODS.register("moco")
def moco(backbone: nn.Module, feature_dim: int, *, projection_dim: int = 128, temperature: float = 0.1,
         memory_bank_size: int = 4096, momentum: float = 0.99) -> nn.Module:
    return MoCo(backbone, feature_dim, projection_dim=projection_dim, temperature=temperature,
                memory_bank_size=memory_bank_size, momentum=momentum)


@SSL_METHODS.register("simclr")
def simclr(backbone: nn.Module, feature_dim: int, *, projection_dim: int = 128, temperature: float = 0.5
           ) -> nn.Module:
    return SimCLR(backbone, feature_dim, projection_dim=projection_dim, temperature=temperature)


# ---------------------------------------------------------------- views


@dataclass(frozen=True)
class ViewOptions:
    """The two-view augmentation; defaults are the embedded scale's digits (no flips, small rotations)."""

    crop_scale: float = 0.5  # smallest area fraction of the random resized crop
    ratio: float = 4 / 3  # aspect ratios drawn log-uniformly in [1/ratio, ratio]
    rotation: float = 10.0  # degrees, either way
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4  # colour images only
    grayscale: float = 0.2  # probability, colour images only
    flip: bool = False

    def __post_init__(self) -> None:
        if not 0 < self.crop_scale <= 1 or self.ratio < 1:
            raise ConfigError(f"ssl.views: crop_scale must lie in (0, 1] and ratio >= 1; got {self}")
        if min(self.brightness, self.contrast, self.saturation, self.grayscale, self.rotation) < 0:
            raise ConfigError(f"ssl.views: jitter strengths must be >= 0; got {self}")


def make_view(x: torch.Tensor, options: ViewOptions, generator: torch.Generator) -> torch.Tensor:
    """One random view of a batch ``x`` (B, C, H, W) of floats in [0, 1], drawn from ``generator``."""
    from kornia.enhance import adjust_contrast, adjust_contrast_with_mean_subtraction, adjust_saturation
    from kornia.geometry.transform import get_affine_matrix2d, warp_affine

    b, c, h, w = x.shape

    def uniform(low: float, high: float) -> torch.Tensor:
        return (low + (high - low) * torch.rand(b, generator=generator, device=generator.device)).to(x.device)

    # Crop of relative area a and aspect r, anywhere inside the image, resized to the full image:
    # zoom by (1/cw, 1/ch) about the crop's centre, rotate, and move that centre to the image's.
    area, log_ratio = uniform(options.crop_scale, 1.0), uniform(-math.log(options.ratio), math.log(options.ratio))
    cw = (area * log_ratio.exp()).sqrt().clamp(max=1.0)
    ch = (area / log_ratio.exp()).sqrt().clamp(max=1.0)
    centre = torch.stack([uniform(0, 1) * (1 - cw) * (w - 1) + cw * (w - 1) / 2,
                          uniform(0, 1) * (1 - ch) * (h - 1) + ch * (h - 1) / 2], 1)
    image_centre = torch.tensor([(w - 1) / 2, (h - 1) / 2], device=x.device).expand(b, 2)
    matrix = get_affine_matrix2d(image_centre - centre, centre, torch.stack([1 / cw, 1 / ch], 1),
                                 uniform(-options.rotation, options.rotation))
    x = warp_affine(x, matrix[:, :2], (h, w), padding_mode="zeros")
    x = adjust_contrast(x, uniform(1 - options.brightness, 1 + options.brightness)).clamp(0, 1)  # x·factor
    x = adjust_contrast_with_mean_subtraction(x, uniform(1 - options.contrast, 1 + options.contrast)).clamp(0, 1)
    if c == 3:
        x = adjust_saturation(x, uniform(1 - options.saturation, 1 + options.saturation)).clamp(0, 1)
        gray = (0.299 * x[:, :1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:]).expand_as(x)
        x = torch.where((uniform(0, 1) < options.grayscale)[:, None, None, None], gray, x)
    if options.flip:
        x = torch.where((uniform(0, 1) < 0.5)[:, None, None, None], x.flip(-1), x)
    return x


# ---------------------------------------------------------------- configuration


@dataclass(frozen=True)
class SSLConfig:
    """An SSL pretraining run: method and its options, backbone arch, views, optimisation, monitor."""

    method: str = "moco"
    arch: str = "smallcnn"
    method_options: dict[str, Any] = field(default_factory=dict)
    views: ViewOptions = field(default_factory=ViewOptions)
    recipe: Recipe = field(default_factory=lambda: Recipe(epochs=20, batch_size=256, lr=0.06, weight_decay=5e-4))
    knn_k: int = 200
    knn_t: float = 0.1

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> SSLConfig:
        """From config (``ssl: {method, arch, method_options, views, recipe, knn_k, knn_t}``); lr is per 128 images."""
        allowed = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(values) - set(allowed))
        if unknown:
            raise ConfigError(f"ssl: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(allowed)}")
        values = dict(values)
        view_fields = [f.name for f in dataclasses.fields(ViewOptions)]
        bad_views = sorted(set(values.get("views") or {}) - set(view_fields))
        if bad_views:
            raise ConfigError(f"ssl.views: unknown key(s) {', '.join(bad_views)}; allowed: {', '.join(view_fields)}")
        values["views"] = ViewOptions(**(values.get("views") or {}))
        values["recipe"] = Recipe.from_dict(values.get("recipe") or {}, name="ssl.recipe")
        values["method_options"] = dict(values.get("method_options") or {})
        config = cls(**values)
        SSL_METHODS.check_options(config.method, config.method_options)
        if config.knn_k < 1 or config.knn_t <= 0:
            raise ConfigError(f"ssl.knn_k must be >= 1 and ssl.knn_t > 0; got {config.knn_k}, {config.knn_t}")
        return config

    def scaled_recipe(self) -> Recipe:
        """The recipe with the repository's linear lr scaling: lr × batch/128."""
        return dataclasses.replace(self.recipe, lr=self.recipe.lr * self.recipe.batch_size / 128)

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "arch": self.arch, "method_options": dict(self.method_options),
                "views": dataclasses.asdict(self.views), "recipe": self.recipe.to_dict(), "knn_k": self.knn_k,
                "knn_t": self.knn_t}


# ---------------------------------------------------------------- kNN monitor


def knn_accuracy(train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor,
                 test_labels: torch.Tensor, num_classes: int, *, k: int = 200, t: float = 0.1) -> float:
    """Weighted kNN accuracy (%) on cosine similarity, votes exp(sim/t) (InstDisc's monitor, lightly's benchmark)."""
    train = nn.functional.normalize(train_features.float(), dim=1)
    test = nn.functional.normalize(test_features.float(), dim=1)
    correct = 0
    for start in range(0, len(test), 512):
        similarity = test[start:start + 512] @ train.T
        top, index = similarity.topk(min(k, len(train)), dim=1)
        votes = torch.zeros(len(top), num_classes, device=top.device)
        votes.scatter_add_(1, train_labels[index], (top / t).exp())
        correct += (votes.argmax(1) == test_labels[start:start + 512]).sum().item()
    return 100.0 * correct / len(test)
