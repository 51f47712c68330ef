"""Autoregressive (AR) poisons: ``ar`` (L2) and ``ar-linf`` (L∞).

Sandoval-Segura et al., "Autoregressive Perturbations for Data Poisoning"
(NeurIPS 2022). Each class owns one AR process; every image of the class gets
its own noise from that process (sample-wise noise, class-wise process):

- a process is 8 coefficients a channel on a 3×3 window whose last entry (the
  current pixel) is 0; each channel is an independent process;
- the noise starts as randn on a map 4 px larger than the image (36×36 for
  CIFAR), is filled in raster order, each pixel the coefficients' weighted sum
  of the 8 pixels above and to its left, and the first 4 rows and columns are
  cropped off (32×32);
- ``ar`` scales each image's noise to an exact L2 norm ε = 1.0 (the paper's
  CIFAR-10/100 and SVHN budget; STL-10 uses 3.0), ``ar-linf`` to an exact L∞
  norm ε = 8/255; the noise is added and the image clamped to [0, 1].

Both are ``autoregressive`` with ``norm`` fixed by their registrations; the
default ``epsilon`` follows the norm.

Coefficients (option ``coefficients``): "published" loads the authors' files
from ``coefficients_path`` (default ``../shared/data/ar-coefficients`` beside
the repository): ``params-classes-10-mr-10.pt`` is a list of 10 tensors
(3, 3, 3), ``params-classes-100-mr-3.pt`` one tensor (100, 3, 3, 3), both
[class][channel, row, column] with entry [2, 2] = 0 and each channel's 8
coefficients summing to 1 ("mr": the least response to another class's filter
the authors' search demanded). "search" runs ``search_coefficients``, written
from the paper's description: randn coefficients normalised to sum to 1 a
channel, keep processes whose noise does not diverge, and pick classes that a
linear filter tells apart: a process's prediction-error filter (coefficients
with −1 at the current pixel) maps its own noise to 0 and other classes' noise
far from 0. "auto" (default) is "published" for 10 or 100 classes of 3
channels, else "search" (MNIST's one channel).

Chosen where the paper is silent: the stability bound (per-pixel RMS of the
unscaled noise ≤ 2.5 times that of the randn start; the published 10-class
set reaches 2.47), a pool of 8 stable candidates a class with a greedy max-min
choice instead of a fixed response threshold, and the RMS response on unit-RMS
noise as the separation. Only the 2(H+W)+12 start values the fill reads are
drawn (the rest of the randn map is overwritten unread), and the fill runs once
on unit impulses: the noise is linear in its start values, so each image's
noise is one matrix product, the raster fill (``ar_fill``) up to rounding.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Annotated

import torch
import torch.nn.functional as F

from poisonlab.checks import Number, OneOf
from poisonlab.poisons.base import POISONS, single_thread
from poisonlab.registry import ConfigError

CROP = 4  # the map is 4 px larger than the image; its first 4 rows and columns are dropped
DEFAULT_COEFFICIENTS_PATH = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "ar-coefficients"
PUBLISHED = {(10, 3): "params-classes-10-mr-10.pt", (100, 3): "params-classes-100-mr-3.pt"}  # (classes, channels)
SOURCES = ("auto", "published", "search")
MAX_RMS = 2.5  # stability: per-pixel RMS of the unscaled noise, randn start values having RMS 1
POOL = 8  # stable candidates a class the greedy selection picks from
TRIALS = 2  # noise maps a candidate is judged on
BATCH = 1024  # channel processes drawn a round of the search
MAX_ROUNDS = 200


@single_thread()
def ar_fill(maps: torch.Tensor, coefficients: torch.Tensor) -> torch.Tensor:
    """Fill ``maps`` (H', W', B) in place in raster order; ``coefficients`` (3, 3, B), entry [2, 2] unused.

    Row by row: the 6 terms from the two rows above are one vectorised product over the whole row,
    then the 2 terms from the same row run along it. Rows 0-1 and columns 0-1 keep their start values.
    """
    height, width, _ = maps.shape
    above = torch.empty(width - 2, maps.shape[2], dtype=maps.dtype, device=maps.device)
    for r in range(2, height):
        torch.mul(maps[r - 2, : width - 2], coefficients[0, 0], out=above)
        for a, b in ((0, 1), (0, 2), (1, 0), (1, 1), (1, 2)):
            above.addcmul_(maps[r - 2 + a, b : b + width - 2], coefficients[a, b])
        for c in range(2, width):
            torch.addcmul(above[c - 2], coefficients[2, 0], maps[r, c - 2], out=maps[r, c])
            maps[r, c].addcmul_(coefficients[2, 1], maps[r, c - 1])
    return maps


def start_positions(height: int, width: int) -> torch.Tensor:
    """Flat indices, on the (H+4, W+4) map, of the start values the fill reads: rows 0-1 and columns 0-1."""
    mask = torch.zeros(height + CROP, width + CROP, dtype=torch.bool)
    mask[:2] = True
    mask[:, :2] = True
    return mask.flatten().nonzero().squeeze(1)


def impulse_responses(coefficients: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(K, C, S, H·W): the cropped noise each process makes from a unit impulse at each of the S start values."""
    classes, channels = coefficients.shape[:2]
    positions = start_positions(height, width).to(coefficients.device)
    starts = len(positions)
    maps = coefficients.new_zeros((height + CROP) * (width + CROP), classes, channels, starts)
    maps[positions, :, :, torch.arange(starts, device=coefficients.device)] = 1
    weights = coefficients.permute(2, 3, 0, 1).unsqueeze(-1).expand(3, 3, classes, channels, starts)
    filled = ar_fill(maps.view(height + CROP, width + CROP, -1), weights.reshape(3, 3, -1))
    cropped = filled[CROP:, CROP:].reshape(height * width, classes, channels, starts)
    return cropped.permute(1, 2, 3, 0).contiguous()


