"""Projected gradient descent (PGD): the one attack every poison, defense and paper here runs.

Madry et al., "Towards Deep Learning Models Resistant to Adversarial Attacks"
(ICLR 2018): repeat δ ← Π(δ ± α·d(∇_δ L(x + δ))) for a number of steps, where
d is the gradient's sign for an L∞ ball and the gradient over its L2 norm for
an L2 ball, and Π projects onto the ball of radius ε around 0 and then keeps
x + δ inside a box (images in [0, 1]).

The attack knows nothing of classifiers: it takes a ``loss`` of the perturbed
input, so each caller says what is optimised —

- error-minimizing noise (EM, REM): the true label's cross-entropy, minimised;
- error-maximizing noise (TAP) and adversarial training: the true label's
  cross-entropy maximised (untargeted), or a target label's minimised
  (targeted) — targeting is a choice of loss and direction, nothing more;
- PhotoGuard's encoder attack: ``‖E(x + δ) − z_target‖`` minimised;
- segmentation adversarial training: the per-pixel cross-entropy summed per
  image, maximised;
- inpainting by optimisation: a loss minimised with ``epsilon=math.inf`` and a
  ``mask`` that lets only the hole move.

``loss`` returns one value per example or their sum; either way the gradient
is taken of the sum, so an example's step does not depend on the size of the
batch it came in (a mean would shrink every gradient by the batch size, which
under bf16 autocast rounds small ones to zero).

Choices made here, with their reasons:

- Random start: uniform in the L∞ cube; for L2, a uniformly random direction
  (a normalised Gaussian) scaled by a radius drawn uniformly from [0, ε] — not
  uniform in the ball's volume, which in 3,072 dimensions puts almost every
  start on the surface. A start given as a tensor is projected before the
  first step, so a caller may pass any initial noise (TAP's Gaussian one).
- Projection: onto the ball, then the box. Clipping to the box only shrinks
  each coordinate of δ towards 0, so the result stays inside the ball. Either
  can be switched off: ``epsilon=math.inf`` (no ball), ``box=None`` (latents,
  unbounded inputs).
- ``mask``: pixels where it is False never move — they start at 0, their
  gradient is zeroed before the step direction is taken (so an L2 step spends
  its whole length on the pixels that may move) and δ is zeroed there after
  every projection (so not even the box moves them).
- ``eot_samples``: the gradient summed over that many evaluations of ``loss``
  (expectation over transformation, each evaluation drawing its own random
  augmentation), one backward pass each so that only one graph is alive.
- ``step_size``: a number, or a function of the step index (0 … steps − 1) for a schedule —
  PhotoGuard's encoder attack decays its step linearly to 1% (``editing.immunize``).
- Randomness comes only from ``generator`` (the random start; the loss may
  draw from the same one), and the model's mode is the caller's: the attack
  neither switches it nor resets gradients on its parameters (it asks autograd
  for δ's gradient alone). It computes that gradient even when called inside
  ``torch.no_grad()`` (an evaluation's robustness check).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

Loss = Callable[[torch.Tensor], torch.Tensor]  # perturbed input → loss per example, or their sum

NORMS = ("linf", "l2")
STARTS = ("zero", "random")


def pgd(loss: Loss, x: torch.Tensor, *, norm: str = "linf", epsilon: float,
        step_size: float | Callable[[int], float], steps: int,
        minimize: bool = False, start: torch.Tensor | str = "zero", generator: torch.Generator | None = None,
        mask: torch.Tensor | None = None, box: tuple[float, float] | None = (0.0, 1.0),
        eot_samples: int = 1) -> torch.Tensor:
    """The perturbation δ (detached, same shape as ``x``) after ``steps`` projected steps on ``loss(x + δ)``.

    ``norm``: "linf" or "l2" (per example, over all dimensions after the first); ``epsilon``: the ball's
    radius (``math.inf``: no ball); ``minimize``: descend instead of ascend; ``start``: "zero", "random"
    (needs ``generator`` and a finite ``epsilon``) or an initial δ; ``mask``: boolean, broadcastable to
    ``x``, True where the input may change; ``box``: the (low, high) every entry of ``x + δ`` stays in.
    """
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}; got {norm!r}")
    if not epsilon > 0 or not (callable(step_size) or step_size > 0):
        raise ValueError(f"epsilon and step_size must be > 0; got {epsilon} and {step_size}")
    if steps < 0 or eot_samples < 1:
        raise ValueError(f"steps must be >= 0 and eot_samples >= 1; got {steps} and {eot_samples}")
    x = x.detach()
    if isinstance(start, torch.Tensor):
        delta = start.detach()
    elif start == "zero":
        delta = torch.zeros_like(x)
    elif start == "random":
        if generator is None or math.isinf(epsilon):
            raise ValueError("a random start needs a generator and a finite epsilon")
        delta = random_start(x, norm, epsilon, generator)
    else:
        raise ValueError(f"start must be a tensor or one of {STARTS}; got {start!r}")
    delta = project(delta, x, norm, epsilon, box, mask)
    for step in range(steps):
        alpha = step_size(step) if callable(step_size) else step_size
        delta.requires_grad_(True)
        grad = _gradient(loss, x, delta, eot_samples)
        if mask is not None:
            grad = grad.where(mask, 0)
        direction = grad.sign() if norm == "linf" else grad / _norms(grad)
        moved = delta.detach() - alpha * direction if minimize else delta.detach() + alpha * direction
        delta = project(moved, x, norm, epsilon, box, mask)
    return delta.detach()


def random_start(x: torch.Tensor, norm: str, epsilon: float, generator: torch.Generator) -> torch.Tensor:
    """A random δ inside the ``norm`` ball of ``epsilon`` (see the module docstring), drawn from ``generator``."""

    def draw(sampler, shape):
        # Drawn where the generator lives, then moved: a CPU generator can seed a CUDA attack.
        return sampler(shape, generator=generator, device=generator.device).to(x.device)

    if norm == "linf":
        return (draw(torch.rand, x.shape) * 2 - 1) * epsilon
    direction = draw(torch.randn, x.shape)
    radius = draw(torch.rand, (len(x), *([1] * (x.dim() - 1)))) * epsilon
    return direction / _norms(direction) * radius


def project(delta: torch.Tensor, x: torch.Tensor, norm: str = "linf", epsilon: float = math.inf,
            box: tuple[float, float] | None = (0.0, 1.0), mask: torch.Tensor | None = None) -> torch.Tensor:
    """``delta`` onto the ``norm`` ball of ``epsilon`` around 0, then so that ``x + delta`` lies in ``box``."""
    if not math.isinf(epsilon):
        if norm == "linf":
            delta = delta.clamp(-epsilon, epsilon)
        else:
            delta = delta * (epsilon / _norms(delta)).clamp(max=1)
    if box is not None:
        delta = (x + delta).clamp(*box) - x
    if mask is not None:
        delta = delta.where(mask, 0)
    return delta


def _gradient(loss: Loss, x: torch.Tensor, delta: torch.Tensor, samples: int) -> torch.Tensor:
    """∇_δ of the summed loss, summed over ``samples`` evaluations (one graph at a time)."""
    with torch.enable_grad():  # an attack inside an evaluation's no_grad block still needs its gradient
        (total,) = torch.autograd.grad(loss(x + delta).sum(), delta)
        for _ in range(samples - 1):
            total = total + torch.autograd.grad(loss(x + delta).sum(), delta)[0]
    return total


def _norms(t: torch.Tensor) -> torch.Tensor:
    """Per-example L2 norms of ``t``, shaped to broadcast against it."""
    # The floor keeps an all-zero gradient (a saturated image) from dividing by zero.
    return t.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (t.dim() - 1)))
