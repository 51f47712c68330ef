"""MLflow states that match the DAG: a killed job's run is closed at the next DAG's start, a rerun resumes into it;
papers' outputs in their own runs; a tracking server fed by concurrent jobs and syncs."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import signal
import sys
import textwrap
import time
from pathlib import Path

import pytest

from helpers import ROOT, Killed, quadrant_dataset, snakemake
from poisonlab import stale_runs, tracking

# A training job: the toy cell's run, SIGKILLed by itself right after epoch ``kill_after`` is checkpointed and logged
# (no clean-up of any kind, as when a node dies); ``kill_after`` 0 trains to the end.
TRAIN_JOB = textwrap.dedent("""
    import os, signal, sys
    import torch
    from poisonlab import tracking
    from poisonlab.training import Recipe
    from poisonlab.training.run import RunSpec, train_run

    data, run_dir, seed, kill_after = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    torch.set_num_threads(1)
    log_epoch = tracking.TrackedRun.log_epoch

    def log_then_die(self, row):
        log_epoch(self, row)
        if row["epoch"] == kill_after:
            os.kill(os.getpid(), signal.SIGKILL)

    tracking.TrackedRun.log_epoch = log_then_die
    recipe = Recipe.from_dict({"epochs": 4, "batch_size": 32, "lr": 0.05, "precision": "fp32"})
    spec = RunSpec(dataset="quadrants", arch="smallcnn", recipe="toy", seed=seed)
    train_run(spec, recipe, data, run_dir, device="cpu", progress=False, keep_weights_every=4)
