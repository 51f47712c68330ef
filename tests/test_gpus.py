"""Jobs on one machine with several GPUs: they spread over the GPUs, and a killed job's slot is free again."""

from __future__ import annotations

import subprocess
import sys
import uuid
from types import SimpleNamespace

import pytest
import torch

from poisonlab import gpus
from poisonlab.training import loop

# A process that claims one of the GPUs in argv (lock dir, slots, uuids...), prints its index, and holds it
# until its stdin closes.
HOLDER = """
import sys
from pathlib import Path
from poisonlab.gpus import claim_gpu
print(claim_gpu(sys.argv[3:], Path(sys.argv[1]), int(sys.argv[2])), flush=True)
sys.stdin.read()
"""


def _holder(lock_dir, uuids, slots=64):
    process = subprocess.Popen([sys.executable, "-c", HOLDER, str(lock_dir), str(slots), *uuids],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    return process, int(process.stdout.readline())


def _uuids(n):
    return [f"GPU-{uuid.uuid4()}" for _ in range(n)]


def test_concurrent_jobs_spread_over_the_gpus_and_a_killed_job_frees_its_slot(tmp_path):
    uuids = _uuids(2)
    holders = [_holder(tmp_path, uuids) for _ in range(5)]
    assert [index for _, index in holders] == [0, 1, 0, 1, 0]  # slot 0 of each GPU, then slot 1, ...
    # A killed job's slot is free again at once: the kernel drops the lock with the process.
    killed, killed_index = holders[1]
    killed.kill()
    killed.wait()
    again, again_index = _holder(tmp_path, uuids)
    assert again_index == killed_index == 1
    for process, _ in (*holders[:1], *holders[2:], (again, again_index)):
        process.communicate("")


def test_past_the_last_slot_a_job_shares_a_gpu_without_waiting(tmp_path):
    uuids = _uuids(2)
    holders = [_holder(tmp_path, uuids, slots=1) for _ in range(2)]
    extra = subprocess.run([sys.executable, "-c", HOLDER, str(tmp_path), "1", *uuids], input="",
                           capture_output=True, text=True, timeout=60, check=True)
    assert int(extra.stdout) in (0, 1)
    for process, _ in holders:
        process.communicate("")


def test_a_process_keeps_the_gpu_it_claimed(tmp_path):
    uuids = _uuids(2)
    index = gpus.claim_gpu(uuids, tmp_path)
    assert gpus.claim_gpu(uuids, tmp_path) == index  # a second pick_device in the same job: the same GPU
    other, other_index = _holder(tmp_path, uuids)
    assert other_index == 1 - index
    other.communicate("")


def test_no_gpu_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="no GPU"):
        gpus.claim_gpu([], tmp_path)


def test_plain_cuda_on_several_gpus_is_a_claimed_one_and_an_index_is_kept(monkeypatch, tmp_path):
    uuids = _uuids(2)
    chosen = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: SimpleNamespace(uuid=uuids[i]))
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    monkeypatch.setattr(loop, "claim_gpu", lambda ids: gpus.claim_gpu(ids, tmp_path))
    other, other_index = _holder(tmp_path, uuids)
    device = loop.pick_device("cuda")
    assert device == torch.device("cuda", 1 - other_index) and chosen == [1 - other_index]
    assert loop.pick_device("cuda:1") == torch.device("cuda", 1)
    other.communicate("")
