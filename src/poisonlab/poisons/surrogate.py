"""What the poisons optimised against a network share: the surrogate, its training, and L∞ PGD.

Error-minimizing (EM, REM) and error-maximizing (TAP) noise are both projected
sign-gradient steps on a surrogate classifier; only the loss, its sign and the
way the surrogate is trained differ. Everything here draws its randomness from
the poison's ``torch.Generator``: the model's initial weights (seeded from it
inside ``fork_rng``, so the global RNG is neither used nor disturbed), batch
orders, augmentations and random starts. On CUDA the forward passes run under
bf16 autocast, as the training loop does; on the CPU everything stays fp32.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from poisonlab.models import MODELS, build_model
from poisonlab.registry import ConfigError
from poisonlab.training.augment import build_augmentations
from poisonlab.training.loop import autocast

Loss = Callable[[torch.Tensor], torch.Tensor]


def check_count(poison: str, name: str, value: int) -> None:
    """Step, round and sample counts are positive integers."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"poison '{poison}': {name} must be an integer >= 1; got {value!r}")


def check_step(poison: str, step_size: float, epsilon: float, name: str = "step_size") -> None:
    """A PGD step is positive and no larger than the radius it moves in (larger steps only hit the box)."""
    if not 0 < step_size <= epsilon:
        raise ConfigError(f"poison '{poison}': {name} must be > 0 and <= the radius {epsilon}; got {step_size}")


def check_surrogate(poison: str, surrogate: str) -> None:
    if surrogate not in MODELS:
        raise ConfigError(f"poison '{poison}': unknown surrogate '{surrogate}'; known archs: {', '.join(MODELS)}")


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


def sgd(model: nn.Module, lr: float, *, nesterov: bool = False) -> torch.optim.Optimizer:
    """The papers' surrogate optimiser: SGD, momentum 0.9, weight decay 5e-4."""
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4, nesterov=nesterov)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with autocast(x.device, "auto"):  # the training loop's default: bf16 on CUDA, fp32 on the CPU
        return model(x).float()


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
               grad_clip: float | None = None) -> None:
    model.train()
    loss = F.cross_entropy(logits(model, x), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip is not None:
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()


def epoch_batches(n: int, batch_size: int, generator: torch.Generator, device: torch.device) -> list[torch.Tensor]:
    """One shuffled pass over ``n`` indices."""
    order = torch.randperm(n, generator=generator, device=generator.device).to(device)
    return list(order.split(batch_size))


def batch_stream(n: int, batch_size: int, generator: torch.Generator, device: torch.device) -> Iterator[torch.Tensor]:
    """Shuffled batches, epoch after epoch, for as long as they are asked for."""
    while True:
        yield from epoch_batches(n, batch_size, generator, device)


def augmenter(image_size: int, generator: torch.Generator) -> Callable[[torch.Tensor], torch.Tensor]:
    """Random crop (reflect-padded by 1/8 of the side: 4 px on CIFAR) and flip, differentiable in the pixels.

    The crop is a gather and the flip a select, so gradients reach the un-augmented image.
    """
    augmentations = build_augmentations({"crop": {"padding": max(1, image_size // 8)}, "flip": {}})

    def apply(x: torch.Tensor) -> torch.Tensor:
        targets = x.new_empty(len(x), 0)  # labels do not change under crop and flip
        for augment in augmentations:
            x, targets = augment(x, targets, generator)
        return x

    return apply


def uniform_start(x: torch.Tensor, radius: float, generator: torch.Generator) -> torch.Tensor:
    noise = torch.rand(x.shape, generator=generator, device=generator.device).to(x.device)
    return project((noise * 2 - 1) * radius, x, radius)


def project(delta: torch.Tensor, x: torch.Tensor, radius: float) -> torch.Tensor:
    """Into the L∞ ball of ``radius`` and so that ``x + delta`` stays a valid image in [0, 1]."""
    return (x + delta.clamp(-radius, radius)).clamp(0, 1) - x


def pgd(loss: Loss, x: torch.Tensor, delta: torch.Tensor, *, radius: float, step_size: float, steps: int,
        minimize: bool) -> torch.Tensor:
    """``steps`` signed-gradient steps on ``loss(x + delta)`` (down if ``minimize``), projected each time."""
    direction = -1.0 if minimize else 1.0
    for _ in range(steps):
        delta = delta.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(loss(x + delta), delta)
        delta = project(delta.detach() + direction * step_size * grad.sign(), x, radius)
    return delta.detach()


def cross_entropy_sum(model: nn.Module, y: torch.Tensor) -> Loss:
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
