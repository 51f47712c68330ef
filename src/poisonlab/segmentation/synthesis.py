"""Image synthesis with a segmentation net's gradients: inpainting and generation, scored by what does not optimise.

The paper's claim (Sandoval-Segura 2022, abstract): with "a simple
optimizer", adversarially trained segmentation nets inpaint and generate
plausible images, standard ones do not. Its procedure is not public; this is
the reconstruction of design note §1.3 after Santurkar et al. 2019
(MadryLab/robustness_applications ``inpainting.ipynb``):

- inpainting: the hole (``mask`` True) starts at the image's mean and only it
  moves — the unmasked pixels stay bit-identical, the λ → ∞ limit of
  Santurkar's penalty on them; the loss is the pixel-wise cross-entropy of the
  whole canvas against the target map (the ground truth), minimised;
- generation: every pixel starts as uniform noise and moves towards a target
  map;
- the target is the ground-truth map (``map``) or, by default on the canvases,
  ``box``: each digit's bounding box filled with its class (``shapeless``) —
  the canvases' maps draw the digit's exact stroke, which any net reproduces;
  a box asks the net for the digit's identity alone, and its shape is then
  the net's gradients' own;
- the optimiser is a name (``SYNTHESIS_OPTIMIZERS``): ``adam`` on the pixels,
  or ``pgd-l2``, Santurkar's L2 steps (``attacks.pgd`` with no ball and
  ``minimize``); both keep the image in [0, 1].

The metrics do not trust the optimising net: whether an independently trained
MNIST classifier (the main job's clean run) recognises the digit drawn in
a cell; PSNR and SSIM of the inpainted box against the original; the mIoU of
the result under an independently seeded standard segmentation net (transfer).
The optimising net's own mIoU is the control: it is high for every model.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from poisonlab.attacks import pgd, project
from poisonlab.image_quality import psnr, ssim
from poisonlab.registry import ConfigError, Registry
from poisonlab.segmentation.data import CELL, IGNORE
from poisonlab.training import optim
from poisonlab.segmentation.metrics import confusion, predict, scores
from poisonlab.segmentation.robustness import pixel_loss

# (loss of the image → per-image loss, start image in [0, 1], mask or None, steps, lr, generator) → final image
Optimizer = Callable[..., torch.Tensor]
SYNTHESIS_OPTIMIZERS: Registry[Optimizer] = Registry("synthesis optimizer")


@SYNTHESIS_OPTIMIZERS.register("adam")
def adam(loss, x: torch.Tensor, mask: torch.Tensor | None, *, steps: int, lr: float) -> torch.Tensor:
    """Adam on the pixels; the gradient outside ``mask`` is zeroed and the image projected back into [0, 1]."""
    delta = torch.zeros_like(x, requires_grad=True)
    optimizer = optim.Adam([delta], lr=lr)
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        loss(x + delta).sum().backward()
        if mask is not None:
            delta.grad.masked_fill_(~mask, 0)  # Adam then leaves those coordinates exactly where they are
        optimizer.step()
        with torch.no_grad():
            delta.copy_(project(delta, x, mask=mask))
    return (x + delta).detach()


@SYNTHESIS_OPTIMIZERS.register("pgd-l2")
def pgd_l2(loss, x: torch.Tensor, mask: torch.Tensor | None, *, steps: int, lr: float) -> torch.Tensor:
    """Santurkar et al.'s L2 steps of length ``lr``, minimising, no ball (the box [0, 1] alone)."""
    delta = pgd(loss, x, norm="l2", epsilon=math.inf, step_size=lr, steps=steps, minimize=True, mask=mask)
    return x + delta


def _check(optimizer: str, steps: int, lr: float) -> None:
    SYNTHESIS_OPTIMIZERS.get(optimizer)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1 or not lr > 0:
        raise ConfigError(f"synthesis needs steps an integer >= 1 and lr > 0; got {steps!r}, {lr!r}")


