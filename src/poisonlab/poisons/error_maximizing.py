"""Error-maximizing (adversarial) poisons: ``tap`` (class-targeted) and ``tap-untargeted``.

Fowl et al., "Adversarial Examples Make Strong Poisons", NeurIPS 2021. A
surrogate is first trained on the clean data; each training image is then
replaced by an adversarial example of that fixed network, found by L∞ PGD with
ε = 8/255 and 250 steps. The targeted attack (their strongest) pushes every
image of class y towards class (y + 1) mod K — the label permutation of the
authors' code — by descending the cross-entropy of the target; the untargeted
one ascends the cross-entropy of the true label.

From the authors' code (its defaults for CIFAR-10): step size ε/20 = 0.4/255
(``tau`` 0.05 × ε), start from Gaussian noise of standard deviation ε clipped to
the ball, ``restarts`` = 8 whole-set runs of which the one with the lowest final
attack loss is kept, and differentiable augmentation of the batch during the
attack, so the perturbation survives the victim's crops and flips. The clean
surrogate follows their default recipe: 40 epochs, batch 128, SGD lr 0.1
(Nesterov, momentum 0.9, weight decay 5e-4), ×0.1 at 3/8, 5/8 and 7/8 of
training, random crop + flip.

Our choices: the attack-time augmentation is the same random crop (integer
shifts up to 1/8 of the side, reflect padding) and flip the surrogate trains
with, where the authors shift by a bilinear resampling grid; the attack runs on
chunks of 512 images, the size of the authors' poison batches. ``tap`` and
``tap-untargeted`` are one function, ``error_maximizing``, with ``targeted``
fixed by their registrations.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from poisonlab.attacks import pgd
from poisonlab.checks import Count, Fraction, Positive
from poisonlab.poisons.base import POISONS
from poisonlab.poisons.surrogate import (Step, Surrogate, SurrogateTrainer, augmenter, build_surrogate, logits,
                                         surrogate_recipe)
from poisonlab.training.loop import shuffled_batches

ATTACK_CHUNK = 512  # images attacked at once; the model is fixed, so this only bounds memory


def error_maximizing(images: torch.Tensor, labels: torch.Tensor, *, num_classes: int, generator: torch.Generator,
                     name: str, targeted: bool, epsilon: Fraction = 8 / 255, step_size: Step = 0.4 / 255,
                     steps: Count = 250, restarts: Count = 8, augment: bool = True, surrogate: Surrogate = "resnet18",
                     surrogate_epochs: Count = 40, batch_size: Count = 128, lr: Positive = 0.1) -> torch.Tensor:
    """Adversarial poison (Fowl et al. 2021): each image pushed towards class (y + 1) mod K when ``targeted``,
    else away from its own."""

    transform = augmenter(images.shape[-1], generator)
    model = clean_surrogate(images, labels, num_classes, generator, surrogate=surrogate, epochs=surrogate_epochs,
                            batch_size=batch_size, lr=lr, transform=transform)
    model.eval()
    # Targeted: descend the target's CE; untargeted: ascend the true label's.
    goal = (labels + 1) % num_classes if targeted else labels
    view = transform if augment else (lambda x: x)

    def attack_loss(y: torch.Tensor):
        return lambda x: F.cross_entropy(logits(model, view(x)), y, reduction="sum")

    best, best_loss = None, float("inf")
    for _ in range(restarts):
        # The authors' start: Gaussian noise of standard deviation ε, which pgd projects into the ball.
        start = torch.randn(images.shape, generator=generator, device=generator.device).to(images.device) * epsilon
        delta = torch.empty_like(images)
        for index in torch.arange(len(images), device=images.device).split(ATTACK_CHUNK):
            delta[index] = pgd(attack_loss(goal[index]), images[index], epsilon=epsilon, step_size=step_size,
                               steps=steps, minimize=targeted, start=start[index])
        loss = _final_loss(model, images + delta, goal, targeted)
        if loss < best_loss:
            best, best_loss = delta, loss
    return (images + best).clamp(0, 1)


# gpu: a surrogate is trained, so a paper-scale job asks for the scale's GPU (resources.poison_surrogate).
POISONS.register("tap", gpu=True)(partial(error_maximizing, name="tap", targeted=True))
POISONS.register("tap-untargeted", gpu=True)(partial(error_maximizing, name="tap-untargeted", targeted=False))


def clean_surrogate(images: torch.Tensor, labels: torch.Tensor, num_classes: int, generator: torch.Generator, *,
                    surrogate: str, epochs: int, batch_size: int, lr: float,
                    transform: Callable[[torch.Tensor], torch.Tensor]) -> nn.Module:
    """The surrogate trained on clean data with the authors' default recipe."""
    model = build_surrogate(surrogate, images, num_classes, generator)
    milestones = tuple(max(1, epochs * k // 8) for k in (3, 5, 7))  # never before the first epoch
    recipe = surrogate_recipe(lr=lr, batch_size=batch_size, epochs=epochs, nesterov=True, schedule="step",
                              milestones=milestones)
    trainer = SurrogateTrainer(model, recipe, steps_per_epoch=-(-len(images) // batch_size))
    for _ in range(epochs):
        for index in shuffled_batches(len(images), batch_size, generator, images.device):
            trainer.step(transform(images[index]), labels[index])
    return model


@torch.no_grad()
def _final_loss(model: nn.Module, poisoned: torch.Tensor, goal: torch.Tensor, targeted: bool) -> float:
    """The attack objective over the whole set (lower is better), to choose among restarts."""
    total = sum(F.cross_entropy(logits(model, x), y, reduction="sum").item()
                for x, y in zip(poisoned.split(ATTACK_CHUNK), goal.split(ATTACK_CHUNK)))
    return total if targeted else -total
