"""Segmentation datasets by name: the embedded canvases and, from a user's path, VOC 2012 (+SBD) and Cityscapes.

``SEG_DATASETS.build(name, **options)`` returns a ``SegmentationDataset``
(images uint8 N × H × W × C plus label maps); the paper-scale ones are read
once from the user's copy, each image resized so its shorter side is
``base_size`` and centre-cropped to ``size`` × ``size`` (labels by nearest
neighbour, pixels beyond the image labelled 255, ignored): the companion
repository's single-scale evaluation at base size 512, crop 473 (VOC) — one
centre crop in place of its sliding window, so every image fits the
fixed-size container the trainer keeps on the device.

Layouts checked before anything is read (one message naming what is missing
and what was expected):

- ``voc2012``: ``path`` is ``VOCdevkit/VOC2012`` (or a folder holding it) with
  ``JPEGImages/``, the split lists ``ImageSets/Segmentation/{split}.txt`` (one
  id a line; ``train_aug.txt`` is SBD's 10,582-image list, placed there by the
  user) and labels in ``SegmentationClassAug/`` (SBD-augmented, as hszhao/semseg
  and DDC-AT train on) or, failing that, VOC's own ``SegmentationClass/``.
- ``cityscapes``: ``path`` holds ``leftImg8bit/{split}/{city}/*_leftImg8bit.png``
  and ``gtFine/{split}/{city}/*_gtFine_labelIds.png``; the 34 label ids are
  mapped to the 19 training ids (cityscapesScripts' ``labels.py``), the rest
  to 255.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from poisonlab.registry import ConfigError, Registry
from poisonlab.segmentation.data import IGNORE, SegmentationDataset, dominant_class, make_canvases

SEG_DATASETS: Registry[Callable[..., SegmentationDataset]] = Registry("segmentation dataset")

VOC_CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
               "tvmonitor")
CITYSCAPES_CLASSES = ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
                      "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle",
                      "bicycle")
# cityscapesScripts labels.py: label id → train id for the 19 evaluated classes; every other id is ignored.
CITYSCAPES_TRAIN_IDS = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12,
                        26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
CITYSCAPES_SIZE = (2048, 1024)  # (width, height) of every fine-annotated frame


@SEG_DATASETS.register("mnist5k-seg")
def mnist5k_seg(*, train: int = 3000, test: int = 500, grid: tuple[int, int] = (2, 2), p_digit: float = 0.6,
                threshold: int = 128, seed: int = 0) -> SegmentationDataset:
    from poisonlab.data import build_dataset

    return make_canvases(build_dataset("mnist5k"), train=train, test=test, grid=grid, p_digit=p_digit,
                         threshold=threshold, seed=seed)


@dataclass
class Pairs:
    """Image and label files of one split, checked to exist and to have the same size."""

    images: list[Path]
    labels: list[Path]
    lookup: np.ndarray | None = None  # label value → class (256 entries), where the files hold other ids


def _require(path: Path, dataset: str, expected: str) -> Path:
    if not path.exists():
        raise ConfigError(f"dataset '{dataset}': {path} does not exist; expected {expected}")
    return path


def check_pairs(dataset: str, images: list[Path], labels: list[Path], size: tuple[int, int] | None = None) -> None:
    """Every image has its label file, of its size (and of ``size`` (w, h) when given): one message otherwise."""
    from PIL import Image

    missing = [str(p) for p in (*images, *labels) if not p.exists()]
    if missing:
        raise ConfigError(f"dataset '{dataset}': {len(missing)} listed file(s) missing, e.g. {', '.join(missing[:3])}")
    for image, label in zip(images, labels):
        with Image.open(image) as a, Image.open(label) as b:  # headers only: sizes without decoding
            if a.size != b.size or (size is not None and a.size != size):
                raise ConfigError(f"dataset '{dataset}': {image.name} is {a.size[0]}×{a.size[1]} but its label "
                                  f"{label.name} is {b.size[0]}×{b.size[1]}"
                                  + (f"; expected {size[0]}×{size[1]}" if size else ""))


def voc_pairs(path: str | os.PathLike, split: str) -> Pairs:
    root = _require(Path(path), "voc2012", "VOCdevkit/VOC2012 or a folder holding it")
    if not (root / "JPEGImages").is_dir() and (root / "VOC2012").is_dir():
        root = root / "VOC2012"
    elif not (root / "JPEGImages").is_dir() and (root / "VOCdevkit" / "VOC2012").is_dir():
        root = root / "VOCdevkit" / "VOC2012"
    _require(root / "JPEGImages", "voc2012", "VOC 2012's JPEGImages/ (VOCdevkit/VOC2012 layout)")
    listing = _require(root / "ImageSets" / "Segmentation" / f"{split}.txt", "voc2012",
                       f"the split list {split}.txt (one image id a line; train_aug.txt is SBD's list)")
    labels_dir = root / "SegmentationClassAug"
    if not labels_dir.is_dir():
        labels_dir = _require(root / "SegmentationClass", "voc2012", "SegmentationClassAug/ or SegmentationClass/")
    ids = [line.split()[0] for line in listing.read_text().splitlines() if line.strip()]
    if not ids:
        raise ConfigError(f"dataset 'voc2012': {listing} lists no image")
    # Ids may come as hszhao's "JPEGImages/x.jpg SegmentationClassAug/x.png" lines: keep the stem.
    stems = [Path(i).stem for i in ids]
    pairs = Pairs([root / "JPEGImages" / f"{s}.jpg" for s in stems], [labels_dir / f"{s}.png" for s in stems])
    check_pairs("voc2012", pairs.images, pairs.labels)
    return pairs


def cityscapes_pairs(path: str | os.PathLike, split: str) -> Pairs:
    root = _require(Path(path), "cityscapes", "a folder with leftImg8bit/ and gtFine/")
    image_dir = _require(root / "leftImg8bit" / split, "cityscapes", f"leftImg8bit/{split}/<city>/*_leftImg8bit.png")
    label_dir = _require(root / "gtFine" / split, "cityscapes", f"gtFine/{split}/<city>/*_gtFine_labelIds.png")
    images = sorted(image_dir.glob("*/*_leftImg8bit.png"))
    if not images:
        raise ConfigError(f"dataset 'cityscapes': no <city>/*_leftImg8bit.png under {image_dir}")
    labels = [label_dir / p.parent.name / p.name.replace("_leftImg8bit.png", "_gtFine_labelIds.png") for p in images]
    check_pairs("cityscapes", images, labels, CITYSCAPES_SIZE)
    lookup = np.full(256, IGNORE, np.uint8)
    lookup[list(CITYSCAPES_TRAIN_IDS)] = list(CITYSCAPES_TRAIN_IDS.values())
    return Pairs(images, labels, lookup)


def read_resized(pairs: Pairs, size: int, base_size: int, limit: int | None, num_classes: int,
                 dataset: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, size, size, 3) and maps (N, size, size): shorter side to ``base_size``, centre crop ``size``."""
    from PIL import Image

    count = len(pairs.images) if limit is None else min(limit, len(pairs.images))
    x = np.zeros((count, size, size, 3), np.uint8)
    m = np.full((count, size, size), IGNORE, np.uint8)
    for i in range(count):
        with Image.open(pairs.images[i]) as image, Image.open(pairs.labels[i]) as label:
            scale = base_size / min(image.size)
            new = (round(image.size[0] * scale), round(image.size[1] * scale))
            pixels = np.asarray(image.convert("RGB").resize(new, Image.BILINEAR))
            ids = np.asarray(label.resize(new, Image.NEAREST))
        if pairs.lookup is not None:
            ids = pairs.lookup[ids]
        bad = ids[(ids != IGNORE) & (ids >= num_classes)]
        if bad.size:
            raise ConfigError(f"dataset '{dataset}': {pairs.labels[i]} holds label {bad.max()}; labels must lie "
                              f"in [0, {num_classes - 1}] or be {IGNORE}")
        top, left = max(0, (new[1] - size) // 2), max(0, (new[0] - size) // 2)
        crop_h, crop_w = min(size, new[1]), min(size, new[0])
        x[i, :crop_h, :crop_w] = pixels[top:top + crop_h, left:left + crop_w]
        m[i, :crop_h, :crop_w] = ids[top:top + crop_h, left:left + crop_w]
    return x, m


def _folder_dataset(name: str, pairs_of: Callable[[str], Pairs], classes: tuple[str, ...], *, train_split: str,
                    test_split: str, size: int, base_size: int, train: int | None, test: int | None,
                    path: str | os.PathLike) -> SegmentationDataset:
    if not 0 < size <= base_size:
        raise ConfigError(f"dataset '{name}': need 0 < size <= base_size; got size {size}, base_size {base_size}")
    train_pairs, test_pairs = pairs_of(train_split), pairs_of(test_split)  # both checked before reading either
    x_train, m_train = read_resized(train_pairs, size, base_size, train, len(classes), name)
    x_test, m_test = read_resized(test_pairs, size, base_size, test, len(classes), name)
    return SegmentationDataset(
        x_train=x_train, y_train=dominant_class(m_train, len(classes)), x_test=x_test,
        y_test=dominant_class(m_test, len(classes)), classes=classes, m_train=m_train, m_test=m_test,
        meta={"dataset": name, "source": str(path), "train_split": train_split, "test_split": test_split,
              "size": size, "base_size": base_size, "source_checksum": ""},
    )


@SEG_DATASETS.register("voc2012")
def voc2012(*, path: str | None = None, train_split: str = "train_aug", test_split: str = "val", size: int = 473,
            base_size: int = 512, train: int | None = None, test: int | None = None) -> SegmentationDataset:
    """PASCAL VOC 2012 (+SBD's train_aug), 21 classes, 255 ignored; ``train``/``test`` cap the counts."""
    if path is None:
        raise ConfigError("dataset 'voc2012' needs option path: VOCdevkit/VOC2012 (JPEGImages, ImageSets, "
                          "SegmentationClassAug)")
    return _folder_dataset("voc2012", lambda split: voc_pairs(path, split), VOC_CLASSES, train_split=train_split,
                           test_split=test_split, size=size, base_size=base_size, train=train, test=test, path=path)


@SEG_DATASETS.register("cityscapes")
def cityscapes(*, path: str | None = None, train_split: str = "train", test_split: str = "val", size: int = 449,
               base_size: int = 512, train: int | None = None, test: int | None = None) -> SegmentationDataset:
    """Cityscapes fine annotations, 19 training classes, 255 ignored; ``train``/``test`` cap the counts."""
    if path is None:
        raise ConfigError("dataset 'cityscapes' needs option path: a folder with leftImg8bit/ and gtFine/")
    return _folder_dataset("cityscapes", lambda split: cityscapes_pairs(path, split), CITYSCAPES_CLASSES,
                           train_split=train_split, test_split=test_split, size=size, base_size=base_size,
                           train=train, test=test, path=path)
