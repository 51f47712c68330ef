"""The local Slurm cluster used by the Snakemake `--profile slurm` tests: it schedules jobs, GPU ones included."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from slurm.cluster import SlurmUnavailable, local_slurm_cluster


@pytest.fixture
def cluster_workdir():
    # Not tmp_path: Slurm and MUNGE put unix sockets in here, and a long pytest path
    # (deep basetemp, long test name) would exceed the 108-byte socket path limit.
    with tempfile.TemporaryDirectory(prefix="slurm-") as d:
        yield Path(d)


@pytest.mark.xdist_group("slurm")  # one local cluster at a time: its daemons share this host
def test_local_cluster_runs_plain_and_gpu_jobs(cluster_workdir, tmp_path):
    try:
        with local_slurm_cluster(cluster_workdir) as cluster:
            daemons = [int(p.read_text()) for p in (cluster.workdir / "run").glob("*.pid")]
            assert len(daemons) == 3  # munged, slurmctld and slurmd wrote their pid files

            # Snakemake's jobstep executor strips SLURM_CONF before its `srun`; that must still work.
            plain = cluster.sbatch(
                "--wrap",
                "echo $SLURM_JOB_ID > job_id.txt; env -u SLURM_CONF srun -n1 hostname > step.txt",
                cwd=tmp_path,
            )
            gpu = cluster.sbatch(
                "--gres=gpu:1",
                "--mem=100M",
                "-c",
                "1",
                "--wrap",
                "echo hi > out.txt; echo $CUDA_VISIBLE_DEVICES > gpu.txt",
                cwd=tmp_path,
            )

            failing = cluster.sbatch("--wrap", "exit 3", cwd=tmp_path)

            for job_id in (plain, gpu):
                info = cluster.wait_for_job(job_id)
                assert (info["JobState"], info["ExitCode"]) == ("COMPLETED", "0:0"), info
            info = cluster.wait_for_job(failing)
            assert (info["JobState"], info["ExitCode"]) == ("FAILED", "3:0"), info
            assert (tmp_path / "job_id.txt").read_text().strip() == plain
            assert (tmp_path / "step.txt").read_text().strip() == cluster.node
            assert (tmp_path / "out.txt").read_text() == "hi\n"
            assert (tmp_path / "gpu.txt").read_text().strip() == "0"  # Slurm handed out the fake GPU

            # Finished jobs stay visible to squeue (MinJobAge), which the executor plugin relies on.
            listed = cluster.run(["squeue", "--noheader", "--states=all", "--format=%i|%T"]).stdout.split()
            assert {f"{plain}|COMPLETED", f"{gpu}|COMPLETED", f"{failing}|FAILED"} <= set(listed)
    except SlurmUnavailable as exc:
        pytest.skip(exc.reason)

    for pid in daemons:  # leaving the context stopped (and reaped) every daemon it started
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
