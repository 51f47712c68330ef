"""Editors: what a would-be editor does with a photo, registered by name (``EDITORS``).

- ``roundtrip``: encode then decode with a latent autoencoder — the first and last stage of every
  latent-diffusion edit, and the only edit at the embedded scale (no diffusion model there).
- ``sd-img2img``, ``sd-inpaint``: Stable Diffusion's edits with PhotoGuard's prompts, seeds and
  strengths (``editing.diffusion``; paper scale).

An ``Editor`` maps images (N, 3, H, W) in [0, 1], with optional masks (bool (N, 1, H, W), True where
it repaints) and prompts, to edited images in [0, 1]; the same seed for every input, so the edit of
an immunized photo and of the clean one differ only by their inputs (PhotoGuard's comparison).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from poisonlab.editing.autoencoders import LatentAutoencoder
from poisonlab.registry import Registry

BATCH = 16  # photos a forward pass: a paper-scale 512 px batch stays within memory


@dataclass(frozen=True)
class Editor:
    apply: Callable[..., torch.Tensor]  # (images, *, masks=None, prompts=None) → edited images in [0, 1]
    name: str


EDITORS: Registry[Callable[..., Editor]] = Registry("editor")


def build_editor(name: str, /, *args, **options) -> Editor:
    return EDITORS.build(name, *args, **options)


@EDITORS.register("roundtrip")
def roundtrip(autoencoder: LatentAutoencoder) -> Editor:
    """D(E(x)): what the autoencoder makes of a photo before any denoising."""

    @torch.no_grad()
    def apply(images: torch.Tensor, *, masks: torch.Tensor | None = None,
              prompts: Sequence[str] | None = None) -> torch.Tensor:
        return torch.cat([autoencoder.decode(autoencoder.encode(chunk)) for chunk in images.split(BATCH)])

    return Editor(apply=apply, name="roundtrip")
