"""``stl10``: STL-10's labelled splits, from the official archive or a torchvision download.

The AR paper (Sandoval-Segura et al., NeurIPS 2022) evaluates on STL-10 with
an L2 budget of ε = 3 (its repository's README: a ResNet-18 trained on the
released STL-10 AR poison tests at 11.65%), training on the 5,000 labelled
training images and testing on the 8,000 test images, 96×96 colour, as
torchvision's ``STL10(split="train" | "test")`` gives them (its training code,
``lightning_modules/lightning_stl10.py``); the 100,000 unlabelled images are
not used.

With ``path``, the official ``stl10_binary.tar.gz`` is read in place: its md5
is checked first (torchvision's ``tgz_md5``), then the four labelled files are
read straight from the archive. Without ``path``, torchvision downloads (or
finds) the data in ``root`` and checks the md5 of every file it reads. Either
way the binary layout is the official one: each image is three 96×96 planes
stored column by column (hence the transpose), labels 1…10 (stored 0…9).
"""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import numpy as np

from poisonlab.data.base import DATASETS, existing_path, md5_of, tar_errors
from poisonlab.data.cifar import DEFAULT_ROOT, torchvision_dataset
from poisonlab.data.container import ImageDataset
from poisonlab.registry import ConfigError

ARCHIVE = "stl10_binary.tar.gz"
MD5 = "91f7769df0f17e558f3565bffb0c7dfb"  # torchvision.datasets.STL10.tgz_md5
FOLDER = "stl10_binary"
SIZE = 96
SPLIT_FILES = {"train": ("train_X.bin", "train_y.bin"), "test": ("test_X.bin", "test_y.bin")}


def decode(images: bytes | np.ndarray, labels: bytes | np.ndarray, source: str) -> tuple[np.ndarray, np.ndarray]:
    """The official binaries → images (N, 96, 96, 3) uint8 and labels 0…9 int64."""
    pixels = np.frombuffer(images, dtype=np.uint8) if isinstance(images, bytes) else images.reshape(-1)
    targets = np.frombuffer(labels, dtype=np.uint8) if isinstance(labels, bytes) else labels.reshape(-1)
    per_image = 3 * SIZE * SIZE
    if pixels.size % per_image or pixels.size // per_image != targets.size:
        raise ConfigError(f"{source}: {pixels.size} bytes of images and {targets.size} labels are not "
                          f"{targets.size} images of 3x{SIZE}x{SIZE}")
    if targets.size and not (1 <= targets.min() and targets.max() <= 10):
        raise ConfigError(f"{source}: labels must lie in 1..10; found {targets.min()}..{targets.max()}")
    # (N, C, W, H) as stored, column-major planes → (N, H, W, C).
    x = pixels.reshape(-1, 3, SIZE, SIZE).transpose(0, 3, 2, 1)
    return np.ascontiguousarray(x), targets.astype(np.int64) - 1


def _member(tar: tarfile.TarFile, archive: Path, name: str) -> bytes:
    try:
        f = tar.extractfile(f"{FOLDER}/{name}")
    except KeyError:
        f = None
    if f is None:
        raise ConfigError(f"{archive} lacks the file {FOLDER}/{name} of the official {ARCHIVE}")
    return f.read()


def load_stl10_archive(path: Path, md5: str) -> ImageDataset:
    actual = md5_of(path)
    if actual != md5.lower():
        raise ConfigError(f"stl10: {path} has md5 {actual}; expected {md5.lower()} ({ARCHIVE})")
    splits = {}
    with tar_errors(path), tarfile.open(path, "r:*") as tar:
        for split, (images, labels) in SPLIT_FILES.items():
            splits[split] = decode(_member(tar, path, images), _member(tar, path, labels), f"{path}: {split}")
        classes = _member(tar, path, "class_names.txt").decode().split()
    return _dataset(splits, classes, source=str(path), checksum=f"md5:{actual}")


def load_stl10_torchvision(root: str | os.PathLike, download: bool) -> ImageDataset:
    splits = {split: torchvision_dataset("stl10", root, download, "STL10", split=split) for split in SPLIT_FILES}
    # torchvision has verified each binary against the official md5s; the checksum recorded is that of
    # the four labelled files it read, train then test.
    files = [Path(root, FOLDER, name) for pair in SPLIT_FILES.values() for name in pair]
    decoded = {split: (np.ascontiguousarray(data.data.transpose(0, 2, 3, 1)), data.labels.astype(np.int64))
               for split, data in splits.items()}
    return _dataset(decoded, list(splits["train"].classes), source=f"torchvision.datasets.STL10 ({root})",
                    checksum=f"md5:{md5_of(*files)}")


def _dataset(splits: dict[str, tuple[np.ndarray, np.ndarray]], classes: list[str], *, source: str,
             checksum: str) -> ImageDataset:
    if len(classes) != 10:
        raise ConfigError(f"stl10: {source} names {len(classes)} classes; expected 10")
    (x_train, y_train), (x_test, y_test) = splits["train"], splits["test"]
    return ImageDataset(x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test, classes=classes,
                        meta={"dataset": "stl10", "source": source, "source_checksum": checksum})


@DATASETS.register("stl10", image_size=96)
def load_stl10(*, path: str | None = None, root: str = DEFAULT_ROOT, download: bool = True,
               md5: str = MD5) -> ImageDataset:
    """STL-10's 5,000 labelled training and 8,000 test images (96×96), 10 classes."""
    if path is None:
        return load_stl10_torchvision(root, download)
    archive = existing_path("stl10", path, f"the official {ARCHIVE}")
    if not archive.is_file():
        raise ConfigError(f"dataset 'stl10': path {archive} is a folder; expected the official {ARCHIVE}")
    return load_stl10_archive(archive, md5)
