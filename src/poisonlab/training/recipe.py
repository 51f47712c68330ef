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
from typing import Annotated, Any

import torch

from poisonlab.checks import Count, NonNegative, Number, OneOf, Positive, check_values
from poisonlab.registry import ConfigError, Registry
from poisonlab.training import optim
from poisonlab.training.precision import PRECISIONS

OPTIMIZERS: Registry[Callable[..., torch.optim.Optimizer]] = Registry("optimizer")
SCHEDULES: Registry[Callable[..., Callable[[int], float]]] = Registry("schedule")


@dataclass(frozen=True)
class Recipe:
    # Each field's annotation says what values it takes (poisonlab.checks), checked by from_dict.
    epochs: Count = 10
    batch_size: Count = 128
    optimizer: Annotated[str, OneOf(OPTIMIZERS)] = "sgd"
    lr: Positive = 0.1
    momentum: NonNegative = 0.9
    nesterov: bool = False
    weight_decay: NonNegative = 5e-4
    schedule: Annotated[str, OneOf(SCHEDULES)] = "cosine"
    milestones: tuple[int, ...] = ()  # epochs at which `step` multiplies the rate by `gamma`
    gamma: Positive = 0.1
    warmup_epochs: NonNegative = 0.0
    grad_clip: Positive | None = None  # max global gradient norm
    label_smoothing: Annotated[float, Number(ge=0, lt=1)] = 0.0
    augment: dict[str, dict] = field(default_factory=dict)  # name → options, applied in order
    eval_batch_size: Count = 256  # larger batches were slower on a 2-core CPU (cache)
    precision: Annotated[str, OneOf(PRECISIONS)] = "auto"  # "auto" is resolved from the hardware

    @classmethod
    def from_dict(cls, values: dict[str, Any], *, name: str = "recipe") -> Recipe:
        return recipe_from_dict(cls, values, name)

    def validate(self, name: str = "recipe") -> None:
        check_values(name, type(self), {f.name: getattr(self, f.name) for f in dataclasses.fields(self)})
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


# ---------------------------------------------------------------- optimizers (torch's, without torch._dynamo: optim.py)


@OPTIMIZERS.register("sgd")
def sgd(parameters, recipe: Recipe) -> torch.optim.Optimizer:
    return optim.SGD(parameters, lr=recipe.lr, momentum=recipe.momentum,
                           nesterov=recipe.nesterov, weight_decay=recipe.weight_decay)


@OPTIMIZERS.register("adam")
def adam(parameters, recipe: Recipe) -> torch.optim.Optimizer:
    return optim.Adam(parameters, lr=recipe.lr, weight_decay=recipe.weight_decay)


@OPTIMIZERS.register("adamw")
def adamw(parameters, recipe: Recipe) -> torch.optim.Optimizer:
    return optim.AdamW(parameters, lr=recipe.lr, weight_decay=recipe.weight_decay)


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


def recipe_from_dict(cls: type, values: dict[str, Any], name: str) -> Any:
    """A recipe dataclass (``Recipe``, the episodic trainer's) from a config mapping, checked.

    Unknown keys are refused with the allowed ones; ``milestones`` becomes a tuple and each of
    ``augment``'s options a dict, as the dataclass holds them; then the recipe validates itself.
    """
    allowed = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(allowed))
    if unknown:
        raise ConfigError(f"{name}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(allowed)}")
    values = {**values, "milestones": tuple(values.get("milestones", cls.milestones))}
    values["augment"] = {k: dict(v or {}) for k, v in (values.get("augment") or {}).items()}
    recipe = cls(**values)
    recipe.validate(name)
    return recipe
