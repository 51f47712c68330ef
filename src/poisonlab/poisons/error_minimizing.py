"""Error-minimizing noise: ``em`` (sample-wise), ``em-class`` (class-wise) and ``rem`` (robust).

**EM** — Huang et al., "Unlearnable Examples: Making Personal Data Unexploitable",
ICLR 2021. A bi-level min-min: noise δ that makes the surrogate's loss on the
true label as small as possible, found while the surrogate is trained on the
noisy data. Each round trains the surrogate for ``model_steps`` = 10 batches on
x + δ, then updates δ on the whole training set by PGD *down* the
cross-entropy, δ ← Π_ε(δ − α·sign ∇_δ L), with L∞ ε = 8/255 and α = 0.8/255;
after the round the surrogate's accuracy on the perturbed training set is
measured, and generation stops once it reaches ``stop_accuracy`` = 0.99 (the
paper's "train error < 0.01", checked after every round as the authors' code
does). Sample-wise noise takes ``steps`` = 20 PGD steps a batch a round;
class-wise noise (one δ per class) takes 1 step, each image of a batch stepping
from its class's δ and the class's δ becoming the mean of its images' results
(the authors' update). Both start from δ = 0, train without augmentation, with
SGD lr 0.1, momentum 0.9, weight decay 5e-4 and gradient clipping at norm 5,
on batches of 512 (the defaults of the authors' generation script). Our
choices: ``max_rounds`` = 100 so generation always ends, and batches shuffled by
the generator. ``em`` and ``em-class`` are one function, ``error_minimizing``,
with ``classwise`` fixed by their registrations.

**REM** — Fu et al., "Robust Unlearnable Examples: Protecting Data Against
Adversarial Learning", ICLR 2022. A min-min-max: the surrogate is trained
*adversarially* (PGD, radius ρ_a = 4/255, 10 steps of 0.8/255, random start)
on augmented noisy images, and the noise minimises the loss of those
adversarially perturbed images, averaged over ``eot_samples`` = 5 random
crop+flips (expectation over transformation), with ε = 8/255, 10 steps of
1.6/255 from a random start. The paper's schedule: 5,000 training steps of
batch 128, noise for each batch regenerated before the surrogate trains on it,
lr 0.1 decayed ×0.1 at steps 2,000 and 4,000 (we decay at 40% and 80% of
``train_steps``, the same points), then noise for the whole set from the final
surrogate. The gradient through the inner max treats the adversarial offset as
constant (Danskin), as the authors do. At paper scale REM is GPU-only: its
noise costs steps × eot_samples × (adv_steps + 1) forward-backward passes an
image (550 with the defaults), at each of the 5,000 steps and once more at the end.
"""

from __future__ import annotations

import logging
import math
from functools import partial
from typing import Annotated

import torch
import torch.nn.functional as F

from poisonlab.attacks import pgd
from poisonlab.checks import Count, Fraction, Number, Positive
from poisonlab.poisons.base import POISONS
from poisonlab.poisons.surrogate import (Step, Surrogate, SurrogateTrainer, accuracy, augmenter, batch_stream,
                                         build_surrogate, cross_entropy_sum, logits, surrogate_recipe)
from poisonlab.training.loop import shuffled_batches

logger = logging.getLogger(__name__)

GRAD_CLIP = 5.0  # Huang et al.'s training config clips the surrogate's gradient norm at 5
# A step no larger than the radius it moves in, where there is one.
AdvStep = Annotated[float, Number(gt=0), Number(gt=0, le="adv_radius", when=lambda options: options["adv_radius"] > 0)]
STEPS = {False: 20, True: 1}  # PGD steps a batch a round: sample-wise, class-wise (the authors' defaults)