def hole_start(x01: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``x01`` with its hole set to the image's mean (per channel): where inpainting starts."""
    return torch.where(mask, x01.float().mean((2, 3), keepdim=True).expand_as(x01), x01.float())


def inpaint(model: nn.Module, x01: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, normalize: Callable, *,
            optimizer: str = "adam", steps: int = 200, lr: float = 0.05) -> torch.Tensor:
    """Fill the hole of ``x01`` (mask True, (B, 1, H, W)) so that ``model`` segments the image as ``target``."""
    _check(optimizer, steps, lr)
    model.eval()
    start = hole_start(x01, mask)
    loss = lambda x: pixel_loss(model(normalize(x * 255)), target)  # noqa: E731
    return SYNTHESIS_OPTIMIZERS.get(optimizer)(loss, start, mask, steps=steps, lr=lr)


def generate(model: nn.Module, target: torch.Tensor, normalize: Callable, *, channels: int, generator: torch.Generator,
             optimizer: str = "adam", steps: int = 300, lr: float = 0.05) -> torch.Tensor:
    """An image from uniform noise that ``model`` segments as ``target`` (B, H, W)."""
    _check(optimizer, steps, lr)
    model.eval()
    shape = (len(target), channels, *target.shape[-2:])
    start = torch.rand(shape, generator=generator, device=generator.device).to(target.device)
    loss = lambda x: pixel_loss(model(normalize(x * 255)), target)  # noqa: E731
    return SYNTHESIS_OPTIMIZERS.get(optimizer)(loss, start, None, steps=steps, lr=lr)


# ---------------------------------------------------------------- tasks on the canvases


def digit_cells(maps: torch.Tensor) -> torch.Tensor:
    """(M, 4) rows (image, cell row, cell column, digit) for every 28×28 cell of ``maps`` holding a digit."""
    n, h, w = maps.shape
    cells = maps.reshape(n, h // CELL, CELL, w // CELL, CELL).amax((2, 4)).long()  # the cell's class (digit + 1)
    image, row, col = torch.nonzero(cells > 0, as_tuple=True)
    return torch.stack([image, row, col, cells[image, row, col] - 1], 1)


def shapeless(maps: torch.Tensor) -> torch.Tensor:
    """``maps`` with each digit cell's stroke replaced by its bounding box, filled with the digit's class.

    On the canvases the label map is a function of the pixels, so the ground-truth map draws the digit's
    exact shape: optimising pixels towards it reproduces the stroke whatever the net knows, and an
    independent classifier then recognises the map, not the net. This target keeps where the digit is and
    which it is, and leaves its shape to the net's gradients — the perceptual-alignment test.
    """
    out = maps.clone()
    for i, r, c, digit in digit_cells(maps).tolist():
        cell = maps[i, r * CELL:(r + 1) * CELL, c * CELL:(c + 1) * CELL]
        rows, cols = torch.nonzero(cell > 0, as_tuple=True)
        out[i, r * CELL + rows.min():r * CELL + rows.max() + 1, c * CELL + cols.min():c * CELL + cols.max() + 1] = \
            digit + 1
    return out


TARGETS = {"map": lambda maps: maps, "box": shapeless}  # what synthesis is asked to produce (see ``shapeless``)


def crop_cells(images: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
    """The 28×28 crops (M, C, 28, 28) of ``images`` at ``cells``' (image, row, column)."""
    return torch.stack([images[i, :, r * CELL:(r + 1) * CELL, c * CELL:(c + 1) * CELL]
                        for i, r, c, _ in cells.tolist()])


def inpainting_tasks(maps: torch.Tensor, count: int, *, hole: int = 16, seed: int = 0
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``count`` canvases (indices), each with one digit cell's central ``hole``×``hole`` square as the mask.

    Returns (canvas indices (count,), masks (count, 1, H, W) bool, cells (count, 4) as ``digit_cells`` but
    indexing the chosen canvases 0 … count − 1); the first digit cell of each canvas, canvases drawn without
    replacement by ``seed``.
    """
    if not 0 < hole <= CELL:
        raise ConfigError(f"inpainting hole must lie in [1, {CELL}]; got {hole}")
    cells = digit_cells(maps)
    canvases = torch.unique(cells[:, 0])
    if len(canvases) < count:
        raise ConfigError(f"inpainting wants {count} canvases with a digit; the set has {len(canvases)}")
    order = np.random.default_rng(seed).permutation(len(canvases))[:count]
    chosen = torch.stack([cells[cells[:, 0] == canvases[k]][0] for k in order.tolist()])
    masks = torch.zeros(count, 1, *maps.shape[-2:], dtype=torch.bool, device=maps.device)
    offset = (CELL - hole) // 2
    for k, (_, r, c, _) in enumerate(chosen.tolist()):
        top, left = r * CELL + offset, c * CELL + offset
        masks[k, :, top:top + hole, left:left + hole] = True
    cells = torch.cat([torch.arange(count, device=chosen.device)[:, None], chosen[:, 1:]], 1)  # rows of the subset
    return chosen[:, 0], masks, cells


# ---------------------------------------------------------------- metrics that do not trust the optimising net


def recognisability(classifier: nn.Module, normalize: Callable, images01: torch.Tensor, cells: torch.Tensor) -> float:
    """Percent of ``cells`` whose 28×28 crop of ``images01`` the independent ``classifier`` calls their digit.

    ``normalize`` maps [0, 255] pixels to the classifier's input, as its training run did.
    """
    crops = crop_cells(images01, cells)
    classifier.eval()
    with torch.no_grad():
        predicted = classifier(normalize(crops * 255)).argmax(1)
    return 100.0 * (predicted == cells[:, 3].to(predicted.device)).float().mean().item()


def region_quality(result01: torch.Tensor, original01: torch.Tensor, masks: torch.Tensor) -> dict[str, float]:
    """PSNR (dB) and SSIM (``poisonlab.image_quality``) of each mask's bounding box against the original,
    averaged over images."""
    psnrs, ssims = [], []
    for result, original, mask in zip(result01, original01, masks):
        rows, cols = torch.nonzero(mask[0], as_tuple=True)
        box = (slice(None), slice(rows.min().item(), rows.max().item() + 1),
               slice(cols.min().item(), cols.max().item() + 1))
        a, b = result[box][None].float(), original[box][None].float()
        psnrs.append(psnr(a, b).item())
        ssims.append(ssim(a, b).item())
    return {"psnr": float(np.mean(psnrs)), "ssim": float(np.mean(ssims))}


def map_agreement(model: nn.Module, normalize: Callable, images01: torch.Tensor, target: torch.Tensor,
                  num_classes: int, region: torch.Tensor | None = None) -> float:
    """mIoU (percent) of ``model``'s segmentation of ``images01`` against ``target``, inside ``region`` if given.

    With the optimising net, the control; with an independently seeded standard net, the transfer mIoU.
    """
    if region is not None:
        target = target.where(region[:, 0], IGNORE)
    predicted = predict(model, images01 * 255, normalize, batch_size=64)
    return scores(confusion(predicted, target, num_classes))["miou"]
