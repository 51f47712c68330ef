"""``cifar10``, ``cifar100`` and ``svhn``: official archives or torchvision downloads.

With ``path``, a CIFAR loader reads the official python tarball in place: its
md5 is checked first, then the pickled batches are read straight from the
archive. The pickles are unpickled with an allowlist of the few numpy
constructors they contain, so even an archive passed with another ``md5``
cannot run code. Without ``path``, torchvision downloads (or finds) the data
in ``root`` and checks the md5 of every file it reads.
"""

from __future__ import annotations

import os
import pickle
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from poisonlab.data.base import DATASETS, existing_path, md5_of, tar_errors
from poisonlab.data.container import ImageDataset
from poisonlab.registry import ConfigError

DEFAULT_ROOT = "data/downloads"


@dataclass(frozen=True)
class CifarArchive:
    """Where one CIFAR variant keeps its images, labels and class names in the official tarball."""

    name: str
    filename: str  # the official tarball's name, for messages
    md5: str
    folder: str  # the archive's top-level folder, also torchvision's folder under root
    train_batches: tuple[str, ...]
    test_batches: tuple[str, ...]
    meta_batch: str
    label_key: bytes
    names_key: bytes
    num_classes: int
    torchvision_class: str  # the torchvision.datasets class that downloads it


CIFAR10 = CifarArchive(
    name="cifar10",
    filename="cifar-10-python.tar.gz",
    md5="c58f30108f718f92721af3b95e74349a",
    folder="cifar-10-batches-py",
    train_batches=tuple(f"data_batch_{i}" for i in range(1, 6)),
    test_batches=("test_batch",),
    meta_batch="batches.meta",
    label_key=b"labels",
    names_key=b"label_names",
    num_classes=10,
    torchvision_class="CIFAR10",
)
CIFAR100 = CifarArchive(
    name="cifar100",
    filename="cifar-100-python.tar.gz",
    md5="eb9058c3a382ffc7106e4002c42a8d85",
    folder="cifar-100-python",
    train_batches=("train",),
    test_batches=("test",),
    meta_batch="meta",
    label_key=b"fine_labels",
    names_key=b"fine_label_names",
    num_classes=100,
    torchvision_class="CIFAR100",
)

# What the official pickles (numpy 1, python 2) and the same dicts pickled by
# numpy 2 refer to; nothing else may be constructed while unpickling.
_PICKLE_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _PICKLE_ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a CIFAR batch")
        return super().find_class(module, name)


def _read_pickle(tar: tarfile.TarFile, archive: Path, member: str) -> dict[bytes, Any]:
    try:
        f = tar.extractfile(member)
    except KeyError:
        f = None
    if f is None:
        raise ConfigError(f"{archive} lacks the file {member} of the official archive layout")
    try:
        batch = _ArrayUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as error:
        raise ConfigError(f"{archive}: {member} is not an official CIFAR pickle ({error})") from None
    if not isinstance(batch, dict):
        raise ConfigError(f"{archive}: {member} holds a {type(batch).__name__}; expected a dict")
    return batch


