"""`snakemake --profile slurm` on a real single-node Slurm cluster: jobs go through sbatch, packed, outputs are right."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import polars as pl
import pytest

from helpers import snakemake
from slurm.cluster import SlurmUnavailable, local_slurm_cluster


@pytest.fixture
def cluster_workdir():
    # Not tmp_path: unix sockets live here and must stay under the 108-byte path limit.
    with tempfile.TemporaryDirectory(prefix="slurm-") as d:
        yield Path(d)


@pytest.mark.xdist_group("slurm")  # one local cluster at a time: its daemons share this host
def test_tiny_dag_runs_through_sbatch(cluster_workdir, scratch_repo, workflow_env):
    # The training rule asks for a GPU, as at paper scale: the cluster's fake gpu:1 must schedule it.
    (scratch_repo / "gpu.yaml").write_text("resources: {train: {gpu: 1, runtime: 5, mem_mb: 1500, cpus: 1}}\n")
    try:
        with local_slurm_cluster(cluster_workdir) as cluster:
            started = time.perf_counter()
            snakemake(
                scratch_repo, "--profile", "slurm", "all_tables",
                "--configfile", "tests/fixtures/tiny.yaml", "gpu.yaml",
                # This cluster has no accounting database: the profile's documented fallback.
                "--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "1",
                # The cluster's command wrappers first on PATH (they pin SLURM_CONF), then the venv.
                env={**workflow_env, **cluster.env, "PATH": f"{cluster.workdir / 'bin'}:{workflow_env['PATH']}"},
            )
            seconds = time.perf_counter() - started
            runs = sorted((scratch_repo / "results/runs/mnist5k/clean/none/tinycnn/tiny").glob("seed*/metrics.json"))
            records = [json.loads(path.read_text()) for path in runs]
            assert [r["seed"] for r in records] == [0, 1]
            job_ids = [r["slurm_job_id"] for r in records]
            # Packed: the profile's `group-components: runs=4` puts both trainings in one Slurm job, on its one
            # GPU (gpu's scope is local) one after the other.
            assert all(job_ids) and len(set(job_ids)) == 1
            for job_id in set(job_ids):
                info = cluster.job_info(job_id)
                assert info["JobState"] == "COMPLETED", info
                assert any("gpu" in value for value in info.values()), info  # TresPerJob/TresPerNode gres/gpu
    except SlurmUnavailable as error:
        pytest.skip(f"no Slurm here: {error.reason}")

    table = pl.read_csv(scratch_repo / "paper/baselines/tables/baselines.csv")
    final = table.filter(pl.col("column") == "final").row(0, named=True)
    assert final["n_seeds"] == 2
    assert final["ours"] == pytest.approx(sum(r["final_test_acc"] for r in records) / 2)
    print(f"tiny DAG through Slurm: {seconds:.0f} s")
