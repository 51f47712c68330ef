"""Training recipes: everything about how a model is trained, read from config.

A recipe is a flat mapping (``config.yaml: recipes: <name>: {...}``); the
optimizer and the learning-rate schedule are names in small registries, so a
paper's recipe is a config entry, not code.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch

from poisonlab.registry import ConfigError, Registry
from poisonlab.training.precision import PRECISIONS

OPTIMIZERS: Registry[Callable[..., torch.optim.Optimizer]] = Registry("optimizer")
SCHEDULES: Registry[Callable[..., Callable[[int], float]]] = Registry("schedule")


@dataclass(frozen=True)
class Recipe:
    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    milestones: tuple[int, ...] = ()  # epochs at which `step` multiplies the rate by `gamma`
    gamma: float = 0.1
    warmup_epochs: float = 0.0
    grad_clip: float | None = None  # max global gradient norm
    label_smoothing: float = 0.0
    augment: dict[str, dict] = field(default_factory=dict)  # name → options, applied in order
    eval_batch_size: int = 256  # larger batches were slower on a 2-core CPU (cache)
    precision: str = "auto"  # one of PRECISIONS; "auto" is resolved from the hardware (training.precision)

    @classmethod
    def from_dict(cls, values: dict[str, Any], *, name: str = "recipe") -> Recipe:
        allowed = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(values) - set(allowed))
        if unknown:
            raise ConfigError(f"{name}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(allowed)}")
        values = dict(values)
        values["milestones"] = tuple(values.get("milestones", ()))
        values["augment"] = {k: dict(v or {}) for k, v in (values.get("augment") or {}).items()}
        recipe = cls(**values)
        recipe.validate(name)
        return recipe

    def validate(self, name: str = "recipe") -> None:
        positive = {"epochs": self.epochs, "batch_size": self.batch_size, "lr": self.lr,
                    "eval_batch_size": self.eval_batch_size}
        for key, value in positive.items():
            if not value > 0:
                raise ConfigError(f"{name}.{key} must be > 0; got {value}")
        if self.weight_decay < 0 or self.warmup_epochs < 0:
            raise ConfigError(f"{name}.weight_decay and {name}.warmup_epochs must be >= 0")
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"{name}.label_smoothing must lie in [0, 1); got {self.label_smoothing}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ConfigError(f"{name}.grad_clip must be > 0 or null; got {self.grad_clip}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"{name}.precision: unknown '{self.precision}'; allowed: {', '.join(PRECISIONS)}")
        for key, registry in (("optimizer", OPTIMIZERS), ("schedule", SCHEDULES)):
            if getattr(self, key) not in registry:
                raise ConfigError(f"{name}.{key}: unknown '{getattr(self, key)}'; known: {', '.join(registry)}")
        from poisonlab.training.augment import build_augmentations

        build_augmentations(self.augment)  # rejects unknown augmentations and bad options now, not mid-run

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values["milestones"] = list(self.milestones)
        return values

    def make_optimizer(self, parameters: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
        return OPTIMIZERS.get(self.optimizer)(parameters, self)

    def make_scheduler(self, optimizer: torch.optim.Optimizer, steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
        """A per-step multiplier of the base rate, linear warm-up first when asked."""
        decay = SCHEDULES.get(self.schedule)(self, steps_per_epoch)
        warmup_steps = self.warmup_epochs * steps_per_epoch

        def factor(step: int) -> float:
            warm = min(1.0, (step + 1) / warmup_steps) if warmup_steps else 1.0
            return warm * decay(step)

        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# ---------------------------------------------------------------- optimizers


@OPTIMIZERS.register("sgd")
def sgd(parameters, recipe: Recipe) -> torch.optim.Optimizer:
    return torch.optim.SGD(parameters, lr=recipe.lr, momentum=recipe.momentum,
                           nesterov=recipe.nesterov, weight_decay=recipe.weight_decay)


@OPTIMIZERS.register("adam")
def adam(parameters, recipe: Recipe) -> torch.optim.Optimizer:
    return torch.optim.Adam(parameters, lr=recipe.lr, weight_decay=recipe.weight_decay)


@OPTIMIZERS.register("adamw")
def adamw(parameters, recipe: Recipe) -> torch.optim.Optimizer:
    return torch.optim.AdamW(parameters, lr=recipe.lr, weight_decay=recipe.weight_decay)


# ---------------------------------------------------------------- schedules: step index → rate multiplier


@SCHEDULES.register("constant")
def constant(recipe: Recipe, steps_per_epoch: int) -> Callable[[int], float]:
    return lambda step: 1.0


@SCHEDULES.register("step")
def multistep(recipe: Recipe, steps_per_epoch: int) -> Callable[[int], float]:
    """The papers' schedule: multiply by γ at each milestone epoch (ResNet-18, 100 epochs, steps at 50)."""
    return lambda step: recipe.gamma ** sum(step // steps_per_epoch >= m for m in recipe.milestones)


@SCHEDULES.register("cosine")
def cosine(recipe: Recipe, steps_per_epoch: int) -> Callable[[int], float]:
    total = recipe.epochs * steps_per_epoch
    return lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total) / total))


@SCHEDULES.register("linear")
def linear(recipe: Recipe, steps_per_epoch: int) -> Callable[[int], float]:
    """Linear decay to zero: with warm-up, the triangular schedule of fast CIFAR trainers."""
    total = recipe.epochs * steps_per_epoch
    return lambda step: max(0.0, 1 - step / total)
