"""Atomic writes: a killed job never leaves a file that looks finished.

Every output is written to a temporary file in the destination's folder and
renamed over the destination only once it is complete (``os.replace`` is
atomic within one file system).

Two properties every writer here keeps, because a lab shares and versions what
the pipeline writes:

- **Permissions from the user's umask.** The temporary file is created with
  mode 0o666 and the kernel applies the umask (and a folder's default ACL), as
  for any ``open(path, "w")``: 0644 under umask 022, 0664 under 002. (``mkstemp``
  creates 0600, which the rename would carry to the output.)
- **The same bytes for the same content.** A container (npz) carries no write
  time; a ``torch.save`` archive does not carry the temporary file's name.
  DVC and checksums then see a rerun that produced the same result as unchanged.
"""

from __future__ import annotations

import json
import os
import secrets
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

# Zip entries carry a modification time; a fixed one (the zip format's earliest) keeps npz bytes a function
# of the arrays alone.
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def _create_temporary(folder: Path, name: str) -> Path:
    """A new, empty file beside ``name`` in ``folder``, created 0o666 & ~umask, never an existing one."""
    for _ in range(100):
        tmp = folder / f".{name}.{secrets.token_hex(4)}.tmp"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(f"no free temporary name for {folder / name} after 100 tries")


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` on success.

    The temporary file exists, empty, with the umask's permissions; a writer that replaces it instead of
    writing into it (matplotlib does not) would lose them.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_temporary(path.parent, path.name)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_npz(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    """``np.savez`` (uncompressed, readable by ``np.load``) with no write time in the archive."""
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, array in arrays.items():
            entry = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_EPOCH)
            entry.external_attr = 0o644 << 16  # the mode an unzip gives the member; fixed like the time
            with archive.open(entry, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` through an open file: given a path, torch names the archive's folder after the file,
    here a random temporary name; given a file, it names it ``archive`` whatever the path."""
    import torch  # here, not at the top: table and figure jobs write json and npz and need no torch (2 s)

    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)
