"""Adversarial training (Madry et al., "Towards Deep Learning Models Resistant to Adversarial Attacks", 2018).

Every training batch is replaced by its PGD adversarial version, and the model
is trained on that: min over weights of the max over the ball of the loss.

Settings (DESIGN.md, "Reference settings of the originals", the budgets the
poison papers evaluate against): ``at-linf-4``, ``at-linf-8``, ``at-linf-16``
are L∞ balls of 4/255, 8/255, 16/255 and ``at-l2`` an L2 ball of 0.75, all in
[0, 1] pixel units (the raw batch is [0, 255]; the attack runs on x/255); 10
steps of 1.5·ε/10 each, from a random start inside the ball.

The attack is ``poisonlab.attacks.pgd`` (its docstring gives the random
start, the L2 step and the projection). Chosen here:

- Model mode while crafting: train mode, as Madry et al.'s CIFAR-10 code
  crafts with the training graph (batch-norm on batch statistics, moving
  averages updated by the attack's passes too). The network is never
  switched between modes inside a batch, so batch-norm sees adversarial
  batches only, which are also what it is trained on.
- The attack's loss is the soft cross-entropy against the batch's (possibly
  mixed) targets, summed over the batch; the training loss is the usual mean.
"""

from __future__ import annotations

import torch
from torch import nn

from poisonlab.attacks import pgd
from poisonlab.checks import Count, Fraction, Positive, check_value
from poisonlab.defenses.base import DEFENSES
from poisonlab.training.procedure import Normalize, TrainingDefense, soft_cross_entropy

# name → (norm, default ε in [0, 1] pixel units)
BUDGETS = {
    "at-linf-4": ("linf", 4 / 255),
    "at-linf-8": ("linf", 8 / 255),
    "at-linf-16": ("linf", 16 / 255),
    "at-l2": ("l2", 0.75),
}
DEFAULT_STEPS = 10


# ---------------------------------------------------------------- the attack


def pgd_attack(model: nn.Module, x01: torch.Tensor, targets: torch.Tensor, normalize: Normalize, *, norm: str,
               epsilon: float, steps: int, step_size: float, generator: torch.Generator) -> torch.Tensor:
    """Images in [0, 1] raising the model's loss on ``targets`` (soft, (B, K)) within the ``norm`` ball of ``epsilon``.

    ``normalize`` maps [0, 255] pixels to the model's input, as the training loop's does. The model is used in
    whatever mode it is in; the result is detached.
    """
    x01 = x01.detach().float()

    def loss(x: torch.Tensor) -> torch.Tensor:
        return soft_cross_entropy(model(normalize(x * 255)), targets, reduction="none")

    delta = pgd(loss, x01, norm=norm, epsilon=epsilon, step_size=step_size, steps=steps, start="random",
                generator=generator)
    return (x01 + delta).clamp(0, 1)


# ---------------------------------------------------------------- the defenses


def adversarial_objective(*, norm: str, epsilon: float, steps: int, step_size: float):
    """Train on the PGD version of each batch: (loss, logits) of the adversarial images."""

    def objective(model, x_raw, targets, normalize, generator):
        x_adv = pgd_attack(model, x_raw.float() / 255, targets, normalize, norm=norm, epsilon=epsilon,
                           steps=steps, step_size=step_size, generator=generator)
        logits = model(normalize(x_adv * 255))
        return soft_cross_entropy(logits, targets), logits

    return objective


def _check_options(name: str, norm: str, epsilon: float, steps: int, step_size: float | None) -> float:
    """Validate the options of ``name``; the step size, defaulted to 1.5·ε/steps."""
    where = f"defense '{name}'"
    check_value(where, "epsilon", epsilon, Fraction if norm == "linf" else Positive)
    check_value(where, "steps", steps, Count)
    if step_size is None:
        return 1.5 * epsilon / steps
    check_value(where, "step_size", step_size, Positive)
    return step_size


def _register(name: str, norm: str, default_epsilon: float) -> None:
    def factory(*, epsilon: float = default_epsilon, steps: int = DEFAULT_STEPS,
                step_size: float | None = None) -> TrainingDefense:
        step = _check_options(name, norm, epsilon, steps, step_size)
        return TrainingDefense(objective=adversarial_objective(norm=norm, epsilon=epsilon, steps=steps,
                                                               step_size=step))

    factory.__name__ = name.replace("-", "_")
    factory.__doc__ = (f"PGD adversarial training, {norm} ball of epsilon (default {default_epsilon:.4g}, "
                       f"[0, 1] pixel units), {DEFAULT_STEPS} steps of step_size (default 1.5·epsilon/steps).")
    DEFENSES.register(name)(factory)


for _name, (_norm, _epsilon) in BUDGETS.items():
    _register(_name, _norm, _epsilon)
