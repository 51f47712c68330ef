"""``ortho``: the orthogonal projection attack on an unlearnable training set.

Sandoval-Segura et al., "What Can We Learn from Unlearnable Datasets?"
(NeurIPS 2023). A linear classifier fitted to the poisoned images learns the
class-wise shortcut, so its weight vectors point along the perturbations;
removing those directions from every image removes the shortcut:

1. fit a bias-free linear model (K × D, D = C·H·W) on the flattened,
   unnormalised poisoned images in [0, 1], cross-entropy;
2. L2-normalise the rows of W, QR-decompose Wᵀ into an orthonormal basis Q
   (D × K) of their span;
3. X ← X − Q Qᵀ X for every image.

Settings from the authors' code (``orthogonal_projection_step_1.py``): plain
SGD (no momentum, no weight decay) at lr 0.1, batch 1024, 20 epochs, the rate
×0.1 after 50% and 75% of the epochs, nn.Linear's initialisation. They then
train ResNet-18 on the projected training images; the test images stay as
they are.

What counts is the number of SGD steps, not epochs: the defaults make ~1,000
on CIFAR-10's 50,000 images but 40 on a 2,000-image subset, after which the
weights are still near the class means and projecting them out wrecks the
images (measured with smallcnn on such a subset: OPS 25% → 22%, AR 37% → 18%);
batches of 40 restore the ~1,000 steps there (OPS → 46%, clean 48.5%). Give
small sets a smaller ``batch_size`` (or more ``epochs``). AR, the paper's
example of perturbations that are not linearly separable, is not undone
either way (37% → 30% with batches of 40).

The fit runs through the training code: the training loop's step
(``training.loop.train_step``) with the optimizer and step schedule of a
``Recipe``. Chosen where the code is silent or differs: the batches are drawn
in a new seeded order every epoch (theirs iterate the set in its stored order,
which in a class-sorted container would be one class a batch), and the initial
weights come from the same generator, so the seed fixes the result.

The projected images leave [0, 1] (1.5% of the values on OPS- or LSP-poisoned
CIFAR, 40% after the 40 steps above), so the sanitizer is ``off_grid``: stored
as float16, not rounded to the uint8 grid.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from poisonlab.checks import Count, Positive
from poisonlab.defenses.base import DEFENSES, Sanitizer
from poisonlab.training.loop import shuffled_batches, train_step
from poisonlab.training.recipe import Recipe


def fit_linear(features: torch.Tensor, labels: torch.Tensor, num_classes: int, generator: torch.Generator, *,
               epochs: int = 20, lr: float = 0.1, batch_size: int = 1024) -> torch.Tensor:
    """The (K, D) weights of a bias-free linear classifier fitted to ``features`` (N, D) by plain SGD."""
    dim = features.shape[1]
    # nn.Linear's default initialisation, U(−1/√D, 1/√D), drawn from the generator.
    bound = 1 / math.sqrt(dim)
    weights = torch.rand(num_classes, dim, generator=generator, device=generator.device)
    weights = nn.Parameter(weights.to(features.device).mul_(2 * bound).sub_(bound))
    # Plain SGD, ×0.1 after 50% and 75% of the epochs (MultiStepLR's milestones, as the authors set them).
    recipe = Recipe(epochs=epochs, batch_size=batch_size, optimizer="sgd", lr=lr, momentum=0.0, weight_decay=0.0,
                    schedule="step", milestones=(int(epochs * 0.5), int(epochs * 0.75)))
    optimizer = recipe.make_optimizer([weights])
    scheduler = recipe.make_scheduler(optimizer, steps_per_epoch=-(-len(features) // batch_size))
    labels = labels.to(features.device)
    for _ in range(epochs):
        for batch in shuffled_batches(len(features), batch_size, generator, features.device):
            train_step(F.cross_entropy(features[batch] @ weights.T, labels[batch]), optimizer, scheduler)
    return weights.detach()


def class_basis(weights: torch.Tensor) -> torch.Tensor:
    """An orthonormal (D, K) basis of the span of the L2-normalised rows of ``weights`` (K, D)."""
    # In float64: the basis defines what "orthogonal" means for the stored images.
    normalised = F.normalize(weights.double(), dim=1)
    basis, _ = torch.linalg.qr(normalised.T)
    return basis


def project_out(images: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """Each image minus its component in the span of ``basis`` (D, K): X − Q Qᵀ X."""
    flat = images.flatten(1)
    basis = basis.to(flat)
    return torch.addmm(flat, flat @ basis, basis.T, alpha=-1).view_as(images)


@DEFENSES.register("ortho", level="data")
def ortho(*, epochs: Count = 20, lr: Positive = 0.1, batch_size: Count = 1024) -> Sanitizer:
    """Remove the span of a linear classifier's class weights from every training image (off the uint8 grid)."""

    def apply(images: torch.Tensor, labels: torch.Tensor, *, num_classes: int,
              generator: torch.Generator) -> torch.Tensor:
        weights = fit_linear(images.flatten(1), labels, num_classes, generator, epochs=epochs, lr=lr,
                             batch_size=batch_size)
        return project_out(images, class_basis(weights))

    return Sanitizer(apply=apply, off_grid=True)
