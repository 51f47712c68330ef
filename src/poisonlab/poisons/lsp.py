"""LSP: linearly separable synthetic perturbations (Yu et al., "Availability Attacks Create Shortcuts", KDD 2022).

The paper shows that availability poisons work because their perturbations are
linearly separable by class, and builds that shortcut directly:

1. draw low-dimensional points from a Gaussian mixture with one cluster a class
   (sklearn's ``make_classification``: every feature informative, ``class_sep``
   10, one cluster a class, no label noise, as the authors' code calls it);
   there are (H/p)·(W/p)·C features, one a patch and channel (48 on CIFAR with
   8×8 patches);
2. upsample each point to an image by repeating every feature over a p×p patch;
3. scale each image's perturbation to an exact L2 norm over all its pixels and
   channels, add it, clamp to [0, 1].

The budget: the authors set the L2 norm to that of an L∞ budget of 6/255 spread
over every entry, ε = sqrt(H·W·C)·6/255 = 1.3041 on 32×32×3 images (their
``comput_l2norm_lim(6/255, 3072)``); it is the default here. The same rule gives
ε = 9.13 for ImageNet-100 at 224×224 (patch 32 in the APBench port).

Stored as the original stores it (``synthetic_perturbations/cifar_train.py``:
``np.clip(x·255, 0, 255).astype(np.uint8)``, a truncation): floor(x·255), not
the nearest level.

Each image gets its own point from its class's cluster, as in the original: the
perturbations differ within a class but the clusters are far apart, so they are
linearly separable by class, which is what the attack relies on. The generator
seeds sklearn; the original's row and feature shuffling is dropped (it only
relabels points and patches, the distribution is the same). Where the paper is
silent: a patch size that does not divide the image is refused (the authors'
code cannot reshape it either), and every class gets as many points as the
largest class needs (the original drew one data set's worth and doubled it for
the unbalanced SVHN so that no class ran short).
"""

from __future__ import annotations

import math
from typing import Annotated

import torch

from poisonlab.checks import DividesImage, Number, Positive
from poisonlab.poisons.base import POISONS, floor_to_levels
from poisonlab.registry import ConfigError

# The authors' L2 budget on CIFAR: an L∞ of 6/255 spread over 32·32·3 entries.
CIFAR_L2 = math.sqrt(32 * 32 * 3) * 6 / 255
CLASS_SEP = 10.0
PatchSize = Annotated[int, Number(ge=1, integer=True), DividesImage()]


def _check_patch(patch_size: int, shape: torch.Size, num_classes: int) -> tuple[int, int]:
    """Rows and columns of patches; the patch size itself is checked by the registry (``PatchSize``)."""
    _, channels, height, width = shape
    rows, cols = height // patch_size, width // patch_size
    # make_classification puts the class centroids on distinct hypercube vertices: 2**features of them.
    if 2 ** (rows * cols * channels) < num_classes:
        raise ConfigError(f"poison 'lsp': patch_size {patch_size} leaves {rows * cols * channels} features, "
                          f"too few for {num_classes} classes; use a smaller patch_size")
    return rows, cols


def _rank_in_class(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Each image's index among the images of its class, in dataset order."""
    order = torch.argsort(labels, stable=True)
    counts = torch.bincount(labels, minlength=num_classes)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(labels)
    rank[order] = torch.arange(len(labels), device=labels.device) - starts[labels[order]]
    return rank


def lsp_perturbation(labels: torch.Tensor, shape: torch.Size, *, num_classes: int, generator: torch.Generator,
                     patch_size: int, epsilon: float) -> torch.Tensor:
    """The (N, C, H, W) perturbations before they are added: patch-wise constant, each of L2 norm ``epsilon``."""
    rows, cols = _check_patch(patch_size, shape, num_classes)
    channels = shape[1]
    features = rows * cols * channels
    per_class = int(torch.bincount(labels, minlength=num_classes).max()) if len(labels) else 0
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator, device=generator.device))
    # Imported here: every job that trains imports the poisons registry, and scikit-learn costs it ~2 s.
    from sklearn.datasets import make_classification

    # Without shuffling, make_classification returns the clusters in class order, each at least per_class
    # points long (the extra point a class absorbs its float rounding of n_samples / n_classes).
    points, owner = make_classification(
        n_samples=num_classes * (per_class + 1), n_features=features, n_informative=features, n_redundant=0,
        n_repeated=0, n_classes=num_classes, n_clusters_per_class=1, class_sep=CLASS_SEP, flip_y=0.0,
        shuffle=False, random_state=seed)
    owner = torch.from_numpy(owner).to(labels.device)
    first = torch.searchsorted(owner, torch.arange(num_classes, device=labels.device))
    chosen = torch.from_numpy(points).to(labels.device)[first[labels] + _rank_in_class(labels, num_classes)]
    # Each feature fills patch_size² entries, so the image's L2 norm is patch_size times the point's: scale
    # the point (in float64) before upsampling, and the float32 image sits at the budget to ~1e-7.
    chosen = (chosen * (epsilon / (patch_size * chosen.norm(dim=1, keepdim=True)))).float()
    # Features are laid out (row, column, channel) as in the authors' reshape to an HWC image.
    patches = chosen.view(-1, rows, cols, channels).permute(0, 3, 1, 2)
    return patches.repeat_interleave(patch_size, dim=2).repeat_interleave(patch_size, dim=3)


@POISONS.register("lsp")
def lsp(images: torch.Tensor, labels: torch.Tensor, *, num_classes: int, generator: torch.Generator,
        patch_size: PatchSize = 8, epsilon: Positive = CIFAR_L2) -> torch.Tensor:
    """Add class-clustered, patch-wise constant noise of L2 norm ``epsilon`` to each image, clamp."""
    delta = lsp_perturbation(labels, images.shape, num_classes=num_classes, generator=generator,
                             patch_size=patch_size, epsilon=epsilon)
    return floor_to_levels(delta.to(images.device).add_(images))  # clamped, floored as the original saves it