def _read_batches(
    tar: tarfile.TarFile, archive: Path, spec: CifarArchive, batches: tuple[str, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 32, 32, 3) uint8 and labels of ``batches``, concatenated in order."""
    images, labels = [], []
    for batch_name in batches:
        member = f"{spec.folder}/{batch_name}"
        batch = _read_pickle(tar, archive, member)
        data, batch_labels = batch.get(b"data"), batch.get(spec.label_key)
        if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2 and data.shape[1] == 3072):
            found = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
            raise ConfigError(f"{archive}: {member} b'data' must be uint8 (N, 3072); found {found}")
        if batch_labels is None or len(batch_labels) != len(data):
            count = "none" if batch_labels is None else len(batch_labels)
            raise ConfigError(
                f"{archive}: {member} must hold {len(data)} {spec.label_key!r} (one an image); found {count}"
            )
        # A row is the red plane, then green, then blue, each 32×32 in row-major order.
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(np.asarray(batch_labels, dtype=np.int64))
    return np.ascontiguousarray(np.concatenate(images)), np.concatenate(labels)


def load_cifar_archive(spec: CifarArchive, path: Path, md5: str) -> ImageDataset:
    """Read the official python tarball at ``path`` after checking its md5."""
    actual = md5_of(path)
    if actual != md5.lower():
        raise ConfigError(f"{spec.name}: {path} has md5 {actual}; expected {md5.lower()} ({spec.filename})")
    with tar_errors(path), tarfile.open(path, "r:*") as tar:
        x_train, y_train = _read_batches(tar, path, spec, spec.train_batches)
        x_test, y_test = _read_batches(tar, path, spec, spec.test_batches)
        names = _read_pickle(tar, path, f"{spec.folder}/{spec.meta_batch}").get(spec.names_key)
    if names is None or len(names) != spec.num_classes:
        found = "none" if names is None else len(names)
        raise ConfigError(f"{path}: {spec.meta_batch} must list {spec.num_classes} {spec.names_key!r}; found {found}")
    return ImageDataset(
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        classes=[name.decode() if isinstance(name, bytes) else str(name) for name in names],
        meta={"dataset": spec.name, "source": str(path), "source_checksum": f"md5:{actual}"},
    )


def torchvision_dataset(name: str, root: str | os.PathLike, download: bool, class_name: str, **split: Any) -> Any:
    """``torchvision.datasets.<class_name>(root, download=download, **split)``, with a failure to find or
    fetch the data as a ConfigError."""
    # Imported here: torchvision costs ~1.3 s of start-up and only a download path needs it.
    from torchvision import datasets

    cls = getattr(datasets, class_name)
    try:
        return cls(str(root), download=download, **split)
    except (RuntimeError, OSError) as error:
        raise ConfigError(
            f"dataset '{name}': torchvision found no data in root={root} (download={download}): {error}; "
            "set download: true where the internet is reachable, or put the files torchvision expects under root"
        ) from None


def load_cifar_torchvision(spec: CifarArchive, root: str | os.PathLike, download: bool) -> ImageDataset:
    train = torchvision_dataset(spec.name, root, download, spec.torchvision_class, train=True)
    test = torchvision_dataset(spec.name, root, download, spec.torchvision_class, train=False)
    # torchvision has verified each batch file against the official md5s; the
    # checksum recorded is that of the batch files it read, in archive order.
    batch_files = [Path(root, spec.folder, name) for name in spec.train_batches + spec.test_batches]
    return ImageDataset(
        x_train=train.data,
        y_train=train.targets,
        x_test=test.data,
        y_test=test.targets,
        classes=train.classes,
        meta={
            "dataset": spec.name,
            "source": f"torchvision.datasets.{spec.torchvision_class} ({root})",
            "source_checksum": f"md5:{md5_of(*batch_files)}",
        },
    )


def load_cifar(
    spec: CifarArchive, path: str | os.PathLike | None, root: str | os.PathLike, download: bool, md5: str
) -> ImageDataset:
    if path is None:
        return load_cifar_torchvision(spec, root, download)
    archive = existing_path(spec.name, path, f"the official {spec.filename}")
    if not archive.is_file():
        raise ConfigError(f"dataset '{spec.name}': path {archive} is a folder; expected the official {spec.filename}")
    return load_cifar_archive(spec, archive, md5)


@DATASETS.register("cifar10", image_size=32)
def load_cifar10(
    *, path: str | None = None, root: str = DEFAULT_ROOT, download: bool = True, md5: str = CIFAR10.md5
) -> ImageDataset:
    return load_cifar(CIFAR10, path, root, download, md5)


@DATASETS.register("cifar100", image_size=32)
def load_cifar100(
    *, path: str | None = None, root: str = DEFAULT_ROOT, download: bool = True, md5: str = CIFAR100.md5
) -> ImageDataset:
    return load_cifar(CIFAR100, path, root, download, md5)


@DATASETS.register("svhn", image_size=32)
def load_svhn(*, root: str = DEFAULT_ROOT, download: bool = True) -> ImageDataset:
    train = torchvision_dataset("svhn", root, download, "SVHN", split="train")
    test = torchvision_dataset("svhn", root, download, "SVHN", split="test")
    mat_files = [Path(root, f"{split}_32x32.mat") for split in ("train", "test")]
    return ImageDataset(
        # torchvision keeps SVHN as (N, 3, 32, 32); the container is (N, H, W, C).
        x_train=np.ascontiguousarray(train.data.transpose(0, 2, 3, 1)),
        y_train=train.labels,
        x_test=np.ascontiguousarray(test.data.transpose(0, 2, 3, 1)),
        y_test=test.labels,
        classes=[str(digit) for digit in range(10)],
        meta={
            "dataset": "svhn",
            "source": f"torchvision.datasets.SVHN ({root})",
            # md5 of the two .mat files torchvision read (and checked), train then test
            "source_checksum": f"md5:{md5_of(*mat_files)}",
        },
    )
