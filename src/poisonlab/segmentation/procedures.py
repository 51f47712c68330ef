"""How a segmentation net is trained: ``standard``, ``sat`` and ``advprop``, each a ``TrainingDefense`` for ``fit``.

The trainer is the project's one loop (``poisonlab.training.loop.fit``); a
procedure only supplies its objective, as the classifiers' adversarial
training does (``poisonlab.defenses.adversarial``), plus what it does to the
model before training (``prepare``) and to the weights it saves (``deploy``).

Settings of the likely companion repository (psandovalsegura/Robust-Semantic-
Segmentation @ 2bf51a1, a DDC-AT fork; design note §1.2):

- ``sat`` (``tool_train/train_sat_psp.py``): each batch is its first half
  clean and its second half adversarial, by BIM — L∞ ε = 0.03 in [0, 1] pixel
  units, 3 steps of ε/3 from the clean image, on the pixel-wise cross-entropy
  against the label map. ``share`` sets the adversarial part; ``start:
  random`` makes it PGD.
- ``advprop`` (``train_advprop_psp.py``, ``model/mixbn.py``; Xie et al. 2020):
  the same attack, crafted through auxiliary batch norms; in training every
  batch norm sends the clean part through its main statistics and the
  adversarial part through the auxiliary ones (``MixBatchNorm2d``); inference
  — and every saved ``model.pt`` — uses the main ones alone.

Chosen here: the attack runs with the network in train mode (batch statistics),
as the classifiers' adversarial training; its loss is the cross-entropy summed
over an image's pixels (``attacks.pgd`` takes a loss an example).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from poisonlab.attacks import pgd
from poisonlab.registry import ConfigError, Registry
from poisonlab.training.procedure import Normalize, TrainingDefense, soft_cross_entropy


@dataclass
class Procedure:
    defense: TrainingDefense = field(default_factory=TrainingDefense)
    prepare: Callable[[nn.Module], nn.Module] = lambda model: model  # before the optimizer is built
    deploy: Callable[[nn.Module], dict[str, torch.Tensor]] = lambda model: model.state_dict()  # what model.pt holds


SEG_PROCEDURES: Registry[Callable[..., Procedure]] = Registry("segmentation procedure")


# ---------------------------------------------------------------- the attack on a batch of maps


def soft_pixel_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against soft targets (B, K, H, W), summed over each image's pixels: (B,)."""
    return -(targets * logits.float().log_softmax(1)).sum((1, 2, 3))


def craft(model: nn.Module, x01: torch.Tensor, targets: torch.Tensor, normalize: Normalize, *, epsilon: float,
          step_size: float, steps: int, start: str, generator: torch.Generator) -> torch.Tensor:
    """Images in [0, 1] raising the pixel-wise loss on ``targets`` within the L∞ ball of ``epsilon`` (detached)."""

    def loss(x: torch.Tensor) -> torch.Tensor:
        return soft_pixel_loss(model(normalize(x * 255)), targets)

    x01 = x01.detach().float()
    delta = pgd(loss, x01, norm="linf", epsilon=epsilon, step_size=step_size, steps=steps, start=start,
                generator=generator)
    return (x01 + delta).clamp(0, 1)


# ---------------------------------------------------------------- AdvProp's batch norm


class MixBatchNorm2d(nn.BatchNorm2d):
    """A batch norm with an auxiliary twin: ``route`` "clean" uses the main one, "adv" the auxiliary one, "mix"
    the main one for the first ``split`` examples and the auxiliary one for the rest (Xie et al.'s MixBN)."""

    def __init__(self, num_features: int, **kwargs) -> None:
        super().__init__(num_features, **kwargs)
        self.aux = nn.BatchNorm2d(num_features, **kwargs)
        self.route, self.split = "clean", 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.route == "clean" or not self.training:  # inference always takes the main statistics
            return super().forward(x)
        if self.route == "adv":
            return self.aux(x)
        clean, adversarial = x[:self.split], x[self.split:]
        if not len(clean):  # a batch all adversarial (share 1): batch norm cannot normalise an empty part
            return self.aux(adversarial)
        return torch.cat([super().forward(clean), self.aux(adversarial)])


