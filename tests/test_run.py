"""A whole run: the embedded default trains to MNIST accuracy, writes the contract, logs to MLflow."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import Killed

from poisonlab import tracking
from poisonlab.cli import main as cli
from poisonlab.config import get_recipe, load_config
from poisonlab.data import build_dataset
from poisonlab.records import RUN_FIELDS
from poisonlab.training import run as run_module
from poisonlab.training.loop import fit
from poisonlab.training.precision import resolve_precision
from poisonlab.training.run import RunSpec, train_run

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def mnist5k_container(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "mnist5k.npz"
    build_dataset("mnist5k").save(path)
    return path


@pytest.fixture
def mlflow_uri(tmp_path, monkeypatch) -> str:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


def test_embedded_default_reaches_mnist_accuracy_and_logs_the_run(mnist5k_container, mlflow_uri, tmp_path):
    import mlflow

    recipe = get_recipe(load_config(ROOT / "config" / "config.yaml"), "embedded")
    spec = RunSpec(dataset="mnist5k", arch="smallcnn", recipe="embedded", seed=0)
    run_dir = tmp_path / "run"
    record = train_run(spec, recipe, mnist5k_container, run_dir, device="cpu", progress=False)

    assert record["final_test_acc"] >= 95.0
    on_disk = json.loads((run_dir / "metrics.json").read_text())
    assert sorted(on_disk) == sorted(RUN_FIELDS)  # the record written is the one poisonlab.records defines
    assert on_disk["epochs"] == len(on_disk["history"]) == recipe.epochs
    assert on_disk["peak_test_acc"] == max(row["test_acc"] for row in on_disk["history"])
    assert on_disk["precision"] == resolve_precision(recipe.precision, "cpu")  # auto, resolved on this CPU
    assert sorted(p.name for p in run_dir.iterdir()) == ["epochs", "metrics.json", "model.pt"]  # no checkpoint
    kept = sorted(p.name for p in (run_dir / "epochs").iterdir())
    assert kept == [f"epoch{e:03d}.pt" for e in range(1, recipe.epochs + 1)]
    final = torch.load(run_dir / "epochs" / kept[-1], weights_only=True)
    assert all(torch.equal(final[k], v) for k, v in torch.load(run_dir / "model.pt", weights_only=True).items())

    # The job wrote a journal, not MLflow: one sync (the DAG's process runs it) carries the run over whole.
    assert tracking.sync() > 0 and not tracking.journal_dir().joinpath(f"{on_disk['run_key']}.jsonl").exists()
    run = mlflow.MlflowClient(mlflow_uri).get_run(tracking.mlflow_run_id(on_disk["run_key"]))
    assert run.info.status == "FINISHED"
    assert run.data.metrics["final_test_acc"] == on_disk["final_test_acc"]
    assert run.data.params["arch"] == "smallcnn" and run.data.tags["dataset_sha256"] == on_disk["dataset_sha256"]
    test_acc = mlflow.MlflowClient(mlflow_uri).get_metric_history(run.info.run_id, "test_acc")
    assert [m.value for m in sorted(test_acc, key=lambda m: m.step)] == [r["test_acc"] for r in on_disk["history"]]
    assert run.data.tags["precision_resolved"] == on_disk["precision"]
    assert run.data.tags["run_dir"] == str(run_dir) and run.data.params["poison_options"] == "{}"  # clean data


def test_a_rerun_after_a_config_change_trains_the_new_config_from_scratch(mnist5k_container, mlflow_uri, tmp_path,
                                                                         monkeypatch):
    # Killed after epoch 2 under one recipe, rerun under a changed one: no "belongs to another run" stop,
    # the rerun's weights are bitwise those of the new recipe trained without any earlier attempt.
    embedded = get_recipe(load_config(ROOT / "config" / "config.yaml"), "embedded")
    old, new = (dataclasses.replace(embedded, epochs=3, lr=lr) for lr in (embedded.lr, embedded.lr / 2))
    spec = RunSpec(dataset="mnist5k", arch="smallcnn", recipe="embedded", seed=0)

    def killed_after_epoch_2(*args, on_epoch, **kwargs):
        def log_then_kill(row):
            on_epoch(row)
            if row["epoch"] == 2:
                raise Killed
        return fit(*args, on_epoch=log_then_kill, **kwargs)

    run_dir = tmp_path / "run"
    with monkeypatch.context() as patch:
        patch.setattr(run_module, "fit", killed_after_epoch_2)
        with pytest.raises(Killed):
            train_run(spec, old, mnist5k_container, run_dir, device="cpu", progress=False)
    killed_key = (run_dir / "run_key").read_text()
    # The killed run's kept weights wait in epochs.partial/: epochs/, the train rule's output, is not there.
    assert (run_dir / "checkpoint.pt").exists() and len(list((run_dir / "epochs.partial").iterdir())) == 2
    assert not (run_dir / "epochs").exists()

    rerun = train_run(spec, new, mnist5k_container, run_dir, device="cpu", progress=False)
    fresh = train_run(spec, new, mnist5k_container, tmp_path / "fresh", device="cpu", progress=False)
    assert [row["epoch"] for row in rerun["history"]] == [1, 2, 3]
    assert sorted(p.name for p in (run_dir / "epochs").iterdir()) == ["epoch001.pt", "epoch002.pt", "epoch003.pt"]
    assert not (run_dir / "epochs.partial").exists()
    assert rerun["recipe_config"]["lr"] == new.lr and rerun["run_key"] != killed_key
    assert [row["test_acc"] for row in rerun["history"]] == [row["test_acc"] for row in fresh["history"]]
    weights = [torch.load(d / "model.pt", weights_only=True) for d in (run_dir, tmp_path / "fresh")]
    assert all(torch.equal(weights[0][name], weights[1][name]) for name in weights[0])


@pytest.mark.parametrize("argv,message", [
    (["train", "--arch", "resnet50"], "unknown arch 'resnet50'; known archs: densenet121, mobilenetv2, resnet18"),
    (["train", "--recipe", "fast"], "unknown recipe 'fast'; the config defines: embedded"),
    (["data", "--dataset", "mnist"], "unknown dataset 'mnist'; known datasets: cifar10, cifar10-jpeg"),
    (["--config", "nope.yaml", "data"], "config file nope.yaml does not exist"),
])
def test_cli_rejects_bad_names_with_one_clear_line(argv, message, mnist5k_container, mlflow_uri, capsys,
                                                    monkeypatch):
    monkeypatch.chdir(ROOT)
    try:  # a name is refused by the argument parser (exit 2), a config value by the command
        code = cli([*argv, *(["--data", str(mnist5k_container)] if argv[0] == "train" else [])])
    except SystemExit as stopped:
        code = stopped.code
    assert code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("append", [False, True])
def test_a_pipeline_job_logs_everything_to_its_log_before_it_exits(tmp_path, append):
    # start_job freezes the garbage collector at exit to skip its last pass; nothing written may be lost.
    # It also configures logging: a library's INFO (a poison's rounds, an epoch) reaches the log unasked.
    log = tmp_path / "job.log"
    log.write_text("from the killed run\n")
    script = (
        "import logging, sys, torch\n"
        "from poisonlab.job import start_job\n"
        f"start_job({str(log)!r}, append={append})\n"
        "cycle = [torch.zeros(3)]; cycle.append(cycle)\n"
        "logging.getLogger('job').info('epoch 1 done')\n"
        "print('last line', file=sys.stderr)\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True)
    lines = log.read_text().splitlines()
    assert lines[-2].endswith(" job epoch 1 done") and lines[-1] == "last line"
    assert (lines[0] == "from the killed run") == append


def test_a_run_killed_between_its_checkpoint_and_its_mlflow_log_keeps_every_epoch(mnist5k_container, mlflow_uri,
                                                                                   tmp_path, monkeypatch):
    import mlflow

    recipe = dataclasses.replace(get_recipe(load_config(ROOT / "config" / "config.yaml"), "embedded"), epochs=3)
    spec = RunSpec(dataset="mnist5k", arch="smallcnn", recipe="embedded", seed=0)

    def killed_before_logging_epoch_2(*args, on_epoch, **kwargs):
        def kill_at_2_else_log(row):
            if row["epoch"] == 2:  # its checkpoint is written, its MLflow log never happens
                raise Killed
            on_epoch(row)
        return fit(*args, on_epoch=kill_at_2_else_log, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(run_module, "fit", killed_before_logging_epoch_2)
        with pytest.raises(Killed):
            train_run(spec, recipe, mnist5k_container, tmp_path / "run", device="cpu", progress=False)
    record = train_run(spec, recipe, mnist5k_container, tmp_path / "run", device="cpu", progress=False)
    tracking.sync()
    history = mlflow.MlflowClient(mlflow_uri).get_metric_history(tracking.mlflow_run_id(record["run_key"]), "test_acc")
    assert sorted(m.step for m in history) == [1, 2, 3]
    assert {m.step: m.value for m in history} == {row["epoch"]: row["test_acc"] for row in record["history"]}
