"""Immunizers: PhotoGuard's perturbations, registered by name (``IMMUNIZERS``), run by the project's PGD.

PhotoGuard (Salman et al., "Raising the Cost of Malicious AI-Powered Image Editing", ICML 2023;
MadryLab/photoguard @ 686bea7, its notebooks read for these facts) protects a photo with an
imperceptible L∞ perturbation found by PGD against the editor's image encoder:

- ``encoder`` (targeted; ``demo_simple_attack_inpainting``): minimise ‖E(x + δ) − E(x_target)‖,
  pulling the photo's latent towards a target photo's.
- ``encoder-zero`` (untargeted; ``demo_simple_attack_img2img``): minimise ‖E(x + δ)‖, towards the
  zero latent.
- ``diffusion`` (``demo_complex_attack_inpainting``): through the denoising steps of the edit
  itself (``editing.diffusion``; paper scale).
- ``none``: the photo as it is — the clean control every number is set beside.

PhotoGuard's settings, on its [−1, 1] pixels, and here on [0, 1] (every number halved):
ε 0.06 → ``epsilon`` 0.03 (≈ 7.65/255); step 0.02 (img2img) or 0.01 (inpainting) → ``step_size``
0.01 or 0.005; 1,000 iterations; a uniform random start in the ε-cube; the step decayed linearly
(``photoguard_schedule``); the sign of the gradient of the (unsquared) norm. Its defaults here are
PhotoGuard's img2img ones; the embedded scale passes fewer steps and its own budgets.

With a mask (inpainting), PhotoGuard perturbs only the part of the photo the edit keeps: the
encoder sees the masked image the inpainting pipeline encodes (the repainted region filled with 0
on [−1, 1], i.e. 0.5 here, as diffusers prepares it), δ is zero in the repainted region, and the
original pixels stay there. The project's PGD (``poisonlab.attacks.pgd``) gives all of this: the
``mask`` option freezes pixels, ``box`` keeps [0, 1], a callable ``step_size`` the schedule.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch

from poisonlab.attacks import pgd
from poisonlab.editing.autoencoders import LatentAutoencoder
from poisonlab.registry import ConfigError, Registry

TARGETS = ("image", "zero")
MASK_FILL = 0.5  # the repainted region of the inpainting pipeline's masked image: 0 on [−1, 1]


@dataclass(frozen=True)
class Immunizer:
    """``apply(model, images, *, targets, masks, generator)`` → immunized images in [0, 1].

    ``model``: a ``LatentAutoencoder`` (``needs == "autoencoder"``) or an ``editing.diffusion.SDModel``
    (``needs == "pipeline"``); ``images`` (N, 3, H, W) in [0, 1]; ``targets`` the target photos (same
    shape) where the objective has one; ``masks`` bool (N, 1, H, W), True where an edit repaints.
    """

    apply: Callable[..., torch.Tensor]
    needs: str = "autoencoder"
    targeted: bool = False


IMMUNIZERS: Registry[Callable[..., Immunizer]] = Registry("immunizer")


def build_immunizer(name: str, **options) -> Immunizer:
    return IMMUNIZERS.build(name, **options)


def photoguard_schedule(step_size: float, steps: int) -> Callable[[int], float]:
    """PhotoGuard's step at iteration i of ``steps``: α − (α − α/100)·i/steps (α at the first, ≈ α/100 at the last)."""
    return lambda i: step_size - (step_size - step_size / 100) * i / steps


