"""The Snakemake DAG on the embedded default: config checks, the baselines table, no-op reruns, resume, MLflow."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import polars as pl
import pytest
import yaml

from helpers import BIN, ROOT, snakemake
from poisonlab.config import check_config, load_config, load_scaled, schema, validate_config
from poisonlab.data import DATASETS
from poisonlab.evaluation import EVALUATIONS
from poisonlab.models import MODELS
from poisonlab.poisons import POISONS
from poisonlab.reporting import TABLE_COLUMNS

RUN = "results/runs/mnist5k/clean/none/tinycnn/{recipe}/seed{seed}"


def test_schema_enums_are_the_registries():
    # Filled when the schema is read: the file holds no copy of the names.
    filled = schema(ROOT / "config" / "schema.yaml")["$defs"]
    assert filled["dataset"]["enum"] == DATASETS.names()
    assert filled["dataset_or_default"]["enum"] == ["default", *DATASETS.names()]
    assert filled["arch"]["enum"] == MODELS.names()
    assert filled["poison"]["enum"] == POISONS.names()
    assert filled["evaluation"]["enum"] == EVALUATIONS.names()
    on_file = yaml.safe_load((ROOT / "config" / "schema.yaml").read_text())["$defs"]
    assert not any("enum" in on_file[kind] for kind in ("dataset", "arch", "poison", "defense", "evaluation"))


@pytest.mark.parametrize("scale", ["embedded", "cifar10-small", "paper"])
def test_every_scale_resolves_validates_and_names_known_things(scale):
    config = load_config(ROOT / "config" / "config.yaml")
    resolved = load_scaled(ROOT / "config" / "config.yaml", scale)
    validate_config(resolved, ROOT / "config" / "schema.yaml")
    check_config(resolved)
    assert resolved["scale"] == scale
    if scale != "embedded":  # scales never write over each other's containers and runs
        assert resolved["paths"]["data"] != config["paths"]["data"]
        assert resolved["paths"]["results"] != config["paths"]["results"]


def test_snakefiles_are_formatted():
    files = ["Snakefile", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "rules").glob("*.smk"))]
    result = subprocess.run([str(BIN / "snakefmt"), "--check", *files], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr + result.stdout


@pytest.mark.parametrize("override,message", [
    ("archs=[resnet50]", "config: archs.0: 'resnet50' is not one of ['densenet121'"),
    ("recipe=fast", "config: unknown recipe 'fast'; the config defines: "),
    ("scale=huge", "scale: unknown scale 'huge'; known scales: cifar10-small, embedded, paper"),
    ("tables=[baseline]", "config: tables: unknown table 'baseline'; config/papers/baselines.yaml has: baselines,"),
    ("device=tpu", "config: device: 'tpu' does not match"),
    ("defenses=[none,jpeg-0]", "config: defenses: defense 'jpeg-0': quality must be"),
])
def test_bad_config_stops_before_any_job(scratch_repo, workflow_env, override, message):
    result = snakemake(scratch_repo, "--profile", "local", "all_tables", "--config", override, env=workflow_env,
                       check=False)
    assert result.returncode != 0
    assert message in result.stderr + result.stdout
    assert not (scratch_repo / "data").exists() and not (scratch_repo / "results").exists()


def test_slurm_profile_dry_run_asks_for_gpus_at_paper_scale(scratch_repo, workflow_env):
    from poisonlab.attribution.dag import AttributionSettings
    from poisonlab.segmentation.settings import SegSettings
    from poisonlab.papers import add_paper_recipes, load_grids, paper_figures, paper_tables

    embedded = snakemake(scratch_repo, "--profile", "slurm", "all_tables", "-n", env=workflow_env)
    assert "rule train:" in embedded.stdout
    paper = snakemake(scratch_repo, "--profile", "slurm", "all_tables", "-n", "--config", "scale=paper",
                      env=workflow_env)
    train_jobs = paper.stdout.split("rule train:")[1:]
    # Every run the baselines, the poisons table and the five papers need, each once (shared cells too).
    config = load_scaled(ROOT / "config" / "config.yaml", "paper")
    papers = load_grids(ROOT / "config" / "papers", config)
    config["recipes"] = add_paper_recipes(config, papers)
    wanted = {("cifar10", "clean", "none", arch, config["recipe"]) for arch in config["archs"]}
    wanted |= {("cifar10", poison, "none", config["archs"][0], config["recipe"]) for poison in config["poisons"]}
    for slug, spec in papers.items():
        runs = [cell.run for table in paper_tables(slug, spec, config) for cell in table.cells]
        runs += [run for figure in paper_figures(slug, spec, config) for run in (figure.runs or {}).values()]
        wanted |= {(run.dataset, run.poison, run.defense, run.arch, run.recipe) for run in runs if run.record == "run"}
    # ssl-attribution's reference models: clean runs of its retrained arch and recipe, seeds 0..references-1.
    attribution = papers["ssl-attribution"]["scales"]["paper"]
    references = [("cifar10", "clean", "none", attribution["archs"][0], attribution["recipe"], str(seed))
                  for seed in range(AttributionSettings.from_config(config).references)]
    # robust-seg's judge of synthesised digits: a clean classifier run of the scale's recipe.
    judge = SegSettings.from_config(config).classifier
    references.append((judge["dataset"], "clean", "none", judge["arch"], config["recipe"], str(judge["seed"])))
    listed = [re.search(r"wildcards: dataset=(\S+), poison=(\S+), defense=(\S+), arch=(\S+), recipe=(\S+), "
                        r"seed=(\d+)", job).groups() for job in train_jobs]
    assert sorted(listed) == sorted([*references, *((*run, str(seed)) for run in wanted for seed in config["seeds"])])
    assert {"resnet-100ep", "lfu-dfr", "lfu-ortho", "cuda-sharpening"} <= {job[4] for job in listed}
    assert len(paper.stdout.split("rule table:")) - 1 == sum(len(p["tables"]) for p in papers.values())
    poison_jobs = paper.stdout.split("rule poison:")[1:]
    surrogate_jobs = [job for job in poison_jobs if any(f"/{name}.npz" in job.split("\n[")[0]
                                                        for name in ("em", "em-class", "tap", "tap-untargeted", "rem"))]
    assert surrogate_jobs and all("gpu=1" in job.split("\n[")[0] for job in surrogate_jobs)
    assert all("gpu=1" in job.split("\n[")[0] and "runtime=720" in job.split("\n[")[0] for job in train_jobs)


TOY_POISON = '''"""A toy poison for the test that a new poison is one module."""

from poisonlab.checks import Fraction
from poisonlab.poisons.base import POISONS


@POISONS.register("toy-shift")
def toy_shift(images, labels, *, num_classes, generator, epsilon: Fraction = 0.1):
    """Every image of class k brightened by epsilon * k / num_classes."""
    return (images + epsilon * labels.view(-1, 1, 1, 1) / num_classes).clamp(0, 1)
'''


def test_a_new_poison_is_one_module(scratch_repo, workflow_env):
    # The module dropped into the package is all: no edit to the schema, the rules or the config files.
    (scratch_repo / "src" / "poisonlab" / "poisons" / "toy_shift.py").write_text(TOY_POISON)
    env = {**workflow_env, "PYTHONPATH": str(scratch_repo / "src")}  # the scratch copy's package, not the venv's
    dry = snakemake(scratch_repo, "--profile", "local", "baselines_tables", "-n", "--config", "poisons=[toy-shift]",
                    "papers=[]", env=env).stdout
    # A job's fields are indented under its rule line (one level deeper inside a group: train and evaluate).
    assert re.search(r"rule poison:\n(?: +.*\n)*? +wildcards: dataset=mnist5k, poison=toy-shift\n", dry)
    assert re.search(r"rule train:\n(?: +.*\n)*? +wildcards: dataset=mnist5k, poison=toy-shift, defense=none", dry)
    assert re.search(r"rule table:\n(?: +.*\n)*? +input: .*results/runs/mnist5k/toy-shift/none/", dry)
    bad = snakemake(scratch_repo, "--profile", "local", "baselines_tables", "-n", "--config", "poisons=[toy-shift]",
                    "papers=[]", "poison_options={toy-shift: {default: {epsilon: 2}}}", env=env, check=False)
    output = bad.stdout + bad.stderr
    assert bad.returncode != 0 and "poison 'toy-shift': epsilon must be > 0 and <= 1.0; got 2" in output, output


def test_embedded_dag_builds_the_baselines_table_then_does_nothing(scratch_repo, workflow_env):
    import mlflow

    started = time.perf_counter()
    # The default DAG minus the poisons table (every poison: minutes of CI; tested on the tiny config below).
    only_baselines = ["--config", "tables=[baselines]", "papers=[]"]
    snakemake(scratch_repo, "--profile", "local", "all_tables", *only_baselines, env=workflow_env)
    first_seconds = time.perf_counter() - started

    metrics = json.loads((scratch_repo / RUN.format(recipe="embedded", seed=0) / "metrics.json").read_text())
    assert metrics["final_test_acc"] >= 93.0
    table = pl.read_csv(scratch_repo / "paper/baselines/tables/baselines.csv")
    assert tuple(table.columns) == TABLE_COLUMNS
    final = table.filter(pl.col("column") == "final").row(0, named=True)
    assert (final["row"], final["scale"], final["dataset"], final["n_seeds"]) == ("tinycnn", "embedded", "mnist5k", 1)
    assert final["ours"] == pytest.approx(metrics["final_test_acc"])
    assert f"{metrics['final_test_acc']:.2f}" in (scratch_repo / "paper/baselines/tables/baselines.md").read_text()
    assert f"{metrics['final_test_acc']:.2f}" in (scratch_repo / "paper/baselines/tables/baselines.tex").read_text()

    client = mlflow.MlflowClient(f"sqlite:///{scratch_repo / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("poisonlab/mnist5k").experiment_id])
    # The DAG's own process replayed the job's journal (no job imports MLflow).
    assert [run.data.tags["poisonlab.run_key"] for run in runs] == [metrics["run_key"]]
    assert runs[0].data.metrics["final_test_acc"] == metrics["final_test_acc"]

    started = time.perf_counter()
    again = snakemake(scratch_repo, "--profile", "local", "all_tables", *only_baselines, env=workflow_env)
    assert "Nothing to be done" in again.stdout + again.stderr
    print(f"embedded DAG: first run {first_seconds:.0f} s, rerun {time.perf_counter() - started:.0f} s")


def test_a_dag_killed_mid_training_resumes_into_the_same_run(scratch_repo, workflow_env):
    import mlflow

    config = ["--configfile", "tests/fixtures/tiny.yaml", "--config", "seeds=[0]"]
    (scratch_repo / "slow.yaml").write_text("recipes: {tiny: {epochs: 6}}\n")
    args = [str(BIN / "snakemake"), "--profile", "local", "all_tables", *config[:2], "slow.yaml", *config[2:]]
    run_dir = scratch_repo / RUN.format(recipe="tiny", seed=0)
    process = subprocess.Popen(args, cwd=scratch_repo, env=workflow_env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not (run_dir / "checkpoint.pt").exists():  # at least one epoch done
            assert process.poll() is None and time.monotonic() < deadline, "training never checkpointed"
            time.sleep(0.2)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # the node dies: Snakemake and the job, no clean-up
        process.wait()
    assert not (run_dir / "metrics.json").exists()  # nothing that looks finished

    snakemake(scratch_repo, "--unlock", *config[:2], "slow.yaml", *config[2:], env=workflow_env)
    snakemake(scratch_repo, "--profile", "local", "all_tables", *config[:2], "slow.yaml", *config[2:],
              env=workflow_env)
    log = (scratch_repo / "logs/train" / f"{RUN.format(recipe='tiny', seed=0)}.log").read_text()
    assert "resuming from" in log
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert [row["epoch"] for row in metrics["history"]] == list(range(1, 7))
    assert not (run_dir / "checkpoint.pt").exists()

    client = mlflow.MlflowClient(f"sqlite:///{scratch_repo / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("poisonlab/mnist5k").experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    history = client.get_metric_history(runs[0].info.run_id, "test_acc")
    assert sorted(m.step for m in history) == list(range(1, 7))


def test_poisons_defenses_and_evaluations_run_through_the_dag(scratch_repo, workflow_env):
    config = ["--configfile", "tests/fixtures/tiny.yaml", "--config", "seeds=[0]", "poisons=[cuda]",
              "defenses=[none,grayscale,cutout]", "evaluations=[peak,linsep,dfr]",
              "tables=[poisons,defenses,evaluations]"]
    snakemake(scratch_repo, "--profile", "local", "all_tables", *config, env=workflow_env)
    from poisonlab.data.container import ImageDataset

    clean = ImageDataset.load(scratch_repo / "data/clean/mnist5k.npz")
    poisoned = ImageDataset.load(scratch_repo / "data/poisoned/mnist5k/cuda.npz")
    assert poisoned.meta["poison"]["name"] == "cuda" and poisoned.meta["poison"]["seed"] == 0
    assert (poisoned.x_test == clean.x_test).all() and (poisoned.x_train != clean.x_train).any()
    assert poisoned.extras["perturbation_linf"].shape == (len(clean.x_train),)

    # grayscale is data-level: sanitized once from the poisoned set; cutout acts in training, no container.
    sanitized = ImageDataset.load(scratch_repo / "data/sanitized/mnist5k/cuda/grayscale.npz")
    assert sanitized.meta["poison"]["name"] == "cuda" and sanitized.meta["defense"]["name"] == "grayscale"
    assert not (scratch_repo / "data/sanitized/mnist5k/cuda/cutout.npz").exists()

    runs = scratch_repo / "results/runs/mnist5k"
    table = pl.read_csv(scratch_repo / "paper/baselines/tables/defenses.csv")
    for row in table.iter_rows(named=True):
        metrics = json.loads((runs / row["row"] / row["column"] / "tinycnn/tiny/seed0/metrics.json").read_text())
        assert (metrics["poison"], metrics["defense"]) == (row["row"], row["column"])
        assert row["ours"] == pytest.approx(metrics["final_test_acc"])
    assert sorted(set(table["column"])) == ["cutout", "grayscale", "none"]
    assert json.loads((runs / "cuda/grayscale/tinycnn/tiny/seed0/metrics.json").read_text()
                      )["data_meta"]["defense"]["name"] == "grayscale"

    evaluations = pl.read_csv(scratch_repo / "paper/baselines/tables/evaluations.csv")
    assert sorted(set(evaluations["row"])) == ["clean", "cuda"]
    for poison in ("clean", "cuda"):
        run_dir = runs / poison / "none/tinycnn/tiny/seed0"
        for evaluation in ("peak", "linsep", "dfr"):
            record = json.loads((run_dir / f"{evaluation}.json").read_text())
            assert record["evaluation"] == evaluation and record["poison"] == poison
        peak = json.loads((run_dir / "peak.json").read_text())
        cell = evaluations.filter((pl.col("row") == poison) & (pl.col("column") == "peak epoch"))
        assert cell["ours"].item() == peak["peak_epoch"]


def test_snakemake_lint_finds_nothing_but_the_documented_absence_of_per_rule_environments(workflow_env):
    # Rules carry no conda/container environment on purpose (README, "Software environment"): every rule runs
    # in the one environment `make` builds, or in the one container image of containers/. Anything else
    # the linter says is a defect.
    done = subprocess.run([str(BIN / "snakemake"), "--lint"], cwd=ROOT, env=workflow_env, capture_output=True,
                          text=True, timeout=300)
    lints = set(re.findall(r"^ {4}\* (.+?):$", done.stdout + done.stderr, flags=re.MULTILINE))
    assert lints <= {"Specify a conda environment or container for each rule."}, done.stdout + done.stderr
