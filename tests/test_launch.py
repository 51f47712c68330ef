"""The submitit launcher: the train rule's function through the debug and local executors, skips, checks."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import submitit

from poisonlab import tracking
from poisonlab.cli import main as cli
from poisonlab.config import load_config, merge
from poisonlab.data import build_dataset
from poisonlab.launch import launch_sweep, slurm_parameters
from poisonlab.records import RUN_FIELDS
from poisonlab.registry import ConfigError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    build_dataset("mnist5k", subset={"train": 300, "test": 100}).save(root / "clean" / "mnist5k.npz")
    return root


@pytest.fixture(scope="module")
def mlflow_uri(tmp_path_factory) -> Iterator[str]:
    """One store for the module: creating the sqlite schema takes seconds; each test's runs differ anyway."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        yield uri


@pytest.fixture
def config(data_root, mlflow_uri, tmp_path) -> dict:
    config = merge(load_config(ROOT / "config" / "config.yaml"), load_config(ROOT / "tests" / "fixtures" / "tiny.yaml"))
    config["recipes"]["tiny"]["epochs"] = 1
    config["paths"] = {"data": str(data_root), "results": str(tmp_path / "results")}
    return config


def metrics(config: dict, seed: int, arch: str = "tinycnn") -> dict:
    path = Path(config["paths"]["results"]) / "runs" / "mnist5k" / "clean" / "none" / arch / config["recipe"] / f"seed{seed}"
    return json.loads((path / "metrics.json").read_text())


def test_debug_executor_trains_each_seed_and_writes_the_contract(config, tmp_path):
    jobs = launch_sweep(config, archs=["tinycnn"], seeds=[0, 1], executor="debug", folder=tmp_path / "logs")
    assert [job.result()["seed"] for job in jobs] == [0, 1]
    for seed in (0, 1):
        on_disk = metrics(config, seed)
        assert sorted(on_disk) == sorted(RUN_FIELDS)  # the record written is the one defined
        assert (on_disk["recipe"], on_disk["epochs"], len(on_disk["history"])) == ("tiny", 1, 1)


def test_local_executor_result_is_the_record_on_disk_and_logs_to_the_inherited_store(config, mlflow_uri, tmp_path):
    import mlflow

    [job] = launch_sweep(config, archs=["tinycnn"], seeds=[0], executor="local", folder=tmp_path / "logs")
    record = job.result()
    assert record == metrics(config, 0)
    # The subprocess saw this test's MLFLOW_TRACKING_URI: its run is in this store, not the project's mlflow.db.
    tracking.sync()
    assert mlflow.MlflowClient(mlflow_uri).get_run(tracking.mlflow_run_id(record["run_key"])).info.status == "FINISHED"
    assert (tmp_path / "logs" / f"{job.job_id}_0_log.err").exists()


def test_a_second_launch_skips_finished_runs(config, tmp_path):
    [first] = launch_sweep(config, archs=["tinycnn"], seeds=[0], executor="debug", folder=tmp_path / "logs")
    first.result()
    # Debug jobs run only when their result is asked for: seed 1 is submitted, never trained here.
    jobs = launch_sweep(config, archs=["tinycnn"], seeds=[0, 1, 1], executor="debug", folder=tmp_path / "logs")
    assert [job.submission().kwargs["spec"].seed for job in jobs] == [1]
    assert launch_sweep(config, archs=["tinycnn"], seeds=[0], executor="debug", folder=tmp_path / "logs") == []


