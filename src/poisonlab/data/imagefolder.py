"""``cifar10-jpeg`` and ``imagenet100``: ImageFolder layouts in a folder or a tarball.

The layout is ``train/<class>/*`` and ``test/<class>/*`` (or ``val/<class>/*``),
possibly under one top-level folder, as tarballs are often packed. Tarballs
are read in place, member by member in archive order (no extraction, so no
path in the archive can reach the file system). Class order is the sorted
folder names, images within a class are in sorted path order, as in
torchvision's ImageFolder. Files whose suffix is not an image type that
``decode_image`` reads are skipped (READMEs, .txt lists); hidden files too.
"""

from __future__ import annotations

import functools
import os
import tarfile
import warnings
from collections.abc import Callable, Container, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

import numpy as np
import torch

from poisonlab.checks import Count
from poisonlab.data.base import DATASETS, existing_path, sha256_of, tar_errors
from poisonlab.data.container import ImageDataset
from poisonlab.registry import ConfigError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
TEST_SPLITS = ("test", "val")  # the first one present is the test split
LAYOUT = "an ImageFolder layout train/<class>/*, test|val/<class>/*"

Parts = tuple[str, ...]
Fit = Callable[[torch.Tensor, str, int], torch.Tensor]


def _parts(name: str) -> Parts | None:
    """Path components of an archive or folder entry; None for hidden entries (.DS_Store, ._x)."""
    parts = PurePosixPath(name).parts
    return None if not parts or any(part.startswith(".") for part in parts) else parts


class _TarTree:
    """The regular files and folders of a tarball, read in archive order."""

    def __init__(self, path: Path, tar: tarfile.TarFile) -> None:
        self.path, self._tar = path, tar
        self.checksum = sha256_of(path)
        self.entries: list[tuple[Parts, bool]] = []
        self._files: dict[Parts, tarfile.TarInfo] = {}
        seen: set[Parts] = set()
        for member in tar.getmembers():
            parts = _parts(member.name)
            if parts is None or parts in seen or not (member.isfile() or member.isdir()):
                continue  # links and devices are never images of the layout; a name appended twice counts once
            seen.add(parts)
            self.entries.append((parts, member.isdir()))
            if member.isfile():
                self._files[parts] = member

    def describe(self, parts: Parts) -> str:
        return f"{self.path}:{'/'.join(parts)}"

    def read(self, wanted: Container[Parts]) -> Iterator[tuple[Parts, bytes]]:
        for parts, member in self._files.items():
            if parts in wanted:
                yield parts, self._tar.extractfile(member).read()  # type: ignore[union-attr]


