"""Augmentations as defenses: ``cutout``, ``cutmix``, ``mixup``, and ``ueraser``.

``cutout`` (size 16), ``cutmix`` and ``mixup`` (α = 1) are the augmentations
the AR paper (Sandoval-Segura et al., "Autoregressive Perturbations for Data
Poisoning", NeurIPS 2022) trains with as defenses; here they are the recipe's
own batched augmentations (``poisonlab.training.augment``) with their options
and defaults, run as the defense's transforms — before the recipe's crop and
flip rather than after them, which moves a box or a mix by the crop's shift
and leaves their distribution as it was.

``ueraser``: Qin et al., "Learning the Unlearnable: Adversarial Augmentations
Suppress Unlearnable Example Attacks" (ICCV 2023 workshop AROW; arXiv
2303.15127). Each training batch (after the recipe's crop and flip, as in the
paper's loader) is augmented ``repeats`` times, K = 5 in the paper, by plasma
brightness, plasma contrast, channel shuffle and TrivialAugment; the loss is
each image's largest cross-entropy over its K copies, averaged (UEraser-Max).
The policy's settings are those of the paper's repository (lafeat/ueraser,
``ueraser.py``): plasma brightness roughness (0.3, 0.7), intensity (0.5, 1),
p = 0.5; plasma contrast roughness (0.3, 0.7), p = 0.5; channel shuffle
p = 0.5; kornia's TrivialAugment with its defaults. The repository trains
the max over copies for the first 50-60 of 200 epochs and one copy
(UEraser-Lite) after: ``adversarial_epochs`` (default: every epoch), and
``repeats=1`` is UEraser-Lite throughout. The defaults are lafeat/ueraser's
(plasma p = 0.5). APBench (lafeat/apbench, ``defense/ueraser.py``) applies
both plasma transforms always: ``plasma_p: 1.0`` is its policy. Its JPEG
variant for AR and TAP poisons (a random-quality JPEG first, plasma p = 0.8)
is not offered here. Its training script augments each
copy by a separate call, so each copy gets its own TrivialAugment operation
(kornia picks one a call); so do we, then forward all copies as one batch.

kornia draws from torch's global RNG. Each batch's augmentation runs inside
``torch.random.fork_rng`` seeded by one draw from the run's generator, so that
generator stays the run's only randomness: a seed fixes every copy and a
resumed run replays them, and the global RNG is left as it was.
"""

from __future__ import annotations

import torch
from torch import nn

from poisonlab.checks import Count, Fraction, Positive
from poisonlab.defenses.base import DEFENSES
from poisonlab.training.augment import AUGMENTATIONS, seeded_global_rng
from poisonlab.training.procedure import EpochContext, Objective, TrainingDefense, soft_cross_entropy

UERASER_REPEATS = 5
UERASER_PLASMA_P = 0.5  # lafeat/ueraser's; APBench's is 1.0


# ---------------------------------------------------------------- the AR paper's augmentations


@DEFENSES.register("cutout")
def cutout(*, size: Count = 16) -> TrainingDefense:
    """Zero a ``size``×``size`` square (16, the AR paper's) at a random centre of each image."""
    return TrainingDefense(transforms=[AUGMENTATIONS.build("cutout", size=size)])


@DEFENSES.register("cutmix")
def cutmix(*, alpha: Positive = 1.0) -> TrainingDefense:
    """Paste a box from another image of the batch, λ ~ Beta(``alpha``, ``alpha``), targets by area."""
    return TrainingDefense(transforms=[AUGMENTATIONS.build("cutmix", alpha=alpha)])


@DEFENSES.register("mixup")
def mixup(*, alpha: Positive = 1.0) -> TrainingDefense:
    """Mix each image and its target with another of the batch, λ ~ Beta(``alpha``, ``alpha``)."""
    return TrainingDefense(transforms=[AUGMENTATIONS.build("mixup", alpha=alpha)])


# ---------------------------------------------------------------- UEraser


def ueraser_policy(plasma_p: float = UERASER_PLASMA_P) -> nn.Module:
    """The repository's augmentation policy, on float images in [0, 1]; plasma with probability ``plasma_p``."""
    import kornia.augmentation as K  # here: importing kornia takes seconds and only UEraser needs it

    return nn.Sequential(
        K.RandomPlasmaBrightness(roughness=(0.3, 0.7), intensity=(0.5, 1.0), p=plasma_p, keepdim=True),
        K.RandomPlasmaContrast(roughness=(0.3, 0.7), p=plasma_p, keepdim=True),
        K.RandomChannelShuffle(p=0.5, keepdim=True),
        K.auto.TrivialAugment(),
    )


def augmented_copies(policy: nn.Module, x: torch.Tensor, copies: int, generator: torch.Generator) -> torch.Tensor:
    """``copies`` independently augmented copies of the raw batch, copy-major: (copies·B, C, H, W) in [0, 255]."""
    images = x.float() / 255
    # Full precision: the training step's bf16 autocast must not round the augmented pixels.
    with seeded_global_rng(generator, x.device), torch.autocast(x.device.type, enabled=False):
        out = torch.cat([policy(images) for _ in range(copies)])
    return out.mul_(255)


def max_over_copies_objective(policy: nn.Module, repeats: int, copies_now: dict[str, int]) -> Objective:
    """UEraser-Max: mean over images of the largest soft cross-entropy among the image's augmented copies.

    Returns the logits of the first copy, for the training accuracy.
    """

    def objective(model, x, targets, normalize, generator):
        copies = copies_now.get("copies", repeats)
        logits = model(normalize(augmented_copies(policy, x, copies, generator)))
        losses = soft_cross_entropy(logits, targets.repeat(copies, 1), reduction="none").view(copies, len(x))
        return losses.amax(0).mean(), logits[:len(x)]

    return objective


@DEFENSES.register("ueraser")
def ueraser(*, repeats: Count = UERASER_REPEATS, adversarial_epochs: Count | None = None,
            plasma_p: Fraction = UERASER_PLASMA_P) -> TrainingDefense:
    """Train on the worst of ``repeats`` (5) augmented copies per image; one copy after ``adversarial_epochs``.

    ``plasma_p``: probability of each plasma transform, 0.5 as lafeat/ueraser, 1.0 as APBench.
    """
    copies_now: dict[str, int] = {}

    def switch_to_one_copy(context: EpochContext) -> None:
        copies_now["copies"] = repeats if context.epoch <= adversarial_epochs else 1

    return TrainingDefense(objective=max_over_copies_objective(ueraser_policy(plasma_p), repeats, copies_now),
                           on_epoch_start=None if adversarial_epochs is None else switch_to_one_copy)