@single_thread()
def ar_perturbations(labels: torch.Tensor, coefficients: torch.Tensor, shape: tuple[int, ...],
                     generator: torch.Generator, *, norm: float, epsilon: float) -> torch.Tensor:
    """One noise image a label from its class's process, scaled to exactly ``epsilon`` in the ``norm``-norm."""
    n, channels, height, width = shape
    device = generator.device
    responses = impulse_responses(coefficients.to(device=device, dtype=torch.float32), height, width)
    # Images in label order, so a class is one slice: row i of the start values seeds the i-th image in
    # that order, and a class's noise is one product a channel, scaled in a buffer and copied to its rows.
    labels = labels.to(device)
    order = torch.argsort(labels, stable=True)
    counts = torch.bincount(labels, minlength=len(coefficients)).tolist()
    starts = torch.randn(n, channels, responses.shape[2], generator=generator, device=device)
    delta = torch.empty(n, channels, height * width, device=device)
    buffer = torch.empty(max(counts), channels, height * width, device=device)
    first = 0
    for k, count in enumerate(counts):
        block = buffer[:count]
        for c in range(channels):
            torch.mm(starts[first : first + count, c], responses[k, c], out=block[:, c])
        flat = block.view(count, -1)
        flat.mul_(epsilon / torch.linalg.vector_norm(flat, ord=norm, dim=1, keepdim=True))
        delta.index_copy_(0, order[first : first + count], block)
        first += count
    return delta.view(shape)


def load_published(num_classes: int, channels: int, path: str | Path | None = None, *,
                   poison: str = "ar") -> torch.Tensor:
    """The authors' coefficients for (num_classes, channels) as (K, C, 3, 3), or a ConfigError naming the file."""
    folder = Path(path) if path is not None else DEFAULT_COEFFICIENTS_PATH
    name = PUBLISHED.get((num_classes, channels))
    if name is None:
        known = ", ".join(f"{k} classes × {c} channels" for k, c in PUBLISHED)
        raise ConfigError(f"poison '{poison}': coefficients='published' exists only for {known}; got {num_classes} "
                          f"classes × {channels} channels; use coefficients='search'")
    file = folder / name
    if not file.is_file():
        raise ConfigError(f"poison '{poison}': published coefficients {file} not found; set coefficients_path to the "
                          f"folder holding {name} (../shared/data/ar-coefficients) or use coefficients='search'")
    loaded = torch.load(file, map_location="cpu", weights_only=True)
    coefficients = torch.stack(list(loaded)).float()
    if coefficients.shape != (num_classes, channels, 3, 3) or coefficients[:, :, 2, 2].abs().max() > 0:
        raise ConfigError(f"poison '{poison}': {file} holds shape {tuple(coefficients.shape)}; expected "
                          f"({num_classes}, {channels}, 3, 3) with entry [2, 2] = 0")
    return coefficients