def check_budget(name: str, epsilon: float, step_size: float, steps: int) -> None:
    for option, value in (("epsilon", epsilon), ("step_size", step_size)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ConfigError(f"immunizer '{name}': {option} must be a number > 0; got {value!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ConfigError(f"immunizer '{name}': steps must be an integer >= 0; got {steps!r}")


def masked_input(images: torch.Tensor, masks: torch.Tensor | None) -> torch.Tensor:
    """What an inpainting pipeline encodes: the photo with its repainted region filled (``MASK_FILL``)."""
    return images if masks is None else images.masked_fill(masks, MASK_FILL)


@IMMUNIZERS.register("none")
def no_immunizer() -> Immunizer:
    """The clean photo: the control row of every table."""
    return Immunizer(apply=lambda model, images, **_: images.clone())


@IMMUNIZERS.register("encoder")
def encoder_attack(*, epsilon: float = 0.03, step_size: float = 0.01, steps: int = 1000, decay: bool = True,
                   target: str = "image") -> Immunizer:
    """PhotoGuard's encoder attack: L∞ ``epsilon``, ``steps`` sign steps of ``step_size`` (decayed when ``decay``),
    towards the target photo's latent (``target="image"``) or the zero latent (``"zero"``)."""
    name = "encoder" if target == "image" else "encoder-zero"
    if target not in TARGETS:
        raise ConfigError(f"immunizer 'encoder': target must be one of {', '.join(TARGETS)}; got {target!r}")
    check_budget(name, epsilon, step_size, steps)
    schedule = photoguard_schedule(step_size, steps) if decay else step_size

    def apply(model: LatentAutoencoder, images: torch.Tensor, *, targets: torch.Tensor | None = None,
              masks: torch.Tensor | None = None, generator: torch.Generator) -> torch.Tensor:
        with torch.no_grad():
            if target == "zero":
                goal = torch.zeros_like(model.encode(masked_input(images[:1], None if masks is None else masks[:1])))
            elif targets is None:
                raise ValueError(f"immunizer '{name}' needs target photos")
            else:
                goal = model.encode(targets)

        def loss(perturbed: torch.Tensor) -> torch.Tensor:
            # One norm an example (PhotoGuard's ‖·‖ over its batch of one), so no photo's step depends on another's.
            return (model.encode(masked_input(perturbed, masks)) - goal).flatten(1).norm(dim=1)

        keep = None if masks is None else ~masks
        delta = pgd(loss, images, norm="linf", epsilon=epsilon, step_size=schedule, steps=steps, minimize=True,
                    start="random", generator=generator, mask=keep, box=(0.0, 1.0))
        return images + delta

    return Immunizer(apply=apply, targeted=target == "image")


IMMUNIZERS.register("encoder-zero")(functools.partial(encoder_attack, target="zero"))


def immunize_photos(photos, immunizer: str, model, *, options: dict | None = None, seed: int = 0,
                    device: str | torch.device = "cpu"):
    """``photos`` (a ``PhotoSet``) immunized by ``immunizer`` against ``model``, saved-ready as uint8.

    Targets (targeted immunizers): each photo's target is the next photo of the set (the last's, the
    first) — PhotoGuard attacks towards one other photo; with no photo to spare outside the set, the
    set's own are used, rolled by one. The seed gives the random start (``torch.Generator``).
    """
    options = dict(options or {})
    attack = build_immunizer(immunizer, **options)
    images = photos.tensor(device)
    if attack.targeted and len(photos) < 2:
        raise ConfigError(f"immunizer '{immunizer}' needs at least two photos: each is pulled towards another's latent")
    targets = next_photos(images) if attack.targeted else None
    generator = torch.Generator(device="cpu").manual_seed(seed)
    immunized = attack.apply(model, images, targets=targets, masks=photos.mask_tensor(device), generator=generator)
    target = "next photo" if attack.targeted else "none" if immunizer == "none" else "zero"
    return photos.with_images(immunized, immunizer=immunizer, immunizer_options=options, immunizer_seed=seed,
                              target=target, immunized_against=getattr(model, "name", type(model).__name__))


def next_photos(images: torch.Tensor) -> torch.Tensor:
    """Each photo's target: the next photo of the set, the last's the first."""
    return images.roll(-1, 0)


def target_photos(clean, immunized) -> torch.Tensor | None:
    """The targets ``immunized`` (a ``PhotoSet`` from ``immunize_photos``) was pulled towards, from the clean
    ``PhotoSet``; None for an untargeted immunizer (its target is the zero latent) — what metrics need."""
    return next_photos(clean.tensor()) if immunized.meta.get("target") == "next photo" else None
