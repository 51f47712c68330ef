"""The defense interface: a data-level ``Sanitizer`` or a ``TrainingDefense``, registered by name.

A defense is a factory registered under its DESIGN.md name; called with its
options (from config ``defense_options``) it checks them and returns one of:

- ``Sanitizer`` — run once on the (poisoned) training set and cached as
  ``data/sanitized/{dataset}/{poison}/{defense}.npz``: JPEG, grayscale, BDR,
  blur, the orthogonal projection. Its ``apply`` takes float32 images
  (N, C, H, W) in [0, 1], their labels and, keyword-only, ``num_classes`` and
  the seeded ``generator`` (its only randomness), and returns images of the
  same shape, in [0, 1] unless ``off_grid``. ``apply_sanitizer`` stores them as
  uint8, or as float16 pixel values when ``off_grid`` (the projection leaves
  the uint8 grid and the [0, 255] range; clamping would undo part of it).
- ``TrainingDefense`` (``poisonlab.training.procedure``) — changes how a model
  is trained, batch by batch, on the device: transforms before the recipe's
  augmentations, a replacement objective, a hook before each epoch, and state
  checkpointed with the run.

Its registration says which (``level="data"`` for a sanitizer, else
``"training"``), so the DAG knows whether a run needs a sanitized set without
building the defense. Numbered names: ``jpeg-<q>`` is the ``jpeg`` factory at
``quality=q`` (ISS uses ``jpeg-10``), registered with ``numbered="quality"``;
the registry resolves such names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from poisonlab.data.container import ImageDataset
from poisonlab.poisons.base import to_float, to_uint8
from poisonlab.registry import ConfigError, Registry
from poisonlab.training.procedure import EpochContext, TrainingDefense


@dataclass(frozen=True)
class Sanitizer:
    apply: Callable[..., torch.Tensor]  # (images, labels, *, num_classes, generator) → images
    off_grid: bool = False  # store float16 pixel values as computed, unclamped, instead of uint8


Defense = Sanitizer | TrainingDefense

# level: "data" (a Sanitizer, cached as a sanitized container) or "training" (a TrainingDefense).
DEFENSES: Registry[Callable[..., Defense]] = Registry("defense", facts={"level": "training"})


@DEFENSES.register("none")
def no_defense() -> TrainingDefense:
    """No defense: the undefended row of every table is one more defense name."""
    return TrainingDefense()


def build_defense(name: str, options: dict[str, Any] | None = None) -> Defense:
    """The defense ``name`` with ``options``; ConfigError naming the defense and field on bad input."""
    return DEFENSES.build(name, **(options or {}))


def is_sanitizer(name: str) -> bool:
    """Whether defense ``name`` acts on the data (a sanitized container) rather than during training."""
    return DEFENSES.facts(name)["level"] == "data"


def apply_sanitizer(name: str, dataset: ImageDataset, *, seed: int, options: dict[str, Any] | None = None,
                    device: torch.device | str = "cpu") -> ImageDataset:
    """Sanitize ``dataset``'s training set with data-level defense ``name``; the test set stays as it is."""
    sanitizer = build_defense(name, options)
    if not isinstance(sanitizer, Sanitizer):
        raise ConfigError(f"defense '{name}' acts during training, not on the data; it has no sanitized set")
    generator = torch.Generator(device=device).manual_seed(seed)
    images = to_float(dataset.x_train, device)  # uint8, or float16 pixel values: both /255
    labels = torch.from_numpy(dataset.y_train).to(device)
    cleaned = sanitizer.apply(images, labels, num_classes=dataset.num_classes, generator=generator)
    if cleaned.shape != images.shape:
        raise RuntimeError(f"defense '{name}' returned shape {tuple(cleaned.shape)} for {tuple(images.shape)}")
    if sanitizer.off_grid:
        # Unclamped: the projection's images leave [0, 1] and clamping them would undo part of it
        # (DESIGN.md: x_train may be float16 where a defense leaves [0, 255]).
        x_train = cleaned.mul(255).permute(0, 2, 3, 1).to(torch.float16).cpu().numpy()
    else:
        x_train = to_uint8(cleaned)
    meta = {**dataset.meta, "defense": {"name": name, "options": dict(options or {}), "seed": seed}}
    return ImageDataset(x_train=x_train, y_train=dataset.y_train, x_test=dataset.x_test, y_test=dataset.y_test,
                        classes=dataset.classes, meta=meta, extras=dataset.extras)

