"""``mnist5k-seg``: real MNIST-5k digits on larger canvases, labelled by a fixed function of their pixels.

The embedded scale of robust-seg (design note ``robust-seg.md`` §3, §5.1) needs a
segmentation dataset that ships with the code. A canvas is a grid of 28×28
cells (2×2 by default: 56×56); each cell holds, with probability ``p_digit``,
a digit drawn from MNIST-5k — training digits for training canvases, test
digits for test canvases, so no test digit is ever seen in training. The label
map is a deterministic function of the canvas: where a cell's pixel is at
least ``threshold`` (128, i.e. 0.5 in [0, 1]) the label is ``digit + 1``,
everywhere else 0 (background): 11 classes. We checked the note's proposal
rather than take it: labelling by threshold (not by "inside the digit's
box") keeps the map a function of the pixels, and aligning digits to cells
(no jitter) lets the recognisability metric crop exactly the 28×28 input an
MNIST classifier expects.

The container is the clean-container contract (``ImageDataset``) plus two
keys, ``m_train`` and ``m_test``: uint8 label maps (N, H, W), 255 where a
pixel has no label (VOC's and Cityscapes' ignore label; the canvases have
none). ``y_train``/``y_test`` stay the contract's one int64 class an image:
the foreground class covering most pixels of the canvas (0 for an empty
canvas), so subsetting and every check of the contract keep working.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import numpy as np

from poisonlab.atomic import save_npz
from poisonlab.data.container import ImageDataset
from poisonlab.registry import ConfigError

IGNORE = 255  # label of a pixel that counts in no metric and no loss
MAP_KEYS = ("m_train", "m_test")
CELL = 28  # MNIST's side: one digit a cell
CLASSES = ("background", *(str(digit) for digit in range(10)))


@dataclass
class SegmentationDataset(ImageDataset):
    """An ``ImageDataset`` whose images also carry label maps ``m_train``/``m_test`` (uint8, N × H × W)."""

    m_train: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 0), np.uint8))
    m_test: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 0), np.uint8))

    def __post_init__(self) -> None:
        # ImageDataset.load hands every key beyond its own over as an extra: the maps are ours.
        for key in MAP_KEYS:
            if key in self.extras:
                setattr(self, key, self.extras.pop(key))
        super().__post_init__()

    def validate(self) -> None:
        super().validate()
        for split in ("train", "test"):
            x, m = getattr(self, f"x_{split}"), getattr(self, f"m_{split}")
            if m.dtype != np.uint8 or m.shape != x.shape[:3]:
                raise ConfigError(f"m_{split} must be uint8 label maps of shape {x.shape[:3]} (N, H, W of "
                                  f"x_{split}); got {m.dtype} {m.shape}")
            known = m[m != IGNORE]
            if known.size and known.max() >= self.num_classes:
                raise ConfigError(f"m_{split} must hold labels in [0, {self.num_classes - 1}] or {IGNORE} "
                                  f"(ignore); got {known.max()}")

    def save(self, path: str | os.PathLike) -> None:
        save_npz(path, x_train=self.x_train, y_train=self.y_train, x_test=self.x_test, y_test=self.y_test,
                 classes=self.classes, meta=np.array(json.dumps(self.meta, sort_keys=True)),
                 m_train=self.m_train, m_test=self.m_test, **self.extras)


def dominant_class(maps: np.ndarray, num_classes: int) -> np.ndarray:
    """The foreground class (≥ 1) covering most pixels of each map, 0 for a map without foreground."""
    counts = np.stack([(maps == c).reshape(len(maps), -1).sum(1) for c in range(1, num_classes)], 1)
    return np.where(counts.max(1) > 0, counts.argmax(1) + 1, 0).astype(np.int64)


def place_digits(digits: np.ndarray, labels: np.ndarray, count: int, *, grid: tuple[int, int], p_digit: float,
                 threshold: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``count`` canvases of ``digits`` (uint8 N × 28 × 28) on a ``grid`` of cells, with their label maps.

    Returns (canvases uint8 count × H × W, maps uint8 count × H × W, sources int64 count × cells: the index of
    the digit in each cell, −1 where the cell is empty). Vectorised: one gather for all canvases.
    """
    rows, cols = grid
    cells = rows * cols
    present = rng.random((count, cells)) < p_digit
    sources = np.where(present, rng.integers(len(digits), size=(count, cells)), -1)
    picked = np.where(present[..., None, None], digits[sources.clip(0)], 0).astype(np.uint8)
    classes = np.where(present, labels[sources.clip(0)] + 1, 0).astype(np.uint8)
    maps = np.where(picked >= threshold, classes[..., None, None], 0).astype(np.uint8)

    def tile(cell_arrays: np.ndarray) -> np.ndarray:  # (count, cells, 28, 28) → (count, rows·28, cols·28)
        return (cell_arrays.reshape(count, rows, cols, CELL, CELL).transpose(0, 1, 3, 2, 4)
                .reshape(count, rows * CELL, cols * CELL))

    return tile(picked), tile(maps), sources


def make_canvases(source: ImageDataset, *, train: int = 3000, test: int = 500, grid: tuple[int, int] = (2, 2),
                  p_digit: float = 0.6, threshold: int = 128, seed: int = 0) -> SegmentationDataset:
    """The ``mnist5k-seg`` container from the ``mnist5k`` one: train digits on train canvases, test on test."""
    if source.image_shape != (CELL, CELL, 1) or source.num_classes != 10:
        raise ConfigError(f"canvases need MNIST digits (28, 28, 1) of 10 classes; got {source.image_shape} with "
                          f"{source.num_classes} classes")
    grid = tuple(grid)
    if len(grid) != 2 or min(grid) < 1:
        raise ConfigError(f"mnist5k-seg grid must be [rows, cols] >= 1; got {list(grid)}")
    if not 0 < p_digit <= 1 or not 0 < threshold < 256 or min(train, test) < 1:
        raise ConfigError(f"mnist5k-seg needs 0 < p_digit <= 1, 0 < threshold < 256 and train, test >= 1; got "
                          f"p_digit {p_digit}, threshold {threshold}, train {train}, test {test}")
    # One stream a split, so the test canvases do not change when the training count does.
    rng_train, rng_test = (np.random.default_rng([seed, split]) for split in (0, 1))
    options = {"grid": grid, "p_digit": p_digit, "threshold": threshold}
    x_train, m_train, _ = place_digits(source.x_train[..., 0], source.y_train, train, rng=rng_train, **options)
    x_test, m_test, _ = place_digits(source.x_test[..., 0], source.y_test, test, rng=rng_test, **options)
    return SegmentationDataset(
        x_train=x_train[..., None], y_train=dominant_class(m_train, len(CLASSES)),
        x_test=x_test[..., None], y_test=dominant_class(m_test, len(CLASSES)), classes=CLASSES,
        m_train=m_train, m_test=m_test,
        meta={"dataset": "mnist5k-seg", "source": source.meta.get("dataset", "mnist5k"),
              "source_checksum": source.source_checksum, "seed": seed, "train": train, "test": test,
              "grid": list(grid), "cell": CELL, "p_digit": p_digit, "threshold": threshold,
              "label_rule": "digit + 1 where the pixel >= threshold, else 0"},
    )