""")


@pytest.fixture
def store(tmp_path, monkeypatch) -> str:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    tracking.init_store([tracking.experiment_name("quadrants")])
    return uri


def train_job(data: Path, results: Path, seed: int, *, kill_after: int = 0) -> subprocess.CompletedProcess:
    run_dir = results / "runs" / f"quadrants/clean/none/smallcnn/toy/seed{seed}"
    return subprocess.run([sys.executable, "-c", TRAIN_JOB, str(data), str(run_dir), str(seed), str(kill_after)],
                          capture_output=True, text=True, timeout=300, env=os.environ.copy())


def runs_by_cell(uri: str) -> dict[str, list[tuple[str, str]]]:
    """{run name: [(status, resumable tag), ...]} of every run in the store."""
    import mlflow

    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name(tracking.experiment_name("quadrants")).experiment_id
    cells: dict[str, list[tuple[str, str]]] = {}
    for run in client.search_runs([experiment]):
        cells.setdefault(run.info.run_name, []).append((run.info.status, run.data.tags.get("poisonlab.resumable", "")))
    return {name: sorted(states) for name, states in sorted(cells.items())}


@pytest.mark.slow
def test_killed_training_jobs_are_closed_at_the_next_start_and_a_rerun_finishes_one_run_a_cell(tmp_path, store):
    data = tmp_path / "quadrants.npz"
    quadrant_dataset(n_train=512).save(data)
    results = tmp_path / "results"
    cell = {seed: f"quadrants/clean/none/smallcnn/toy/seed{seed}" for seed in (0, 1)}

    for seed in (0, 1):  # the DAG is killed while both cells train
        assert train_job(data, results, seed, kill_after=2).returncode == -9
    tracking.sync()  # the DAG's process replays the jobs' journals
    assert runs_by_cell(store) == {cell[0]: [("RUNNING", "")], cell[1]: [("RUNNING", "")]}  # open for ever, so far
    (results / "runs" / cell[1] / "checkpoint.pt").unlink()  # seed 1 can no longer resume: its run is dead

    # The next DAG starts: both runs are closed, the one with a checkpoint marked as resumable.
    assert len(stale_runs.close_stale_runs(results)) == 2
    assert runs_by_cell(store) == {cell[0]: [("KILLED", "true")], cell[1]: [("KILLED", "false")]}
    assert stale_runs.close_stale_runs(results) == []  # nothing left open

    for seed in (0, 1):  # its jobs: seed 0 resumes into its run, seed 1 starts a new one
        rerun = train_job(data, results, seed)
        assert rerun.returncode == 0, rerun.stderr[-3000:]
    tracking.sync()
    assert runs_by_cell(store) == {cell[0]: [("FINISHED", "")], cell[1]: [("FINISHED", ""), ("KILLED", "false")]}

    # The resumed run's checkpoint has the bytes of an uninterrupted run's.
    uninterrupted = tmp_path / "uninterrupted"
    assert train_job(data, uninterrupted, 0).returncode == 0
    model = "runs/quadrants/clean/none/smallcnn/toy/seed0/model.pt"
    assert (results / model).read_bytes() == (uninterrupted / model).read_bytes()


def test_only_runs_seen_alive_stay_running(store, tmp_path, monkeypatch):
    import mlflow

    client = mlflow.MlflowClient(store)
    experiment = client.get_experiment_by_name(tracking.experiment_name("quadrants")).experiment_id
    dead = subprocess.Popen(["true"])  # a pid that no longer runs
    dead.wait()
    host = socket.gethostname()
    processes = {
        "this process": (host, os.getpid(), ""),
        "a dead process": (host, dead.pid, ""),
        "another host": ("elsewhere", os.getpid(), ""),
        "a queued slurm job": ("node1", 1, "123"),
        "an ended slurm job": ("node1", 1, "124"),
    }
    ids = {}
    for name, (host_name, pid, job) in processes.items():
        run = client.create_run(experiment, run_name=name)
        for key, value in zip(tracking.PROCESS_TAGS, (host_name, str(pid), job)):
            client.set_tag(run.info.run_id, key, value)
        ids[name] = run.info.run_id
    old = client.create_run(experiment, run_name="before process tags")  # a run of an older poisonlab
    ids["before process tags"] = old.info.run_id
    # squeue lists the user's jobs: 123 is queued, 124 has ended
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "squeue").write_text("#!/bin/sh\necho 123\necho 999\n")
    (tmp_path / "bin" / "squeue").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")

    closed = stale_runs.close_stale_runs(tmp_path / "results")
    states = {name: client.get_run(run_id).info.status for name, run_id in ids.items()}
    assert states == {"this process": "RUNNING", "a dead process": "KILLED", "another host": "KILLED",
                      "a queued slurm job": "RUNNING", "an ended slurm job": "KILLED",
                      "before process tags": "KILLED"}
    assert sorted(closed) == sorted(ids[name] for name, state in states.items() if state == "KILLED")


@pytest.mark.slow
def test_a_dag_start_closes_the_runs_of_jobs_killed_before(scratch_repo, workflow_env, monkeypatch):
    import mlflow

    uri = f"sqlite:///{scratch_repo / 'mlflow.db'}"  # the project's default store, where the DAG logs
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    tracking.init_store([tracking.experiment_name("mnist5k")])
    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name(tracking.experiment_name("mnist5k")).experiment_id
    stale = client.create_run(experiment, run_name="mnist5k/clean/none/smallcnn/tiny/seed0").info.run_id
    snakemake(scratch_repo, "--profile", "local", "--configfile", "tests/fixtures/tiny.yaml", "--",
              "data/clean/mnist5k.npz", env=workflow_env)
    assert client.get_run(stale).info.status == "KILLED"


def test_a_job_never_imports_mlflow_and_a_sync_carries_its_run_over(tmp_path, store):
    # The journal is the whole of a job's tracking: MLflow's import and store cost it nothing.
    data = tmp_path / "quadrants.npz"
    quadrant_dataset(n_train=128).save(data)
    check = TRAIN_JOB + "\nassert 'mlflow' not in sys.modules, 'a job imported mlflow'\n"
    run_dir = tmp_path / "run"
    job = subprocess.run([sys.executable, "-c", check, str(data), str(run_dir), "0", "0"],
                         capture_output=True, text=True, timeout=300)
    assert job.returncode == 0, job.stderr[-3000:]
    assert runs_by_cell(store) == {}  # nothing in MLflow before a sync
    record = json.loads((run_dir / "metrics.json").read_text())
    assert tracking.sync() == 4 + 2 + 1 + 1  # start, process, four epochs, the summary, the end
    assert runs_by_cell(store) == {"quadrants/clean/none/smallcnn/toy/seed0": [("FINISHED", "")]}
    assert tracking.sync() == 0 and not list(tracking.journal_dir().glob("*.jsonl"))  # replayed once, then gone


def test_sync_replays_each_line_once_and_skips_a_line_cut_by_a_kill(store, tmp_path):
    import mlflow

    with tracking.tracked_run(tmp_path, resume=False, experiment=tracking.experiment_name("quadrants"),
                              run_name="cell", params={"lr": 0.1}, tags={"arch": "smallcnn"}) as run:
        run.log_epoch({"epoch": 1, "test_acc": 50.0})
        assert tracking.sync() == 3  # start, process, epoch 1: the UI follows a live run
        with open(run.path, "a") as journal:
            journal.write('{"event": "metrics", "step": 2, "met')  # a job killed mid-line
        assert tracking.sync() == 0
        run.log_epoch({"epoch": 2, "test_acc": 60.0})  # a new line, after the cut one
        assert tracking.sync() == 1  # epoch 2; the cut line is skipped, never read again
    tracking.sync()
    client = mlflow.MlflowClient(store)
    run_id = tracking.mlflow_run_id(run.key)
    history = client.get_metric_history(run_id, "test_acc")
    assert sorted((m.step, m.value) for m in history) == [(1, 50.0), (2, 60.0)]
    assert client.get_run(run_id).data.params == {"lr": "0.1"} and client.get_run(run_id).info.status == "FINISHED"


def killed(*args):
    raise Killed


def test_a_sync_killed_before_saving_its_position_does_not_make_the_run_twice(store, tmp_path, monkeypatch):
    import mlflow

    with tracking.tracked_run(tmp_path, resume=False, experiment=tracking.experiment_name("quadrants"),
                              run_name="cell", params={"lr": 0.1}, tags={}) as run:
        run.log_epoch({"epoch": 1, "test_acc": 50.0})
        with monkeypatch.context() as patch:  # Snakemake's process killed mid-sync: MLflow has the run
            patch.setattr(tracking, "write_json", killed)
            with pytest.raises(Killed):
                tracking.sync()
        assert tracking.sync() == 3  # the whole journal again, from its start line
        run.log_epoch({"epoch": 2, "test_acc": 60.0})
    tracking.sync()
    client = mlflow.MlflowClient(store)
    runs = client.search_runs([client.get_experiment_by_name(tracking.experiment_name("quadrants")).experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED" and runs[0].data.params == {"lr": "0.1"}
    history = client.get_metric_history(runs[0].info.run_id, "test_acc")
    assert sorted((m.step, m.value) for m in history) == [(1, 50.0), (2, 60.0)]


def test_an_evaluation_lands_in_its_runs_mlflow_run_and_experiments_open_as_model_training(store, tmp_path):
    import mlflow

    with tracking.tracked_run(tmp_path, resume=False, experiment=tracking.experiment_name("quadrants"),
                              run_name="cell", params={}, tags={}) as run:
        run.log_summary({"final_test_acc": 91.0})
    (tmp_path / "metrics.json").write_text(json.dumps({"run_key": run.key}))
    # The evaluation job's results, attached before the run itself reached MLflow: replayed after it.
    tracking.log_results(tmp_path, "dfr", {"final": {"test_acc_after": 88.5, "epoch": 4}, "epochs": [{"x": 1}],
                                           "method": "lbfgs"})
    assert tracking.sync() == 4 + 2  # the run (start, process, summary, end); the attachment (attach, metrics)
    client = mlflow.MlflowClient(store)
    metrics = client.get_run(tracking.mlflow_run_id(run.key)).data.metrics
    assert metrics == {"final_test_acc": 91.0, "dfr.final.test_acc_after": 88.5, "dfr.final.epoch": 4.0}
    assert not list(tracking.journal_dir().glob("*.jsonl"))
    experiment = client.get_experiment_by_name(tracking.experiment_name("quadrants"))
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"


def test_a_papers_tables_and_figures_are_artifacts_of_its_run_and_a_cell_names_its_runs(store, tmp_path):
    import mlflow

    tables, figures = tmp_path / "paper/p/tables", tmp_path / "paper/p/figures"
    tables.mkdir(parents=True)
    figures.mkdir(parents=True)
    for path in (tables / "grid.csv", tables / "grid.html", figures / "curves.png"):
        path.write_text(path.name)
    cells = {"clean | none": ["results/runs/a/seed0", "results/runs/a/seed1"]}
    tracking.log_paper_outputs("p", "embedded", "A paper (2024)", "tables", [str(tables / "grid.csv"),
                                                                             str(tables / "grid.html")], cells=cells)
    tracking.log_paper_outputs("p", "embedded", "A paper (2024)", "figures", [str(figures / "curves.png")])
    assert tracking.sync() == 4  # each: the paper's run, its files
    # A rebuilt table is logged into the same run, not a second one.
    tracking.log_paper_outputs("p", "embedded", "A paper (2024)", "tables", [str(tables / "grid.csv")], cells=cells)
    tracking.sync()
    client = mlflow.MlflowClient(store)
    experiment = client.get_experiment_by_name(tracking.PAPERS_EXPERIMENT)
    [run] = client.search_runs([experiment.experiment_id])
    assert (run.info.run_name, run.info.status, run.data.tags["poisonlab.scale"]) == ("p (embedded)", "FINISHED",
                                                                                    "embedded")
    listed = {folder: sorted(a.path for a in client.list_artifacts(run.info.run_id, folder))
              for folder in ("tables", "figures")}
    assert listed == {"tables": ["tables/grid.cells.json", "tables/grid.csv", "tables/grid.html"],
                      "figures": ["figures/curves.png"]}
    followed = mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/tables/grid.cells.json")
    assert followed == cells
    assert [path.name for path in tracking.journal_dir().iterdir()] == [".sync.lock"]  # replayed once, then gone


@pytest.mark.slow
def test_two_concurrent_jobs_and_syncs_log_to_a_tracking_server(tmp_path, monkeypatch):
    """The cluster setup of the README: an MLflow server (here on loopback), two jobs training at once, and two
    syncs at once (the DAG's thread and a `poisonlab sync` by hand) replaying their journals into it."""
    import mlflow

    with socket.socket() as probe:  # a free port
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    uri = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{tmp_path}/server.db",
         "--artifacts-destination", str(tmp_path / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        client = mlflow.MlflowClient(uri)
        for _ in range(120):  # its start-up: seconds
            try:
                client.search_experiments()
                break
            except Exception:
                time.sleep(0.5)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        monkeypatch.chdir(tmp_path)  # the journals go to mlflow-journal/ here, as at a project root
        tracking.init_store([tracking.experiment_name("quadrants")])
        data = tmp_path / "quadrants.npz"
        quadrant_dataset(n_train=128).save(data)
        env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
        jobs = [subprocess.Popen([sys.executable, "-c", TRAIN_JOB, str(data), str(tmp_path / f"runs/seed{seed}"),
                                  str(seed), "0"], cwd=tmp_path, env=env) for seed in (0, 1)]
        sync = [str(Path(sys.executable).parent / "poisonlab"), "--config", str(ROOT / "config/config.yaml"), "sync"]
        syncs = [subprocess.Popen(sync, cwd=tmp_path, env=env) for _ in range(2)]
        assert [job.wait(timeout=300) for job in jobs + syncs] == [0, 0, 0, 0]
        tracking.sync()  # what the two syncs, started before the jobs ended, had not seen yet
        runs = client.search_runs([client.get_experiment_by_name(tracking.experiment_name("quadrants")).experiment_id])
        assert sorted((run.info.run_name, run.info.status) for run in runs) == [
            ("quadrants/clean/none/smallcnn/toy/seed0", "FINISHED"), ("quadrants/clean/none/smallcnn/toy/seed1", "FINISHED")]
        for run in runs:  # every epoch once: the two syncs never replayed a line twice
            assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "test_acc")) == [1, 2, 3, 4]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
