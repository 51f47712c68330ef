"""The dataset registry, the one entry point ``build_dataset``, and the checksum and archive helpers of the loaders.

Each loader module registers its functions in ``DATASETS`` with keyword-only
options and the facts known without loading (its image size). The checksum and
tar helpers live here because every loader records a source checksum and two of
them read tarballs in place.
"""

from __future__ import annotations

import gzip
import hashlib
import inspect
import os
import tarfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from poisonlab.data.container import ImageDataset
from poisonlab.data.subset import stratified_subset
from poisonlab.registry import ConfigError, Registry

# image_size: the side of a dataset's square images, where it is fixed (a loader with an image_size option has
# the option's): what options are checked against when the config is read, before anything is loaded.
DATASETS: Registry[Callable[..., ImageDataset]] = Registry("dataset", facts={"image_size": None})

SUBSET_KEYS = ("train", "test", "seed")

# Raised by tarfile/gzip/zlib on a truncated or corrupt archive, possibly only
# midway through reading it.
_TAR_ERRORS = (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile)


def digest(algorithm: str, *paths: str | os.PathLike) -> str:
    """Hex digest of the files' bytes, concatenated in the given order, read in chunks."""
    hasher = hashlib.new(algorithm)
    for path in paths:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                hasher.update(chunk)
    return hasher.hexdigest()


def md5_of(*paths: str | os.PathLike) -> str:
    return digest("md5", *paths)


def sha256_of(*paths: str | os.PathLike) -> str:
    return digest("sha256", *paths)


def existing_path(dataset: str, path: str | os.PathLike | None, expected: str) -> Path:
    """``path`` as a Path, or a ConfigError saying what the option should point to."""
    if path is None:
        raise ConfigError(f"dataset '{dataset}' needs option path: {expected}")
    if not os.path.exists(path):
        raise ConfigError(f"dataset '{dataset}': path {path} does not exist; expected {expected}")
    return Path(path)


@contextmanager
def tar_errors(path: Path) -> Iterator[None]:
    """Turn a corrupt or truncated archive, wherever reading it fails, into a ConfigError."""
    try:
        yield
    except _TAR_ERRORS as error:
        raise ConfigError(f"{path} is not a readable tar archive ({error})") from None


def build_dataset(
    name: str, *, options: dict[str, Any] | None = None, subset: dict[str, Any] | None = None
) -> ImageDataset:
    """Load dataset ``name`` with its loader's ``options``, then take a stratified ``subset``.

    ``subset`` is ``{"train": n, "test": n, "seed": s}`` (seed optional, default 0).
    """
    for field, value in (("options", options), ("subset", subset)):
        if value is not None and not isinstance(value, dict):
            raise ConfigError(f"dataset '{name}' {field} must be a mapping; got {type(value).__name__}")
    if subset is not None:  # checked before loading, which can take minutes
        _check_subset_keys(name, subset)
    dataset = DATASETS.build(name, **(options or {}))
    return dataset if subset is None else stratified_subset(dataset, **subset)


def _check_subset_keys(name: str, subset: dict[str, Any]) -> None:
    unknown = sorted(set(subset) - set(SUBSET_KEYS))
    if unknown:
        raise ConfigError(
            f"dataset '{name}' subset has unknown key(s) {', '.join(unknown)}; allowed: {', '.join(SUBSET_KEYS)}"
        )
    missing = [key for key in ("train", "test") if key not in subset]
    if missing:
        raise ConfigError(
            f"dataset '{name}' subset lacks {', '.join(missing)}; it needs train and test (seed optional)"
        )


def image_size(name: str, options: dict[str, Any] | None = None) -> tuple[int, int] | None:
    """(H, W) of dataset ``name``'s images with ``options``, known without loading; None where only loading tells."""
    loader = inspect.signature(DATASETS.get(name)).parameters
    side = (options or {}).get("image_size", loader["image_size"].default) if "image_size" in loader \
        else DATASETS.facts(name)["image_size"]
    return None if side is None else (side, side)
