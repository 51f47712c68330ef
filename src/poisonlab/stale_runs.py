"""Runs killed with their job: ``close_stale_runs``, called at the start of every DAG (tracking's docstring
gives the run states this keeps). A run's process — host and pid, or its Slurm job — is tagged at every
(re)start (``tracking.process_tags``); a RUNNING run whose process is not seen alive now is closed KILLED.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
from pathlib import Path

from poisonlab.tracking import tracking_uri


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process holds the pid: alive, though perhaps not ours
        return True
    return True


def _slurm_jobs() -> set[str] | None:
    """The user's queued and running Slurm job ids, or None where Slurm cannot be asked."""
    squeue = shutil.which("squeue")
    if squeue is None:
        return None
    try:
        listed = subprocess.run([squeue, "--noheader", "--format=%i", f"--user={getpass.getuser()}"],
                                capture_output=True, text=True, timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return set(listed.split())


def _alive(tags: dict[str, str], slurm_jobs: set[str] | None) -> bool:
    """Whether the process a run's tags name is seen running now (False where it cannot be seen)."""
    job = tags.get("poisonlab.slurm_job_id", "")
    if job:
        return slurm_jobs is not None and job in slurm_jobs
    pid = tags.get("poisonlab.pid", "")
    return tags.get("poisonlab.host") == socket.gethostname() and pid.isdigit() and _pid_alive(int(pid))


def _resumable_keys(results: str | os.PathLike | None) -> set[str]:
    """Keys of the runs a rerun resumes: each folder under ``results`` holding ``checkpoint.pt`` names its run in
    ``run_key`` (the convention of every resumable run: training, segmentation, few-shot, SSL, editing)."""
    if results is None:
        return set()
    return {key_file.read_text().strip() for key_file in Path(results).rglob("run_key")
            if (key_file.parent / "checkpoint.pt").exists()}


def close_stale_runs(results: str | os.PathLike | None = None) -> list[str]:
    """Mark KILLED every RUNNING poisonlab run whose process is not running; return their ids.

    Called at the start of a DAG, before any job (Snakemake's ``onstart``). ``results`` is the folder
    holding ``runs/``: a closed run that a rerun will resume is tagged ``poisonlab.resumable=true``.
    """
    import mlflow

    client = mlflow.MlflowClient(tracking_uri())
    experiments = [e.experiment_id for e in client.search_experiments() if e.name.startswith("poisonlab/")]
    if not experiments:
        return []
    running = client.search_runs(experiments, filter_string="attributes.status = 'RUNNING'", max_results=50000)
    slurm_jobs = _slurm_jobs() if any(run.data.tags.get("poisonlab.slurm_job_id") for run in running) else None
    stale = [run.info.run_id for run in running if not _alive(run.data.tags, slurm_jobs)]
    resumable = _resumable_keys(results) if stale else set()  # a walk of the results: only when needed
    keys = {run.info.run_id: run.data.tags.get("poisonlab.run_key") for run in running}
    for run_id in stale:
        client.set_tag(run_id, "poisonlab.resumable", str(keys[run_id] in resumable).lower())
        client.set_terminated(run_id, status="KILLED")
    return stale
