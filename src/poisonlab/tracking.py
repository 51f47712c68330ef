"""Run tracking: MLflow for browsing, ``metrics.json`` for the tables.

MLflow logs to ``sqlite:///mlflow.db`` at the project root unless
``MLFLOW_TRACKING_URI`` says otherwise; telemetry is off. Tables are built
from ``metrics.json`` only (DESIGN.md): MLflow is the record people browse,
never the one results are computed from.

Run states follow the DAG, so the UI shows one live run per cell:

- A run is RUNNING while its job trains, FINISHED when it wrote ``metrics.json``,
  FAILED when its job raised.
- A job killed outright (SIGKILL, a node lost, Snakemake's own kill, Slurm's
  time limit) cannot close its run. At the start of every DAG (Snakemake's
  ``onstart``), ``close_stale_runs`` marks KILLED each RUNNING run whose process
  is not running now: the host and pid that (re)started it, or its Slurm job
  (``squeue``), recorded as tags at every start. Only a run positively seen alive
  stays RUNNING; one that cannot be probed (another host without a Slurm job, no
  ``squeue``) is closed, since a live run wrongly closed is set FINISHED by its
  own end anyway, while a dead run left open stays RUNNING for ever.
- A killed run whose folder still holds ``checkpoint.pt`` and its id in
  ``mlflow_run_id`` is KILLED too (nothing runs it until its cell is rerun, which
  this DAG may not do), tagged ``poisonlab.resumable=true``: the rerun of its
  cell resumes into it (``training.run``), which sets it RUNNING again, drops
  the tag and ends it FINISHED. Its checkpoint gone, the rerun starts a new run and the
  killed one stays KILLED. After a kill and a rerun, each cell therefore has one
  FINISHED run and any others KILLED.
"""

from __future__ import annotations

import getpass
import os
import platform
import shutil
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path
from typing import Any

# Set before mlflow is imported anywhere in the process: nothing phones home.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")


def project_root() -> Path:
    """The nearest folder upwards from the working directory holding a Snakefile or pyproject.toml."""
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / "Snakefile").exists() or (folder / "pyproject.toml").exists():
            return folder
    return here


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{project_root() / 'mlflow.db'}"


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=project_root(), capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def environment_tags() -> dict[str, str]:
    """Where and from what a run came: commit, host, Slurm job, library versions."""
    return {
        "git_commit": git_commit(),
        "host": socket.gethostname(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID", ""),
        "python": platform.python_version(),
        **{f"version.{lib}": version(lib) for lib in ("torch", "torchvision", "numpy", "poisonlab")},
    }


def experiment_name(dataset: str) -> str:
    return f"poisonlab/{dataset}"


def init_store(experiments: list[str] = ()) -> str:
    """Create the tracking store and the experiments now, from one process, before parallel jobs start.

    Two jobs that create the sqlite schema, or the same experiment, at once race; after this
    every job only adds runs.
    """
    import mlflow

    client = mlflow.MlflowClient(tracking_uri())
    for name in experiments:
        if client.get_experiment_by_name(name) is None:
            client.create_experiment(name)
    client.search_experiments(max_results=1)  # an empty list still creates the store
    return tracking_uri()


class MlflowRun:
    """One MLflow run; ``log_epoch`` is the trainer's per-epoch callback."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id

    def log_epoch(self, row: dict[str, float]) -> None:
        import mlflow

        mlflow.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=int(row["epoch"]))

    def log_missing_epochs(self, history: list[dict[str, float]]) -> None:
        """Log the rows of a resumed checkpoint's history this run lacks.

        A job killed after writing its checkpoint and before logging that epoch would otherwise leave
        the epoch out of MLflow for good, since the resumed run starts at the next one.
        """
        import mlflow

        logged = {m.step for m in mlflow.MlflowClient(tracking_uri()).get_metric_history(self.run_id, "test_acc")}
        for row in history:
            if int(row["epoch"]) not in logged:
                self.log_epoch(row)

    def log_summary(self, metrics: dict[str, float]) -> None:
        import mlflow

        mlflow.log_metrics(metrics)


# ---------------------------------------------------------------- runs killed with their job

# Where a run's process is, tagged at every (re)start: a resume may run on another host or Slurm job.
PROCESS_TAGS = ("poisonlab.host", "poisonlab.pid", "poisonlab.slurm_job_id")


def process_tags() -> dict[str, str]:
    return dict(zip(PROCESS_TAGS, (socket.gethostname(), str(os.getpid()), os.environ.get("SLURM_JOB_ID", ""))))


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


def _resumable_ids(results: str | os.PathLike | None) -> set[str]:
    """Ids of the runs a rerun resumes: each folder under ``results`` holding ``checkpoint.pt`` names its run in
    ``mlflow_run_id`` (the convention of every resumable run: training, segmentation, few-shot, SSL, editing)."""
    if results is None:
        return set()
    return {id_file.read_text().strip() for id_file in Path(results).rglob("mlflow_run_id")
            if (id_file.parent / "checkpoint.pt").exists()}


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
    resumable = _resumable_ids(results) if stale else set()  # a walk of the results: only when needed
    for run_id in stale:
        client.set_tag(run_id, "poisonlab.resumable", str(run_id in resumable).lower())
        client.set_terminated(run_id, status="KILLED")
    return stale


# ---------------------------------------------------------------- one run


@contextmanager
def mlflow_run(*, experiment: str, run_name: str, params: dict[str, Any], tags: dict[str, str],
               run_id: str | None = None) -> Iterator[MlflowRun]:
    """Start (or, given ``run_id``, resume) a run; a failure marks it FAILED, not FINISHED.

    Every start tags the run with its process (host, pid, Slurm job), which ``close_stale_runs`` probes.
    """
    import mlflow

    mlflow.set_tracking_uri(tracking_uri())
    mlflow.set_experiment(experiment)
    with mlflow.start_run(run_id=run_id, run_name=None if run_id else run_name) as run:
        if run_id is None:
            mlflow.log_params(params)
            mlflow.set_tags(tags)
        mlflow.set_tags(process_tags())
        if "poisonlab.resumable" in run.data.tags:  # closed as killed at a DAG's start; live again now
            mlflow.delete_tag("poisonlab.resumable")
        yield MlflowRun(run.info.run_id)
