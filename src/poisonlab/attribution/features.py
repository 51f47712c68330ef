"""Features of the training and test images from any backbone: an SSL backbone, a trained classifier, raw pixels.

The feature-space attributors (``ssl-esvm``, ``ssl-knn``) read (N, D) train and (M, D) test features;
where they come from is a name in ``FEATURES``:

- ``ssl``: ``backbone.pt`` of an SSL run (``pretrain.pretrain_ssl``) or a user's checkpoint standing in
  for it — either this module's format (``save_backbone``) or the state dict of a poisonlab model or
  body of ``arch`` (keys with or without ``body.``), normalised by the training set's statistics;
- ``classifier``: the ``body`` of a trained run's ``model.pt`` (its pooled penultimate features);
- ``pixels``: the flattened images scaled to [0, 1].

The repository feeds the SVM unnormalised pooled features (512-d for its ResNet-18); so does this.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from poisonlab.atomic import torch_save
from poisonlab.data.container import ImageDataset
from poisonlab.models import build_model
from poisonlab.registry import ConfigError, Registry
from poisonlab.training.loop import DeviceData, autocast, pick_device

FEATURES: Registry[Callable[..., tuple[np.ndarray, np.ndarray]]] = Registry("feature source")


def save_backbone(path: str | os.PathLike, body: nn.Module, *, arch: str, in_channels: int, image_size: int,
                  mean: torch.Tensor, std: torch.Tensor) -> None:
    """A backbone with what it takes to rebuild and feed it (tensors and plain values: weights_only loads it)."""
    torch_save({"arch": arch, "in_channels": in_channels, "image_size": image_size,
                "body": {k: v.detach().cpu() for k, v in body.state_dict().items()},
                "mean": mean.detach().cpu().flatten(), "std": std.detach().cpu().flatten()}, path)


def load_backbone(path: str | os.PathLike, *, arch: str | None = None, in_channels: int | None = None,
                  image_size: int | None = None) -> tuple[nn.Module, dict]:
    """(body, info) from ``save_backbone``'s file, or from a plain state dict of an ``arch`` model or body."""
    if not os.path.exists(path):
        raise ConfigError(f"backbone checkpoint {path} does not exist")
    stored = torch.load(path, map_location="cpu", weights_only=True)
    if "body" in stored and "arch" in stored:
        arch, in_channels, image_size, state = stored["arch"], stored["in_channels"], stored["image_size"], stored["body"]
    else:
        if arch is None or in_channels is None or image_size is None:
            raise ConfigError(f"{path} is a plain state dict: give the backbone's arch, in_channels and image_size")
        state = {k.removeprefix("body."): v for k, v in stored.items() if not k.startswith("head.")}
    body = build_model(arch, num_classes=1, in_channels=in_channels, image_size=image_size).body
    try:
        body.load_state_dict(state)
    except RuntimeError as error:  # missing, unexpected or mis-shaped weights
        raise ConfigError(f"{path} does not fit arch '{arch}': {str(error)[:300]}") from None
    return body, {"arch": arch, "mean": stored.get("mean"), "std": stored.get("std")}


def backbone_features(body: nn.Module, images: torch.Tensor, normalize: Callable[[torch.Tensor], torch.Tensor], *,
                      precision: str = "fp32", batch_size: int = 512) -> torch.Tensor:
    """float32 (N, D) features of raw images (B, C, H, W in [0, 255]) on their device, in eval mode."""
    was_training = body.training
    body.eval()
    out = []
    with torch.no_grad(), autocast(images.device, precision):
        for start in range(0, len(images), batch_size):
            out.append(body(normalize(images[start:start + batch_size])).float())
    body.train(was_training)
    return torch.cat(out)


def _body_features(body: nn.Module, dataset: ImageDataset, device: str, mean=None, std=None, precision="fp32"):
    torch_device = pick_device(device)
    data = DeviceData.from_container(dataset, torch_device)
    if mean is not None:  # the statistics the backbone was trained with, when it says
        data.mean, data.std = mean.view(1, -1, 1, 1).to(torch_device), std.view(1, -1, 1, 1).to(torch_device)
    body = body.to(torch_device)
    feats = [backbone_features(body, x, data.normalize, precision=precision) for x in (data.x_train, data.x_test)]
    return tuple(f.cpu().numpy() for f in feats)


@FEATURES.register("ssl")
def ssl_features(dataset: ImageDataset, *, checkpoint: str, arch: str | None = None, device: str = "auto",
                 precision: str = "fp32") -> tuple[np.ndarray, np.ndarray]:
    height, _, channels = dataset.image_shape
    body, info = load_backbone(checkpoint, arch=arch, in_channels=channels, image_size=height)
    return _body_features(body, dataset, device, info["mean"], info["std"], precision)


@FEATURES.register("classifier")
def classifier_features(dataset: ImageDataset, *, checkpoint: str, arch: str, device: str = "auto",
                        precision: str = "fp32") -> tuple[np.ndarray, np.ndarray]:
    height, _, channels = dataset.image_shape
    body, _ = load_backbone(checkpoint, arch=arch, in_channels=channels, image_size=height)
    return _body_features(body, dataset, device, precision=precision)


@FEATURES.register("pixels")
def pixel_features(dataset: ImageDataset) -> tuple[np.ndarray, np.ndarray]:
    def flat(x: np.ndarray) -> np.ndarray:
        return np.asarray(x, np.float32).reshape(len(x), -1) / 255.0

    return flat(dataset.x_train), flat(dataset.x_test)


def extract_features(source: str, dataset: ImageDataset, **options) -> dict[str, np.ndarray]:
    """``{"train": (N, D), "test": (M, D)}`` float32 from the feature source named ``source``."""
    train, test = FEATURES.build(source, dataset, **options)
    return {"train": np.asarray(train, np.float32), "test": np.asarray(test, np.float32)}