def separation(coefficients: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """R[i, j]: RMS response of process j's prediction-error filter on process i's noise (unit RMS a pixel).

    ``noise`` is (K, T, C, H, W). The filter sums its channels' 3×3 outputs, so R[i, i] is 0 up to
    rounding; its mean square on noise i is the quadratic form of noise i's 3×3 patch covariance.
    """
    classes, trials, channels, height, width = noise.shape
    noise = noise / noise.pow(2).mean((2, 3, 4), keepdim=True).sqrt()
    patches = F.unfold(noise.reshape(classes * trials, channels, height, width), 3)
    covariance = torch.einsum("nal,nbl->nab", patches, patches).view(classes, trials, channels * 9, -1).mean(1)
    filters = coefficients.clone()
    filters[:, :, 2, 2] = -1
    filters = filters.reshape(classes, channels * 9)
    mean_square = torch.einsum("iab,ja,jb->ij", covariance, filters, filters) / patches.shape[-1]
    return mean_square.clamp_min(0).sqrt()


@single_thread()
def search_coefficients(num_classes: int, channels: int, height: int, width: int,
                        generator: torch.Generator) -> torch.Tensor:
    """Stable, mutually separable processes (K, C, 3, 3), drawn from ``generator``."""
    device = generator.device
    needed = POOL * num_classes * channels
    kept, noises = [], []
    for _ in range(MAX_ROUNDS):
        candidates = torch.randn(BATCH, 3, 3, generator=generator, device=device)
        candidates[:, 2, 2] = 0
        candidates /= candidates.sum((1, 2), keepdim=True)  # summing to 1, as the published ones do
        maps = torch.randn(height + CROP, width + CROP, BATCH * TRIALS, generator=generator, device=device)
        weights = candidates.repeat_interleave(TRIALS, 0).permute(1, 2, 0)
        noise = ar_fill(maps, weights)[CROP:, CROP:].permute(2, 0, 1).reshape(BATCH, TRIALS, height, width)
        rms = noise.pow(2).mean((1, 2, 3)).sqrt()
        stable = rms.isfinite() & (rms <= MAX_RMS)
        kept.append(candidates[stable])
        noises.append(noise[stable])
        if sum(map(len, kept)) >= needed:
            break
    else:
        raise RuntimeError(f"poison 'ar': fewer than {needed} stable AR processes in {MAX_ROUNDS * BATCH} draws")
    pool = torch.cat(kept)[:needed].view(-1, channels, 3, 3)
    response = separation(pool, torch.cat(noises)[:needed].view(-1, channels, TRIALS, height, width).transpose(1, 2))
    apart = torch.minimum(response, response.T).fill_diagonal_(float("inf"))
    # Greedy max-min: each next class is the candidate farthest (by its weakest pair) from those chosen.
    chosen = [0]
    closest = apart[0].clone()
    for _ in range(num_classes - 1):
        closest[chosen] = -1
        chosen.append(int(closest.argmax()))
        closest = torch.minimum(closest, apart[chosen[-1]])
    return pool[chosen]


def class_coefficients(source: str, path: str | None, num_classes: int, shape: tuple[int, ...],
                       generator: torch.Generator, *, poison: str = "ar") -> torch.Tensor:
    """Resolve the ``coefficients`` option: published, searched, or ``auto`` (published where they exist)."""
    _, channels, height, width = shape
    if source == "published" or (source == "auto" and (num_classes, channels) in PUBLISHED):
        return load_published(num_classes, channels, path, poison=poison)
    return search_coefficients(num_classes, channels, height, width, generator)


NORMS = {"l2": 2.0, "linf": float("inf")}
DEFAULT_EPSILON = {"l2": 1.0, "linf": 8 / 255}  # the paper's CIFAR budgets
# An L∞ radius beyond 1 is no budget at all in [0, 1] pixel units; an L2 one can be.
Budget = Annotated[float, Number(gt=0), Number(gt=0, le=1.0, when=lambda options: options["norm"] == "linf")]


@single_thread()
def autoregressive(images: torch.Tensor, labels: torch.Tensor, *, num_classes: int, generator: torch.Generator,
                   name: str, norm: str, epsilon: Budget | None = None,
                   coefficients: Annotated[str, OneOf(SOURCES)] = "auto",
                   coefficients_path: str | None = None) -> torch.Tensor:
    """AR noise of exact ``norm`` ``epsilon`` (L2 1.0: CIFAR-10/100, SVHN; L∞ 8/255) added to each image, clamped."""
    epsilon = DEFAULT_EPSILON[norm] if epsilon is None else epsilon
    processes = class_coefficients(coefficients, coefficients_path, num_classes, tuple(images.shape), generator,
                                   poison=name)
    delta = ar_perturbations(labels, processes, tuple(images.shape), generator, norm=NORMS[norm], epsilon=epsilon)
    return delta.to(images.device).add_(images).clamp_(0, 1)


POISONS.register("ar")(partial(autoregressive, name="ar", norm="l2"))
POISONS.register("ar-linf")(partial(autoregressive, name="ar-linf", norm="linf"))