def to_mix_batchnorm(model: nn.Module) -> nn.Module:
    """Every ``BatchNorm2d`` of ``model`` replaced, in place, by a ``MixBatchNorm2d`` starting from its state."""
    for name, child in model.named_children():
        if type(child) is nn.BatchNorm2d:
            mix = MixBatchNorm2d(child.num_features, eps=child.eps, momentum=child.momentum).to(child.weight.device)
            mix.load_state_dict(child.state_dict(), strict=False)
            mix.aux.load_state_dict(child.state_dict())
            setattr(model, name, mix)
        else:
            to_mix_batchnorm(child)
    return model


def set_route(model: nn.Module, route: str, split: int = 0) -> None:
    for module in model.modules():
        if isinstance(module, MixBatchNorm2d):
            module.route, module.split = route, split


def main_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The weights inference uses: the main batch norms only, loadable into the plain architecture."""
    aux = {f"{name}.aux." for name, m in model.named_modules() if isinstance(m, MixBatchNorm2d)}
    return {k: v for k, v in model.state_dict().items() if not any(k.startswith(prefix) for prefix in aux)}


# ---------------------------------------------------------------- the procedures


def _checked(name: str, epsilon: float, step_size: float | None, steps: int, share: float, start: str) -> float:
    if not 0 < epsilon <= 1:
        raise ConfigError(f"procedure '{name}': epsilon must lie in (0, 1] ([0, 1] pixel units); got {epsilon}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"procedure '{name}': steps must be an integer >= 1; got {steps!r}")
    if not 0 < share <= 1:
        raise ConfigError(f"procedure '{name}': share (the adversarial part of a batch) must lie in (0, 1]; "
                          f"got {share}")
    if start not in ("zero", "random"):
        raise ConfigError(f"procedure '{name}': start must be zero (BIM) or random (PGD); got {start!r}")
    step = epsilon / steps if step_size is None else step_size
    if not step > 0:
        raise ConfigError(f"procedure '{name}': step_size must be > 0; got {step_size}")
    return step


@SEG_PROCEDURES.register("standard")
def standard() -> Procedure:
    """Plain training: the pixel-wise cross-entropy of the clean batch."""
    return Procedure()


def _adversarial_objective(*, epsilon: float, step_size: float, steps: int, share: float, start: str,
                           mixed_bn: bool):
    def objective(model, x_raw, targets, normalize, generator):
        clean = len(x_raw) - max(1, round(share * len(x_raw)))  # the first part stays clean, as SAT's halves
        x01 = x_raw.float() / 255
        if mixed_bn:
            set_route(model, "adv")
        adversarial = craft(model, x01[clean:], targets[clean:], normalize, epsilon=epsilon, step_size=step_size,
                            steps=steps, start=start, generator=generator)
        if mixed_bn:
            set_route(model, "mix", clean)
        logits = model(normalize(torch.cat([x01[:clean], adversarial]) * 255))
        if mixed_bn:
            set_route(model, "clean")
        return soft_cross_entropy(logits, targets), logits

    return objective


@SEG_PROCEDURES.register("sat")
def sat(*, epsilon: float = 0.03, step_size: float | None = None, steps: int = 3, share: float = 0.5,
        start: str = "zero") -> Procedure:
    """SAT: the last ``share`` of each batch replaced by its BIM (start zero) or PGD (start random) version."""
    step = _checked("sat", epsilon, step_size, steps, share, start)
    return Procedure(TrainingDefense(objective=_adversarial_objective(
        epsilon=epsilon, step_size=step, steps=steps, share=share, start=start, mixed_bn=False)))


@SEG_PROCEDURES.register("advprop")
def advprop(*, epsilon: float = 0.03, step_size: float | None = None, steps: int = 3, share: float = 0.5,
            start: str = "zero") -> Procedure:
    """AdvProp: SAT's batches, the adversarial part through auxiliary batch norms (crafted through them too)."""
    step = _checked("advprop", epsilon, step_size, steps, share, start)
    return Procedure(TrainingDefense(objective=_adversarial_objective(
        epsilon=epsilon, step_size=step, steps=steps, share=share, start=start, mixed_bn=True)),
        prepare=to_mix_batchnorm, deploy=main_state)
