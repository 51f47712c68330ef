"""Run tracking: each job writes a journal, the DAG's own process carries it into MLflow.

MLflow's store is ``sqlite:///mlflow.db`` at the project root unless ``MLFLOW_TRACKING_URI`` says
otherwise; telemetry is off. Tables are built from ``metrics.json`` only (DESIGN.md): MLflow is the
record people browse, never the one results are computed from.

Why a journal: importing MLflow and opening its SQLAlchemy store costs a job 2.5–4.5 s of CPU
(measured on 2 cores: ``import mlflow`` 2.6 s, store and experiment 1.9 s), more than a small training
job's whole start-up budget. So a job never imports MLflow. It appends what it would log — params and
tags at its start, its process at every (re)start, a row a epoch, the summary, its end — as JSON lines
to ``mlflow-journal/<run key>.jsonl`` beside the store (``journal_dir``). ``sync`` replays the lines
not yet replayed into MLflow, in one process that imports MLflow once: the DAG runs it at its start,
every ``SYNC_SECONDS`` while it runs (a background thread of Snakemake's process, so ``mlflow ui``
follows a run epoch by epoch), and at its end; ``poisonlab sync`` does it by hand (runs launched
outside the DAG). A run's key is its MLflow run's tag ``poisonlab.run_key`` and its record's
``run_key`` (``mlflow_run_id(key)`` finds the run); a journal whose run ended FINISHED is deleted
once replayed.

Run states follow the DAG, so the UI shows one live run per cell:

- A run is RUNNING while its job trains, FINISHED when it wrote ``metrics.json``,
  FAILED when its job raised.
- A job killed outright (SIGKILL, a node lost, Snakemake's own kill, Slurm's
  time limit) cannot end its run. At the start of every DAG (Snakemake's
  ``onstart``), after a ``sync``, ``stale_runs.close_stale_runs`` marks KILLED each RUNNING run
  whose process is not running now: the host and pid that (re)started it, or its Slurm
  job (``squeue``), recorded as tags at every start. Only a run positively seen alive
  stays RUNNING; one that cannot be probed (another host without a Slurm job, no
  ``squeue``) is closed, since a live run wrongly closed is still ended FINISHED by its
  journal's last line, while a dead run left open stays RUNNING for ever.
- A killed run whose folder still holds ``checkpoint.pt`` and its key in ``run_key``
  is KILLED too (nothing runs it until its cell is rerun, which this DAG may not do),
  tagged ``poisonlab.resumable=true``: the rerun of its cell appends to the same
  journal (``tracked_run``), which sets it RUNNING again, drops the tag and ends it
  FINISHED. Its checkpoint gone, the rerun starts a new run and the killed one stays
  KILLED. After a kill and a rerun, each cell therefore has one FINISHED run and any
  others KILLED.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import platform
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path
from typing import Any

from poisonlab.atomic import atomic_path, write_json

logger = logging.getLogger(__name__)

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
        experiment_id(client, name)
    client.search_experiments(max_results=1)  # an empty list still creates the store
    return tracking_uri()


# MLflow 3's UI opens an experiment in the view its kind names; without the tag it may guess GenAI.
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}


def experiment_id(client: Any, name: str) -> str:
    """The id of experiment ``name``, created (as a model-training experiment) if missing."""
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        return client.create_experiment(name, tags=EXPERIMENT_TAGS)
    if "mlflow.experimentKind" not in experiment.tags:  # one made by an older poisonlab
        client.set_experiment_tag(experiment.experiment_id, "mlflow.experimentKind",
                                  EXPERIMENT_TAGS["mlflow.experimentKind"])
    return experiment.experiment_id


def journal_dir() -> Path:
    """Where jobs write their journals: ``mlflow-journal/`` beside a sqlite store, else at the project root."""
    uri = tracking_uri()
    if uri.startswith("sqlite:///"):
        return Path(uri.removeprefix("sqlite:///")).parent / "mlflow-journal"
    return project_root() / "mlflow-journal"


def _now_ms() -> int:
    return int(time.time() * 1000)


class TrackedRun:
    """One run's journal, appended to by its job; ``log_epoch`` is the trainer's per-epoch callback."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.path = journal_dir() / f"{key}.jsonl"

    def append(self, event: str, **fields: Any) -> None:
        # One write of one line a call: a job killed mid-write leaves at most a partial last line,
        # which sync never reads (it reads up to the last newline) and the next start ends.
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a+") as journal:
            journal.seek(0, os.SEEK_END)
            if journal.tell():
                journal.seek(journal.tell() - 1)
                if journal.read(1) != "\n":
                    journal.write("\n")
            journal.write(json.dumps({"event": event, "time": _now_ms(), **fields}) + "\n")

    def events(self) -> list[dict[str, Any]]:
        return [event for _, event in _complete_events(self.path)]

    def log_epoch(self, row: dict[str, float]) -> None:
        self.append("metrics", step=int(row["epoch"]),
                    metrics={k: float(v) for k, v in row.items() if k != "epoch"})

    def log_missing_epochs(self, history: list[dict[str, float]]) -> None:
        """Log the rows of a resumed checkpoint's history this run lacks.

        A job killed after writing its checkpoint and before logging that epoch would otherwise leave
        the epoch out of MLflow for good, since the resumed run starts at the next one.
        """
        logged = {event["step"] for event in self.events() if event["event"] == "metrics" and "step" in event}
        for row in history:
            if int(row["epoch"]) not in logged:
                self.log_epoch(row)

    def log_summary(self, metrics: dict[str, float]) -> None:
        self.append("metrics", metrics={k: float(v) for k, v in metrics.items()})


