"""What the poisons optimised against a network share: the surrogate and how it is trained.

Error-minimizing (EM, REM) and error-maximizing (TAP) noise are both PGD
(``poisonlab.attacks.pgd``) on a surrogate classifier; only the loss, its
direction and the way the surrogate is trained differ. The surrogate trains
by the training code's step (``training.loop.train_step``) with an optimizer
and schedule from a ``Recipe``. Everything here draws its randomness from
the poison's ``torch.Generator``: the model's initial weights (seeded from it
inside ``fork_rng``, so the global RNG is neither used nor disturbed), batch
orders, augmentations and random starts. The forward passes run in bf16 on
CUDA and in fp32 on every CPU (``SURROGATE_PRECISION``): a poisoned container
is data every later run reads, so on the CPU it must not depend on whether the
CPU that made it had bf16 units (``precision: auto`` would pick bf16 there).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated

import torch
import torch.nn.functional as F
from torch import nn

from poisonlab.checks import Number, OneOf
from poisonlab.models import MODELS, build_model
from poisonlab.training.augment import build_augmentations
from poisonlab.training.loop import autocast, shuffled_batches, train_step
from poisonlab.training.recipe import Recipe


# The options every surrogate poison shares: a PGD step no larger than the radius it moves in (larger
# steps only hit the box), and the surrogate's arch, a registered one.
Step = Annotated[float, Number(gt=0, le="epsilon")]
Surrogate = Annotated[str, OneOf(MODELS)]


def draw_seed(generator: torch.Generator) -> int:
    return int(torch.randint(2**62, (), generator=generator, device=generator.device))


class _Standardize(nn.Module):
    """[0, 1] images → per-channel standardised, inside the model so PGD works in pixel space."""

    def __init__(self, images: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", images.mean((0, 2, 3), keepdim=True))
        self.register_buffer("std", images.std((0, 2, 3), keepdim=True).clamp_min(1e-3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def build_surrogate(arch: str, images: torch.Tensor, num_classes: int, generator: torch.Generator) -> nn.Module:
    """An untrained ``arch`` taking [0, 1] images, initialised from a seed drawn from ``generator``."""
    seed = draw_seed(generator)
    with torch.random.fork_rng(devices=[]):  # built on the CPU, so only the CPU RNG is touched
        torch.manual_seed(seed)
        model = build_model(arch, num_classes=num_classes, in_channels=images.shape[1], image_size=images.shape[-1])
    return nn.Sequential(_Standardize(images), model).to(images.device, memory_format=torch.channels_last)


def surrogate_recipe(*, lr: float, batch_size: int, epochs: int, nesterov: bool = False, schedule: str = "constant",
                     milestones: tuple[int, ...] = (), grad_clip: float | None = None) -> Recipe:
    """The papers' surrogate optimiser (SGD, momentum 0.9, weight decay 5e-4) with a poison's rate and schedule.

    ``schedule`` and ``milestones`` are those of the training recipes (``training.recipe.SCHEDULES``); a
    poison whose schedule counts steps, not epochs, gives ``epochs`` in steps and trains with
    ``steps_per_epoch`` = 1.
    """
    return Recipe(epochs=epochs, batch_size=batch_size, optimizer="sgd", lr=lr, momentum=0.9, nesterov=nesterov,
                  weight_decay=5e-4, schedule=schedule, milestones=milestones, grad_clip=grad_clip)


class SurrogateTrainer:
    """A surrogate with the optimizer and schedule of ``recipe``, trained a batch at a time by the training loop's step."""

    def __init__(self, model: nn.Module, recipe: Recipe, steps_per_epoch: int) -> None:
        self.model, self.recipe = model, recipe
        self.optimizer = recipe.make_optimizer(model.parameters())
        self.scheduler = recipe.make_scheduler(self.optimizer, steps_per_epoch)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.model.train()
        loss = F.cross_entropy(logits(self.model, x), y)
        train_step(loss, self.optimizer, self.scheduler, self.recipe.grad_clip)


# Precision of the surrogate's forward passes by device type (see the module docstring).
SURROGATE_PRECISION = {"cuda": "bf16", "cpu": "fp32"}


def logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with autocast(x.device, SURROGATE_PRECISION.get(x.device.type, "fp32")):
        return model(x).float()


def batch_stream(n: int, batch_size: int, generator: torch.Generator, device: torch.device) -> Iterator[torch.Tensor]:
    """Shuffled batches, epoch after epoch, for as long as they are asked for."""
    while True:
        yield from shuffled_batches(n, batch_size, generator, device)


def augmenter(image_size: int, generator: torch.Generator) -> Callable[[torch.Tensor], torch.Tensor]:
    """Random crop (reflect-padded by 1/8 of the side: 4 px on CIFAR) and flip, differentiable in the pixels.

    The crop is a gather and the flip a select, so gradients reach the un-augmented image. Reflect, not the
    training recipes' zero fill: the surrogate poisons' documented choice (``error_maximizing``), and what
    their outputs were measured with.
    """
    crop = {"padding": max(1, image_size // 8), "mode": "reflect"}
    augmentations = build_augmentations({"crop": crop, "flip": {}})

    def apply(x: torch.Tensor) -> torch.Tensor:
        targets = x.new_empty(len(x), 0)  # labels do not change under crop and flip
        for augment in augmentations:
            x, targets = augment(x, targets, generator)
        return x

    return apply


def cross_entropy_sum(model: nn.Module, y: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """Summed (not mean) CE of the model in eval mode: per-image gradients keep their size in bf16."""
    model.eval()
    return lambda x: F.cross_entropy(logits(model, x), y, reduction="sum")


@torch.no_grad()
def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1024) -> float:
    """Fraction of ``images`` the model (in eval mode) classifies as ``labels``."""
    model.eval()
    correct = sum((logits(model, x).argmax(1) == y).sum().item()
                  for x, y in zip(images.split(batch_size), labels.split(batch_size)))
    return correct / len(images)