def error_minimizing(images: torch.Tensor, labels: torch.Tensor, *, num_classes: int, generator: torch.Generator,
                     name: str, classwise: bool, epsilon: Fraction = 8 / 255, step_size: Step = 0.8 / 255,
                     steps: Count | None = None, model_steps: Count = 10, stop_accuracy: Fraction = 0.99,
                     max_rounds: Count = 100, surrogate: Surrogate = "resnet18", batch_size: Count = 512,
                     lr: Positive = 0.1) -> torch.Tensor:
    """Error-minimizing noise (Huang et al. 2021): one δ an image, or one a class when ``classwise``.

    ``steps`` defaults to 20 sample-wise and 1 class-wise.
    """
    steps = STEPS[classwise] if steps is None else steps

    model = build_surrogate(surrogate, images, num_classes, generator)
    # A constant rate, so the recipe's epochs only bound the steps: one step an epoch.
    recipe = surrogate_recipe(lr=lr, batch_size=batch_size, epochs=model_steps * max_rounds, grad_clip=GRAD_CLIP)
    trainer = SurrogateTrainer(model, recipe, steps_per_epoch=1)
    delta = images.new_zeros((num_classes, *images.shape[1:]) if classwise else images.shape)

    def noisy(index: torch.Tensor) -> torch.Tensor:
        return (images[index] + delta[labels[index] if classwise else index]).clamp(0, 1)

    everything = torch.arange(len(images), device=images.device)
    stream = batch_stream(len(images), batch_size, generator, images.device)
    for round_ in range(1, max_rounds + 1):
        for _ in range(model_steps):
            index = next(stream)
            trainer.step(noisy(index), labels[index])
        for index in shuffled_batches(len(images), batch_size, generator, images.device):
            x, y = images[index], labels[index]
            found = pgd(cross_entropy_sum(model, y), x, epsilon=epsilon, step_size=step_size, steps=steps,
                        minimize=True, start=delta[y] if classwise else delta[index])
            if classwise:
                # Each class present in the batch takes the mean of its images' results.
                total = torch.zeros_like(delta).index_add_(0, y, found)
                count = torch.bincount(y, minlength=num_classes).to(delta.dtype)
                present = count > 0
                delta[present] = (total[present] / count[present].view(-1, 1, 1, 1)).clamp(-epsilon, epsilon)
            else:
                delta[index] = found
        train_accuracy = accuracy(model, noisy(everything), labels)
        logger.info("%s round %d: surrogate accuracy on the noisy training set %.4f", name, round_, train_accuracy)
        if train_accuracy >= stop_accuracy:
            break
    return noisy(everything)


# gpu: a surrogate is trained, so a paper-scale job asks for the scale's GPU (resources.poison_surrogate).
POISONS.register("em", gpu=True)(partial(error_minimizing, name="em", classwise=False))
POISONS.register("em-class", gpu=True)(partial(error_minimizing, name="em-class", classwise=True))


@POISONS.register("rem", gpu=True)
def rem(images: torch.Tensor, labels: torch.Tensor, *, num_classes: int, generator: torch.Generator,
        epsilon: Fraction = 8 / 255, step_size: Step = 1.6 / 255, steps: Count = 10,
        adv_radius: Annotated[float, Number(ge=0, le=1.0)] = 4 / 255, adv_step_size: AdvStep = 0.8 / 255,
        adv_steps: Count = 10, eot_samples: Count = 5, train_steps: Count = 5000, surrogate: Surrogate = "resnet18",
        batch_size: Count = 128, lr: Positive = 0.1) -> torch.Tensor:
    """Robust error-minimizing noise against an adversarially trained surrogate (Fu et al. 2022).

    ``adv_radius`` 0 trains the surrogate without adversarial examples.
    """
    model = build_surrogate(surrogate, images, num_classes, generator)
    # The paper's ×0.1 at 40% and 80% of the steps, by the recipes' step schedule counting a step an epoch
    # (ceil: the first whole step at or past each point).
    milestones = (math.ceil(0.4 * train_steps), math.ceil(0.8 * train_steps))
    recipe = surrogate_recipe(lr=lr, batch_size=batch_size, epochs=train_steps, schedule="step",
                              milestones=milestones)
    trainer = SurrogateTrainer(model, recipe, steps_per_epoch=1)
    augment = augmenter(images.shape[-1], generator)

    def adversarial(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The inner max: x moved up the loss within ρ_a (unchanged when ρ_a = 0)."""
        if adv_radius == 0:
            return x
        return x + pgd(cross_entropy_sum(model, y), x, epsilon=adv_radius, step_size=adv_step_size,
                       steps=adv_steps, start="random", generator=generator)

    def robust_noise(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """δ minimising E_T[max_{‖r‖≤ρ_a} L(T(x + δ) + r)], from a random start."""
        model.eval()  # as the inner max sets it: no batch statistics while crafting, even with ρ_a = 0

        def loss(z: torch.Tensor) -> torch.Tensor:
            transformed = augment(z)
            offset = adversarial(transformed.detach(), y) - transformed.detach()  # constant (Danskin)
            return F.cross_entropy(logits(model, transformed + offset), y, reduction="sum")

        return pgd(loss, x, epsilon=epsilon, step_size=step_size, steps=steps, minimize=True, start="random",
                   generator=generator, eot_samples=eot_samples)

    stream = batch_stream(len(images), batch_size, generator, images.device)
    for _ in range(train_steps):
        index = next(stream)
        x, y = images[index], labels[index]
        noisy = augment(x + robust_noise(x, y))
        trainer.step(adversarial(noisy, y), y)

    delta = torch.empty_like(images)
    for index in torch.arange(len(images), device=images.device).split(batch_size):
        delta[index] = robust_noise(images[index], labels[index])
    return (images + delta).clamp(0, 1)