def _complete_events(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(line number, event) of each complete line; a line cut by a kill is skipped."""
    text = path.read_text() if path.exists() else ""
    events = []
    for number, line in enumerate(text.split("\n")[:-1]):  # the part after the last newline is unfinished
        try:
            events.append((number, json.loads(line)))
        except json.JSONDecodeError:
            continue
    return events


@contextmanager
def tracked_run(run_dir: str | os.PathLike, *, resume: bool, experiment: str, run_name: str,
                params: dict[str, Any], tags: dict[str, str]) -> Iterator[TrackedRun]:
    """Start a run's journal, or with ``resume`` append to the one named by ``run_dir/run_key``.

    A failure ends the run FAILED, not FINISHED; a success removes ``run_key`` (nothing resumes a finished run).
    Every start records its process (host, pid, Slurm job), which ``stale_runs.close_stale_runs`` probes.
    """
    key_path = Path(run_dir) / "run_key"
    resumed = resume and key_path.exists()
    run = TrackedRun(key_path.read_text().strip() if resumed else uuid.uuid4().hex)
    if not resumed:
        run.append("start", experiment=experiment, run_name=run_name,
                   params={k: str(v) for k, v in params.items()}, tags={k: str(v) for k, v in tags.items()})
    run.append("process", tags=process_tags())
    key_path.write_text(run.key)
    try:
        yield run
    except BaseException:
        run.append("end", status="FAILED")
        raise
    run.append("end", status="FINISHED")
    key_path.unlink()


# ---------------------------------------------------------------- journals into MLflow

SYNC_SECONDS = 20
MAX_BATCH = 100  # MLflow's log_batch takes at most 100 params or tags and 1,000 metrics a call


def sync() -> int:
    """Replay every journal's unreplayed lines into MLflow; return how many lines. Safe to call at any time:
    one sync at a time (a lock file), and each journal's position kept in ``<key>.synced``."""
    folder = journal_dir()
    if not folder.is_dir():
        return 0
    import mlflow

    client = mlflow.MlflowClient(tracking_uri())
    replayed = 0
    with open(folder / ".sync.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        # A run's own journal (<key>.jsonl) before the results attached to it (<key>.<name>.jsonl).
        for path in sorted(folder.glob("*.jsonl"), key=lambda path: (path.name.count("."), path.name)):
            replayed += _replay(client, path)
    return replayed


def _replay(client: Any, path: Path) -> int:
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.exceptions import MlflowException

    key, state_path = path.name.split(".")[0], path.with_suffix(".synced")
    state = json.loads(state_path.read_text()) if state_path.exists() else {"run_id": None, "lines": 0}
    if state["run_id"] is not None:
        try:
            client.get_run(state["run_id"])
        except MlflowException:  # the store was replaced since: replay the whole journal into it
            state = {"run_id": None, "lines": 0}
    events = [(n, event) for n, event in _complete_events(path) if n >= state["lines"]]
    run_id, ended = state["run_id"], None
    for number, event in events:
        if event["event"] == "start":
            # A sync killed after creating the run and before saving its position (``state``) replays the
            # journal from its start: the run, found by its key, is continued rather than made twice
            # (MLflow keeps one copy of a metric logged again with the same step, time and value).
            run_id = _run_with_key(client, key) or client.create_run(
                experiment_id(client, event["experiment"]), start_time=event["time"], run_name=event["run_name"],
                tags={**event["tags"], "poisonlab.run_key": key}).info.run_id
            params = [Param(k, v) for k, v in event["params"].items()]
            for i in range(0, len(params), MAX_BATCH):
                client.log_batch(run_id, params=params[i:i + MAX_BATCH])
        elif event["event"] == "attach":  # another job's results for a run whose journal was replayed
            run_id = mlflow_run_id(key)
            if run_id is None:
                return 0  # its run is not in MLflow yet: the next sync replays it
        elif event["event"] == "paper":
            run_id = _paper_run(client, event["slug"], event["scale"], event["title"])
        elif run_id is None:
            logger.warning("journal %s: no start line; skipped", path)
            return 0
        elif event["event"] == "process":
            client.update_run(run_id, status="RUNNING")
            client.log_batch(run_id, tags=[RunTag(k, v) for k, v in event["tags"].items()])
            if "poisonlab.resumable" in client.get_run(run_id).data.tags:  # closed as killed; live again now
                client.delete_tag(run_id, "poisonlab.resumable")
        elif event["event"] == "metrics":
            step = event.get("step", 0)
            client.log_batch(run_id, metrics=[Metric(k, v, event["time"], step) for k, v in event["metrics"].items()])
        elif event["event"] == "end":
            client.set_terminated(run_id, status=event["status"], end_time=event["time"])
        elif event["event"] == "artifacts":
            for file in map(Path, event["files"]):
                if file.exists():  # a folder cleaned since: its next build logs it again
                    client.log_artifact(run_id, str(file), artifact_path=event["folder"])
                if file.is_relative_to(path.parent):  # a file written for MLflow only (a table's cells)
                    file.unlink(missing_ok=True)
                    file.parent.rmdir()
        state = {"run_id": run_id, "lines": number + 1}
        ended = event.get("status") if event["event"] == "end" else None
    if ended == "FINISHED" or (events and events[0][1]["event"] in ("attach", "paper")):  # written whole, once
        path.unlink()
        state_path.unlink(missing_ok=True)
    elif events:
        write_json(state_path, state)
    return len(events)


def log_results(run_dir: str | os.PathLike, name: str, results: dict[str, Any]) -> None:
    """Attach a finished run's later results (an evaluation's json) to its MLflow run, as metrics ``name.<key>``.

    The run is named by its folder's ``metrics.json`` (``run_key``). The journal, ``<key>.<name>.jsonl``, is
    written whole (atomically), so a sync never sees half of it.
    """
    key = json.loads((Path(run_dir) / "metrics.json").read_text()).get("run_key")
    if key is None:
        return  # a record from before run keys: nothing to attach to
    metrics = {f"{name}.{path}": value for path, value in _numbers(results)}
    _write_whole(journal_dir() / f"{key}.{name}.jsonl",
                 [{"event": "attach", "time": _now_ms()}, {"event": "metrics", "time": _now_ms(), "metrics": metrics}])


def _write_whole(path: Path, lines: list[dict[str, Any]]) -> None:
    """A journal of another job's results, written at once (atomically): a sync never sees half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text("".join(json.dumps(line) + "\n" for line in lines))


PAPERS_EXPERIMENT = "poisonlab/papers"


def log_paper_outputs(slug: str, scale: str, title: str, folder: str, files: list[str],
                      cells: dict[str, Any] | None = None) -> None:
    """Attach a paper's table or figure (``files``, under the artifact folder ``folder``) to the paper's MLflow
    run: one a (paper, scale), in the experiment ``poisonlab/papers``. With ``cells`` (a table's cell → the run
    folders it averages, which are the ``run_dir`` tags of their runs) a ``<name>.cells.json`` beside it lets a
    reader follow a cell to its runs. Written whole, as ``log_results``."""
    name = Path(files[0]).stem
    files = [str(Path(file).resolve()) for file in files]
    if cells is not None:
        cells_path = journal_dir() / f"paper-{scale}-{slug}.{folder}-{name}" / f"{name}.cells.json"
        cells_path.parent.mkdir(parents=True, exist_ok=True)
        write_json(cells_path, cells)
        files.append(str(cells_path))
    _write_whole(journal_dir() / f"paper-{scale}-{slug}.{folder}-{name}.jsonl",
                 [{"event": "paper", "time": _now_ms(), "slug": slug, "scale": scale, "title": title},
                  {"event": "artifacts", "time": _now_ms(), "folder": folder, "files": files}])


def _paper_run(client: Any, slug: str, scale: str, title: str) -> str:
    """The id of the (finished) run that holds a paper's tables and figures at a scale, created if missing."""
    experiment = experiment_id(client, PAPERS_EXPERIMENT)
    runs = client.search_runs([experiment], filter_string=f"tags.`poisonlab.paper` = '{slug}' and "
                                                          f"tags.`poisonlab.scale` = '{scale}'")
    if runs:
        return runs[0].info.run_id
    run_id = client.create_run(experiment, run_name=f"{slug} ({scale})",
                               tags={"poisonlab.paper": slug, "poisonlab.scale": scale, "title": title,
                                     **environment_tags()}).info.run_id
    client.set_terminated(run_id, status="FINISHED")
    return run_id


def _numbers(tree: Any, prefix: str = "") -> Iterator[tuple[str, float]]:
    """(dotted path, value) of every number in nested dicts (lists, such as per-epoch rows, are left out)."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _numbers(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(tree, (int, float)) and not isinstance(tree, bool):
        yield prefix, float(tree)


def mlflow_run_id(key: str) -> str | None:
    """The id of the MLflow run a record's ``run_key`` names (after a ``sync``), or None."""
    import mlflow

    return _run_with_key(mlflow.MlflowClient(tracking_uri()), key)


def _run_with_key(client: Any, key: str) -> str | None:
    experiments = [e.experiment_id for e in client.search_experiments() if e.name.startswith("poisonlab/")]
    runs = client.search_runs(experiments, filter_string=f"tags.`poisonlab.run_key` = '{key}'") if experiments else []
    return runs[0].info.run_id if runs else None


def sync_in_background(interval: float = SYNC_SECONDS) -> None:
    """Sync every ``interval`` seconds from a daemon thread, for as long as the process (Snakemake's) lives."""

    def loop() -> None:
        while True:
            time.sleep(interval)
            try:
                sync()
            except Exception as error:  # a failed sync is retried at the next tick and at the DAG's end
                logger.warning("MLflow sync failed (retried): %s", error)

    threading.Thread(target=loop, name="poisonlab-mlflow-sync", daemon=True).start()


# ---------------------------------------------------------------- the process a run is in (stale_runs probes it)

# Where a run's process is, tagged at every (re)start: a resume may run on another host or Slurm job.
PROCESS_TAGS = ("poisonlab.host", "poisonlab.pid", "poisonlab.slurm_job_id")


def process_tags() -> dict[str, str]:
    return dict(zip(PROCESS_TAGS, (socket.gethostname(), str(os.getpid()), os.environ.get("SLURM_JOB_ID", ""))))