@pytest.mark.parametrize("change,message", [
    ({"executor": "kubernetes"}, "unknown executor 'kubernetes'; known executors: debug, local, slurm"),
    ({"archs": ["tinycnn", "resnet50"]}, "unknown arch 'resnet50'; known archs: densenet121"),
    ({"recipe": "fast"}, "unknown recipe 'fast'; the config defines: embedded, tiny"),
    ({"dataset": "cifar10"}, "cifar10.npz does not exist; build it with `snakemake --profile local"),
])
def test_bad_names_stop_before_anything_is_submitted(config, tmp_path, change, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        launch_sweep(config, **{"archs": ["tinycnn"], "seeds": [0], "executor": "local",
                                "folder": tmp_path / "logs", **change})
    assert not (tmp_path / "logs").exists() and not (tmp_path / "results").exists()


def test_slurm_parameters_map_resources_to_submitit_names(tmp_path, monkeypatch):
    resources = {"gpu": 1, "runtime": 720, "mem_mb": 32000, "cpus": 8}
    parameters = slurm_parameters(resources, {"partition": "gpu", "account": "lab", "qos": None})
    assert parameters == {"timeout_min": 720, "mem_gb": 32000 / 1024, "cpus_per_task": 8, "gpus_per_node": 1,
                          "slurm_partition": "gpu", "slurm_account": "lab"}
    assert "gpus_per_node" not in slurm_parameters({"gpu": 0, "runtime": 5, "mem_mb": 1500})

    # What sbatch would get, without a cluster: submitit only wants an `srun` on PATH to build its executor.
    (tmp_path / "srun").write_text("#!/bin/sh\n")
    (tmp_path / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    executor = submitit.AutoExecutor(tmp_path / "logs", cluster="slurm")
    executor.update_parameters(**parameters)
    sbatch = executor._executor._make_submission_file_text("true", "uid")  # private, but the real sbatch script
    for flag in ("--time=720", "--mem=32000MB", "--cpus-per-task=8", "--gpus-per-node=1", "--partition=gpu",
                 "--account=lab"):
        assert f"#SBATCH {flag}\n" in sbatch


def test_cli_launch_prints_each_job_and_with_debug_its_accuracy(config, tmp_path, monkeypatch, capsys):
    import yaml

    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.chdir(tmp_path)  # submitit's logs/submitit lands here
    argv = ["launch", "--config", "config.yaml", "--executor", "debug", "--seed", "0", "--seed", "1"]
    assert cli(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    run_dir = str(Path(config["paths"]["results"]) / "runs/mnist5k/clean/none/tinycnn" / config["recipe"] / "seed1")
    assert re.fullmatch(rf"DEBUG_\d+\t{re.escape(run_dir)}", lines[1])
    assert lines[3] == f"{run_dir}\tfinal_test_acc {metrics(config, 1)['final_test_acc']:.2f}"
    assert cli(argv) == 0 and capsys.readouterr().out == "skipped 2 finished run(s)\n"


def test_cli_train_writes_where_the_train_rule_would_with_its_defense_options(config, tmp_path, capsys):
    import yaml

    config["defense_options"] = {"cutout": {"mnist5k": {"size": 7}}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    train = ["--config", str(tmp_path / "config.yaml"), "train", "--no-progress", "--defense"]
    assert cli([*train, "cutout"]) == 0
    # The configured results folder, the config's dataset, first arch and recipe, the defense's options.
    run_dir = Path(config["paths"]["results"]) / "runs/mnist5k/clean/cutout/tinycnn/tiny/seed0"
    record = json.loads((run_dir / "metrics.json").read_text())
    assert (record["defense"], record["defense_options"], record["recipe"]) == ("cutout", {"size": 7}, "tiny")
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["run"] == "mnist5k/clean/cutout/tinycnn/tiny/seed0"
    # A data-level defense trains on its sanitized container, under the configured data folder.
    assert cli([*train, "grayscale"]) == 2
    sanitized = Path(config["paths"]["data"]) / "sanitized/mnist5k/clean/grayscale.npz"
    assert f"training data {sanitized} does not exist; build it with `snakemake" in capsys.readouterr().err


def test_python_m_poisonlab_launch_is_the_launch_command():
    result = subprocess.run([sys.executable, "-m", "poisonlab.launch", "--executor", "nope"], cwd=ROOT,
                            capture_output=True, text=True)
    assert (result.returncode, result.stderr) == (2, "poisonlab: unknown executor 'nope'; known executors: "
                                                     "debug, local, slurm\n")


def test_cli_names_come_from_the_registries(capsys):
    with pytest.raises(SystemExit) as stopped:
        cli(["train", "--poison", "ar-l3"])
    assert stopped.value.code == 2
    error = capsys.readouterr().err.splitlines()[-1]
    assert error.startswith("poisonlab train: error: argument --poison: unknown poison 'ar-l3'") and "ar-linf" in error
    with pytest.raises(SystemExit):
        cli(["train", "--help"])
    usage = " ".join(capsys.readouterr().out.split())
    assert "one of ar, ar-linf, clean, cuda," in usage and "jpeg-<quality>" in usage  # a numbered defense, shown once
