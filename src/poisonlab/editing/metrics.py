"""What JPEG leaves of an immunization, each number beside the clean photo's JPEG (the control).

Attack progress towards the target latent (the immunizer's own objective), per photo:

    p(input) = 1 − ‖E(input) − z_t‖ / ‖E(x) − z_t‖,

with x the clean photo, z_t the target photo's latent (``encoder``) or 0 (``encoder-zero``): 0 for
the clean photo, 1 at the target. The **retained** fraction after JPEG at quality q is
p(JPEG_q(x′)) / p(x′). The pitfall (design note, measured on TAEF2): JPEG moves a *clean* latent a
lot by itself (18–24% of its norm at q95), so "distance from the clean latent" mistakes compression
for the attack. Every cell therefore carries the control p(JPEG_q(x)) — how far towards the target
JPEG alone moves the clean photo — and ``retained_net`` = (p(JPEG_q(x′)) − p(JPEG_q(x))) / p(x′),
with the latent shifts ‖E(·) − E(x)‖ / ‖E(x)‖ of both.

Image quality: PSNR and SSIM (``poisonlab.image_quality``: kornia's, data range 1, SSIM's 11 px
Gaussian window with σ 1.5, "same" padding) of the inputs against the clean photo, and of the edited
outputs against the clean photo's edit.
"""

from __future__ import annotations

import statistics
from typing import Any

import torch

from poisonlab.editing.autoencoders import LatentAutoencoder
from poisonlab.editing.edits import BATCH, Editor
from poisonlab.image_quality import psnr, ssim


@torch.no_grad()
def encode(model: LatentAutoencoder, images: torch.Tensor) -> torch.Tensor:
    return torch.cat([model.encode(chunk) for chunk in images.split(BATCH)]).flatten(1)


def progress(latents: torch.Tensor, clean: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
    """1 − ‖latents − goal‖ / ‖clean − goal‖ per photo (flattened latents)."""
    return 1 - (latents - goal).norm(dim=1) / (clean - goal).norm(dim=1)


def shift(latents: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    """‖latents − clean‖ / ‖clean‖ per photo."""
    return (latents - clean).norm(dim=1) / clean.norm(dim=1)


def _finite(values: torch.Tensor) -> list[float]:
    # JSON has no inf: an input identical to the clean photo (PSNR inf) is recorded as 100 dB.
    return [min(float(v), 100.0) for v in values]


def cell_metrics(model: LatentAutoencoder, editor: Editor, *, clean: torch.Tensor, immunized: torch.Tensor,
                 purified: torch.Tensor, purified_clean: torch.Tensor, targets: torch.Tensor | None,
                 masks: torch.Tensor | None = None, prompts=None) -> dict[str, list[float]]:
    """Per-photo numbers of one (immunizer, JPEG quality) cell; all images (N, 3, H, W) in [0, 1].

    ``purified``: JPEG_q of the immunized photos; ``purified_clean``: JPEG_q of the clean ones (the
    control); without JPEG pass ``immunized`` and ``clean`` again. ``targets``: the target photos, or
    None for the zero latent.
    """
    z_clean, z_immunized = encode(model, clean), encode(model, immunized)
    z_purified, z_control = encode(model, purified), encode(model, purified_clean)
    goal = encode(model, targets) if targets is not None else torch.zeros_like(z_clean)
    p_immunized = progress(z_immunized, z_clean, goal)
    p_purified, p_control = progress(z_purified, z_clean, goal), progress(z_control, z_clean, goal)
    edit_clean = editor.apply(clean, masks=masks, prompts=prompts)
    edit_purified = editor.apply(purified, masks=masks, prompts=prompts)
    edit_control = editor.apply(purified_clean, masks=masks, prompts=prompts)
    rows = {
        "progress_immunized": p_immunized, "progress": p_purified, "progress_control": p_control,
        "retained": p_purified / p_immunized, "retained_net": (p_purified - p_control) / p_immunized,
        "latent_shift": shift(z_purified, z_clean), "latent_shift_control": shift(z_control, z_clean),
        "input_psnr": psnr(purified, clean), "input_psnr_control": psnr(purified_clean, clean),
        "input_ssim": ssim(purified, clean), "input_ssim_control": ssim(purified_clean, clean),
        "edit_psnr": psnr(edit_purified, edit_clean), "edit_psnr_control": psnr(edit_control, edit_clean),
        "edit_ssim": ssim(edit_purified, edit_clean), "edit_ssim_control": ssim(edit_control, edit_clean),
    }
    if targets is not None:  # how close the edit came to the target photo's (PhotoGuard's aim)
        edit_target = editor.apply(targets, masks=masks, prompts=prompts)
        rows["edit_psnr_to_target"] = psnr(edit_purified, edit_target)
        rows["edit_psnr_to_target_control"] = psnr(edit_control, edit_target)
    return {key: _finite(values) for key, values in rows.items()}


def control_metrics(model: LatentAutoencoder, editor: Editor, *, clean: torch.Tensor, purified_clean: torch.Tensor,
                    targets: torch.Tensor, masks: torch.Tensor | None = None, prompts=None) -> dict[str, list[float]]:
    """Per-photo numbers of the control row: the clean photos as purified (``purified_clean``), no attack.

    ``progress`` is how far the purification alone moves the clean latent towards ``targets``' (the
    targeted rows' goal). A clean photo has no attack progress to keep, so its ``retained`` is that
    progress itself, on the same scale as an attack row's retained (1 = at the target): the control the
    jpeg-sweep table sets beside the attack rows. The other keys are the attack rows' (``cell_metrics``).
    """
    z_clean, z_control, goal = encode(model, clean), encode(model, purified_clean), encode(model, targets)
    p_control = progress(z_control, z_clean, goal)
    edit_clean = editor.apply(clean, masks=masks, prompts=prompts)
    edit_control = editor.apply(purified_clean, masks=masks, prompts=prompts)
    rows = {"progress": p_control, "retained": p_control, "latent_shift": shift(z_control, z_clean),
            "input_psnr": psnr(purified_clean, clean), "input_ssim": ssim(purified_clean, clean),
            "edit_psnr": psnr(edit_control, edit_clean), "edit_ssim": ssim(edit_control, edit_clean)}
    return {key: _finite(values) for key, values in rows.items()}


def summarize(per_photo: dict[str, list[float]]) -> dict[str, Any]:
    """Mean and standard deviation over photos of every metric (std 0 for one photo)."""
    summary: dict[str, Any] = {}
    for key, values in per_photo.items():
        summary[key] = statistics.fmean(values)
        summary[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
    return summary
