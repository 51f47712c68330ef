"""Which GPU a job runs on when one machine has several: spread evenly over them, not all on ``cuda:0``.

On one machine Snakemake limits how many GPU jobs run at once (the ``gpu`` resource: the GPUs present
times the scale's ``runs_per_gpu``, set by rules/common.smk) but gives a job no GPU id, so every job
would take ``cuda:0``. A job instead claims a slot of a GPU: an exclusive ``flock`` on the lock file
``<GPU UUID>.<slot>.lock`` (the same file for the same GPU under any ``CUDA_VISIBLE_DEVICES``, and for
every user of the machine), held until the process exits, when the kernel releases it, killed or not.
Slots are tried slot by slot across the GPUs (slot 0 of every GPU, then slot 1, ...), so the jobs spread
evenly: 4 jobs on 2 GPUs are 2 on each. Past ``MAX_SLOTS`` a job shares the GPU its process id picks.

On Slurm a job sees only its own GPUs (``CUDA_VISIBLE_DEVICES``), so ``cuda:0`` is already its own; a
packed Slurm job's runs claim its GPUs the same way.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

LOCK_DIR = Path(tempfile.gettempdir()) / "poisonlab-gpus"
MAX_SLOTS = 64  # jobs a GPU is claimed by at most; far more than fit one

_held: dict[str, int] = {}  # GPU UUID → the descriptor whose lock this process holds (open for its life)


def gpus_present() -> int:
    """The GPUs a job started here sees (``CUDA_VISIBLE_DEVICES`` applied); 0 without CUDA."""
    import torch  # here, not at the top: claiming a GPU needs no torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def claim_gpu(uuids: Sequence[str], lock_dir: Path = LOCK_DIR, max_slots: int = MAX_SLOTS) -> int:
    """The index into ``uuids`` (the visible GPUs, in CUDA's order) of the GPU this process runs on.

    The GPU of the first free slot (slot by slot across the GPUs), or the one this process holds already;
    with every slot held, the one ``pid % len(uuids)`` picks.
    """
    if not uuids:
        raise ValueError("claim_gpu: no GPU to claim")
    for index, uuid in enumerate(uuids):
        if uuid in _held:
            return index
    # Sticky and world-writable as /tmp itself, so every user's jobs share the locks.
    lock_dir.mkdir(mode=0o1777, parents=True, exist_ok=True)
    if lock_dir.stat().st_uid == os.getuid():
        lock_dir.chmod(0o1777)
    for slot in range(max_slots):
        for index, uuid in enumerate(uuids):
            # Read-only: another user's lock file can still be opened, and flock needs no write access.
            descriptor = os.open(lock_dir / f"{uuid}.{slot}.lock", os.O_RDONLY | os.O_CREAT, 0o644)
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(descriptor)
                continue
            _held[uuid] = descriptor
            return index
    return os.getpid() % len(uuids)
