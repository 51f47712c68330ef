"""How a training-time defense plugs into the training loop (``fit``).

A ``TrainingDefense`` changes training batch by batch, on the device:
``transforms`` run on each raw batch (pixel values in [0, 255]) before the
recipe's own augmentations — the order of the cuda-sharpening paper, RSK → FF
→ crop/flip; ``recipe_augment`` may change the options of those augmentations
(sharpening's smaller image needs a smaller crop padding); ``objective`` replaces the plain cross-entropy (adversarial
training, UEraser's max over copies); ``on_epoch_start`` sees the model and
optimizer before each epoch (PST's stages); ``state`` is saved in every
checkpoint and restored on resume, so a killed run continues with the defense
where it was. The defenses themselves live in ``poisonlab.defenses``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from poisonlab.training.augment import Augmentation, build_augmentations

Normalize = Callable[[torch.Tensor], torch.Tensor]
# (model, raw batch in [0, 255], soft targets (B, K), normalize, generator) → (mean loss, logits of the batch)
Objective = Callable[[nn.Module, torch.Tensor, torch.Tensor, Normalize, torch.Generator],
                     tuple[torch.Tensor, torch.Tensor]]


@dataclass
class EpochContext:
    """What ``TrainingDefense.on_epoch_start`` may look at and change."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    data: Any  # the run's DeviceData
    epoch: int  # 1-based: the epoch about to start
    generator: torch.Generator
    state: dict[str, Any]


@dataclass
class TrainingDefense:
    transforms: list[Augmentation] = field(default_factory=list)
    objective: Objective | None = None
    on_epoch_start: Callable[[EpochContext], None] | None = None
    state: dict[str, Any] = field(default_factory=dict)  # tensors, numbers, lists: checkpointed with the run
    # The recipe's augmentation spec ({name: options}) → the one to run after ``transforms``.
    recipe_augment: Callable[[dict[str, dict]], dict[str, dict]] | None = None

    def augmentations(self, recipe_augment: dict[str, dict]) -> list[Augmentation]:
        """Every augmentation of a training batch, in order: the defense's transforms, then the recipe's."""
        spec = self.recipe_augment(recipe_augment) if self.recipe_augment else recipe_augment
        return [*self.transforms, *build_augmentations(spec)]


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, smoothing: float = 0.0,
                       reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy against soft targets (mixup/cutmix), with label smoothing; per image if reduction='none'."""
    if smoothing:
        targets = targets * (1 - smoothing) + smoothing / targets.shape[1]
    losses = -(targets * logits.float().log_softmax(1)).sum(1)
    return losses if reduction == "none" else losses.mean()