class _DirTree:
    """The files and folders under a folder; its checksum covers every file in sorted path order."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: list[tuple[Parts, bool]] = []
        # Links are followed: ImageNet-100 is often a folder of links to ImageNet class folders.
        for folder, dirnames, filenames in os.walk(path, followlinks=True):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            rel = Path(folder).relative_to(path).parts
            self.entries += [(rel + (d,), True) for d in dirnames]
            self.entries += [(rel + (f,), False) for f in filenames if not f.startswith(".")]
        files = sorted(parts for parts, is_dir in self.entries if not is_dir)
        self.checksum = sha256_of(*(path.joinpath(*parts) for parts in files))

    def describe(self, parts: Parts) -> str:
        return str(self.path.joinpath(*parts))

    def read(self, wanted: Container[Parts]) -> Iterator[tuple[Parts, bytes]]:
        for parts, is_dir in self.entries:
            if not is_dir and parts in wanted:
                yield parts, self.path.joinpath(*parts).read_bytes()


@contextmanager
def _open_tree(path: Path) -> Iterator[_TarTree | _DirTree]:
    if path.is_dir():
        yield _DirTree(path)
        return
    with tar_errors(path), tarfile.open(path, "r:*") as tar:
        yield _TarTree(path, tar)


def _find_layout(tree: _TarTree | _DirTree) -> tuple[list[str], dict[str, list[tuple[Parts, int]]]]:
    """Class names and, per split, the image files with their labels, in sorted order."""
    tops = sorted({parts[0] for parts, _ in tree.entries})
    prefix: Parts = ()
    if "train" not in tops and len(tops) == 1 and any(len(parts) > 1 for parts, _ in tree.entries):
        prefix = (tops[0],)  # the layout packed under one top-level folder
    entries = [(parts[len(prefix) :], is_dir) for parts, is_dir in tree.entries if len(parts) > len(prefix)]
    where = tree.describe(prefix) if prefix else str(tree.path)
    names = sorted({parts[0] for parts, _ in entries})
    test_split = next((split for split in TEST_SPLITS if split in names), None)
    if "train" not in names or test_split is None:
        raise ConfigError(f"expected {LAYOUT} in {where}; found top-level entries: {', '.join(names) or '(none)'}")

    images: dict[str, dict[str, list[Parts]]] = {}
    for split in ("train", test_split):
        per_class: dict[str, list[Parts]] = {}
        for parts, is_dir in entries:
            if parts[0] != split or len(parts) < 2 or (len(parts) == 2 and not is_dir):
                continue  # other splits, and files lying directly in the split folder
            files = per_class.setdefault(parts[1], [])
            if not is_dir and len(parts) > 2 and parts[-1].lower().endswith(IMAGE_SUFFIXES):
                files.append(prefix + parts)
        if not per_class:
            raise ConfigError(f"{split}/ in {where} has no class folders; expected {LAYOUT}")
        for name, files in per_class.items():
            if not files:
                raise ConfigError(
                    f"class folder {split}/{name} in {where} holds no images; expected files {', '.join(IMAGE_SUFFIXES)}"
                )
        images[split] = per_class

    classes = sorted(images["train"])
    if set(classes) != set(images[test_split]):
        raise ConfigError(
            f"train/ and {test_split}/ in {where} must hold the same class folders; "
            f"train: {', '.join(classes)}; {test_split}: {', '.join(sorted(images[test_split]))}"
        )
    layout = {
        split: [(path, label) for label, name in enumerate(classes) for path in sorted(per_class[name])]
        for split, per_class in images.items()
    }
    return classes, {"train": layout["train"], "test": layout[test_split]}


def _decode(data: bytes, name: str, read_rgb: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    try:
        return read_rgb(torch.frombuffer(bytearray(data), dtype=torch.uint8))
    except (RuntimeError, ValueError) as error:
        raise ConfigError(f"{name} does not decode as an image ({error})") from None


def _require_size(image: torch.Tensor, name: str, size: int) -> torch.Tensor:
    height, width = image.shape[-2:]
    if (height, width) != (size, size):
        raise ConfigError(f"{name} is {height}×{width}; expected {size}×{size} (option image_size)")
    return image


def _resize_center_crop(image: torch.Tensor, name: str, size: int) -> torch.Tensor:
    """Shorter side to ``size`` (antialiased), then the central ``size``×``size``."""
    from torchvision.transforms.v2 import functional as F  # where used: see load_imagefolder

    return F.center_crop(F.resize(image, [size], antialias=True), [size, size])


def load_imagefolder(
    dataset: str, *, path: str | os.PathLike | None, sha256: str | None, image_size: int, fit: Fit
) -> ImageDataset:
    """Decode every image of the layout at ``path`` to uint8 (N, image_size, image_size, 3)."""
    source = existing_path(dataset, path, f"a folder or .tar/.tar.gz holding {LAYOUT}")
    with _open_tree(source) as tree:
        if sha256 is not None and tree.checksum != sha256.lower():
            raise ConfigError(f"{dataset}: {source} has sha256 {tree.checksum}; expected {sha256.lower()}")
        classes, layout = _find_layout(tree)
        x = {split: np.empty((len(files), image_size, image_size, 3), np.uint8) for split, files in layout.items()}
        slots = {parts: (x[split], index) for split, files in layout.items() for index, (parts, _) in enumerate(files)}
        with warnings.catch_warnings():
            # torchvision 0.29 warns on every decode that TorchCodec will take
            # image decoding over; TorchCodec is not a dependency yet, and one
            # warning per image would flood the log of every run.
            warnings.filterwarnings("ignore", "The image decoding and encoding capabilities", DeprecationWarning)
            # torchvision is imported here, once a load, not at the top: it would add ~1.3 s to every job
            # that imports poisonlab.data, and only a clean_dataset job decodes images.
            from torchvision.io import ImageReadMode, decode_image

            read_rgb = functools.partial(decode_image, mode=ImageReadMode.RGB)
            for parts, data in tree.read(slots):
                name = tree.describe(parts)
                target, index = slots[parts]
                image = _decode(data, name, read_rgb)
                target[index] = fit(image, name, image_size).permute(1, 2, 0).numpy()
    return ImageDataset(
        x_train=x["train"],
        y_train=[label for _, label in layout["train"]],
        x_test=x["test"],
        y_test=[label for _, label in layout["test"]],
        classes=classes,
        meta={
            "dataset": dataset,
            "source": str(source),
            "source_checksum": f"sha256:{tree.checksum}",
            "image_size": image_size,
        },
    )


@DATASETS.register("cifar10-jpeg")
def load_cifar10_jpeg(*, path: str | None = None, sha256: str | None = None, image_size: Count = 32) -> ImageDataset:
    """CIFAR-10 as JPEG files; images are not resized, so each must already be image_size square."""
    return load_imagefolder("cifar10-jpeg", path=path, sha256=sha256, image_size=image_size, fit=_require_size)


@DATASETS.register("imagenet100")
def load_imagenet100(*, path: str | None = None, sha256: str | None = None, image_size: Count = 224) -> ImageDataset:
    """ImageNet-100 in an ImageFolder layout, resized and centre-cropped to image_size square."""
    return load_imagefolder("imagenet100", path=path, sha256=sha256, image_size=image_size, fit=_resize_center_crop)
