"""Robustness of a segmentation net: mIoU and pixel accuracy, clean and under untargeted attacks on the label map.

The companion repository's protocol (``tool_test/voc2012/test_voc_psp.py``;
design note §1.2): BIM from the clean image, L∞ ε = 0.03, α = 0.01 in [0, 1]
pixel units, 2, 4 and 6 steps, on the pixel-wise cross-entropy against the
ground truth. Users of DDC-AT found that protocol overstates robustness
(JIA-Lab-research/Robust-Semantic-Segmentation#5; Croce et al. 2023, whose
SEA ensemble breaks several "robust" segmentation models), so a stronger PGD
is evaluated beside it: ``steps`` steps from a random start in the ball,
``restarts`` times, keeping for each image the restart that leaves the
fewest pixels correct — the worst case the metric sees, not the highest loss.

Every attack is ``poisonlab.attacks.pgd``; the network is in eval mode
(inference statistics), the attack's loss the cross-entropy summed over each
image's labelled pixels.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from poisonlab.attacks import pgd
from poisonlab.registry import ConfigError, Registry
from poisonlab.segmentation.data import IGNORE
from poisonlab.segmentation.metrics import confusion, per_class_iou, scores
from poisonlab.training.loop import autocast

# (model, images in [0, 1], label maps, normalize, generator) → adversarial images in [0, 1]
Attack = Callable[[nn.Module, torch.Tensor, torch.Tensor, Callable, torch.Generator], torch.Tensor]
SEG_ATTACKS: Registry[Callable[..., Attack]] = Registry("segmentation attack")

# The companion repository's evaluation (BIM-2/4/6), then the stronger PGD: column name → attack and options.
PAPER_ATTACKS = {
    "clean": {"attack": "none"},
    "bim-2": {"attack": "bim", "steps": 2},
    "bim-4": {"attack": "bim", "steps": 4},
    "bim-6": {"attack": "bim", "steps": 6},
    "pgd-20": {"attack": "pgd", "steps": 20, "restarts": 3},
}


def pixel_loss(logits: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
    """Cross-entropy summed over each image's labelled pixels (255 ignored): (B,)."""
    return F.cross_entropy(logits.float(), maps.long(), ignore_index=IGNORE, reduction="none").sum((1, 2))


def _loss(model: nn.Module, maps: torch.Tensor, normalize: Callable):
    return lambda x: pixel_loss(model(normalize(x * 255)), maps)


def _check(name: str, epsilon: float, step_size: float, steps: int) -> None:
    if not 0 < epsilon <= 1 or not step_size > 0:
        raise ConfigError(f"attack '{name}': need 0 < epsilon <= 1 and step_size > 0; got {epsilon}, {step_size}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"attack '{name}': steps must be an integer >= 1; got {steps!r}")


@SEG_ATTACKS.register("none")
def no_attack() -> Attack:
    return lambda model, x01, maps, normalize, generator: x01


@SEG_ATTACKS.register("bim")
def bim(*, epsilon: float = 0.03, step_size: float = 0.01, steps: int = 2) -> Attack:
    """Basic iterative method (Kurakin et al.): L∞ steps of the gradient's sign from the clean image."""
    _check("bim", epsilon, step_size, steps)

    def attack(model, x01, maps, normalize, generator):
        delta = pgd(_loss(model, maps, normalize), x01, norm="linf", epsilon=epsilon, step_size=step_size,
                    steps=steps, start="zero")
        return (x01 + delta).clamp(0, 1)

    return attack


@SEG_ATTACKS.register("pgd")
def pgd_restarts(*, epsilon: float = 0.03, step_size: float = 0.01, steps: int = 20, restarts: int = 3) -> Attack:
    """PGD from ``restarts`` random starts; per image, the one leaving the fewest pixels correct."""
    _check("pgd", epsilon, step_size, steps)
    if isinstance(restarts, bool) or not isinstance(restarts, int) or restarts < 1:
        raise ConfigError(f"attack 'pgd': restarts must be an integer >= 1; got {restarts!r}")

    def attack(model, x01, maps, normalize, generator):
        best, fewest = x01, None
        known = maps != IGNORE
        for _ in range(restarts):
            delta = pgd(_loss(model, maps, normalize), x01, norm="linf", epsilon=epsilon, step_size=step_size,
                        steps=steps, start="random", generator=generator)
            candidate = (x01 + delta).clamp(0, 1)
            with torch.no_grad():
                correct = ((model(normalize(candidate * 255)).argmax(1) == maps) & known).sum((1, 2))
            if fewest is None:
                best, fewest = candidate, correct
            else:
                better = correct < fewest
                best = torch.where(better[:, None, None, None], candidate, best)
                fewest = torch.minimum(correct, fewest)
        return best

    return attack


def build_attacks(spec: dict[str, dict], *, epsilon: float, step_size: float) -> dict[str, Attack]:
    """``{"bim-2": {"attack": "bim", "steps": 2}, …}`` → attacks by column name; ε and α shared unless given."""
    attacks = {}
    for column, options in spec.items():
        options = dict(options)
        name = options.pop("attack", None)
        if name is None:
            raise ConfigError(f"robustness column '{column}' needs 'attack': one of {', '.join(SEG_ATTACKS)}")
        if name != "none":
            options = {"epsilon": epsilon, "step_size": step_size, **options}
        attacks[column] = SEG_ATTACKS.build(name, **options)
    return attacks


def evaluate_robustness(model: nn.Module, x_raw: torch.Tensor, maps: torch.Tensor, normalize: Callable, *,
                        num_classes: int, attacks: dict[str, Attack], batch_size: int = 64, seed: int = 0,
                        precision: str = "fp32", keep: int = 0) -> tuple[dict[str, dict], dict[str, torch.Tensor]]:
    """mIoU and pixel accuracy (percent) of ``model`` on (``x_raw`` in [0, 255], ``maps``) under each attack.

    Returns ({column: {"miou", "pixel_acc", "per_class_iou"…}}, {column: the first ``keep`` attacked images in
    [0, 1] and their predictions}) — the latter for the figures. Seeded: each column draws from its own generator.
    """
    model.eval()
    results, examples = {}, {}
    for column, attack in attacks.items():
        generator = torch.Generator(device=x_raw.device).manual_seed(seed)
        matrix = torch.zeros(num_classes, num_classes, dtype=torch.int64)
        kept_x, kept_p = [], []
        for start in range(0, len(x_raw), batch_size):
            x01 = x_raw[start:start + batch_size].float() / 255
            batch_maps = maps[start:start + batch_size]
            with autocast(x_raw.device, precision):
                adversarial = attack(model, x01, batch_maps, normalize, generator)
                with torch.no_grad():
                    predicted = model(normalize(adversarial * 255)).argmax(1)
            matrix += confusion(predicted, batch_maps, num_classes)
            if start < keep:
                kept_x.append(adversarial[:keep - start].cpu())
                kept_p.append(predicted[:keep - start].cpu())
        results[column] = {**scores(matrix), "per_class_iou": per_class_iou(matrix)}
        if keep:
            examples[column] = {"images": torch.cat(kept_x), "predictions": torch.cat(kept_p)}
    return results, examples
