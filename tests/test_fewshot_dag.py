"""autoprotonet in the DAG: a tiny end-to-end run of its tables and figures, and the paper scale's GPU jobs."""

from __future__ import annotations

import json

import polars as pl
import pytest

from helpers import snakemake
from poisonlab.fewshot.settings import FewShotSettings
from poisonlab.registry import ConfigError

TINY = ["--configfile", "tests/fixtures/tiny.yaml", "tests/fixtures/fewshot-tiny.yaml"]
RUNS = "results/fewshot/mnist5k"
ROWS = ["ProtoNet", "AutoProtoNet (AP)", "IA (autoencoder pre-trained)", "IAP (IA fine-tuned)"]


def test_settings_name_what_is_missing():
    with pytest.raises(ConfigError, match="not ae-pretrain"):
        FewShotSettings.from_config({"fewshot": {"methods": {"autoprotonet-ft": {}}}})
    settings = FewShotSettings.from_config({"fewshot": {"recipes": {"r": {"shot": 1}},
                                                        "methods": {"protonet": {"recipes": {"r": {"query": 3}}}}}})
    assert settings.recipe("r", "protonet")["query"] == 3 and settings.recipe("r", "protonet")["shot"] == 1
    with pytest.raises(ConfigError, match="no entry under fewshot.datasets"):
        settings.dataset_options("cifar100")


def test_tiny_dag_builds_the_autoprotonet_tables_and_figures_then_does_nothing(scratch_repo, workflow_env):
    snakemake(scratch_repo, "--profile", "local", "autoprotonet_tables", *TINY, env=workflow_env, timeout=900)

    tables = scratch_repo / "paper/autoprotonet/tables"
    accuracy = pl.read_csv(tables / "accuracy.csv")
    assert list(dict.fromkeys(accuracy["row"])) == ROWS
    assert list(dict.fromkeys(accuracy["column"])) == ["1-shot", "1-shot ±", "5-shot", "5-shot ±"]
    assert accuracy["ours"].null_count() == 0
    evaluation = json.loads((scratch_repo / RUNS / "protonet/fewshot-embedded/seed0/evaluation.json").read_text())
    cells = {(r["row"], r["column"]): r["ours"] for r in accuracy.iter_rows(named=True)}
    assert cells["ProtoNet", "5-shot"] == pytest.approx(evaluation["results"]["5-shot"]["acc"])
    assert evaluation["results"]["1-shot"]["episodes"] == 20
    # IAP started from IA's weights: the fine-tuned run names the IA model it was given.
    iap = json.loads((scratch_repo / RUNS / "autoprotonet-ft/fewshot-embedded/seed0/metrics.json").read_text())
    assert iap["method"] == "autoprotonet-ft" and iap["recipe_config"]["steps_per_epoch"] == 2 and iap["run_key"]

    refinement = pl.read_csv(tables / "refinement.csv")
    rows = list(refinement["row"])
    assert rows == ["before", "after (i = 7)", *(f"i = {i}" for i in range(11))]
    values = dict(zip(rows, refinement["ours"]))
    assert values["before"] == values["i = 0"] and values["after (i = 7)"] == values["i = 7"]
    # The notebook's numbers sit on the rows they belong to.
    reported = dict(zip(rows, refinement["reported"]))
    assert reported["before"] == 80.0 and reported["after (i = 7)"] == 98.0 and reported["i = 3"] is None
    for name in ("prototypes", "refinement"):
        for ext in ("pdf", "png"):
            assert (scratch_repo / "paper/autoprotonet/figures" / f"{name}.{ext}").stat().st_size > 0

    again = snakemake(scratch_repo, "--profile", "local", "autoprotonet_tables", *TINY, "-n", env=workflow_env)
    assert "Nothing to be done" in again.stdout + again.stderr


def test_paper_scale_dry_run_gives_every_fewshot_job_a_gpu(scratch_repo, workflow_env):
    paper = snakemake(scratch_repo, "--profile", "slurm", "autoprotonet_tables", "--config", "scale=paper",
                      "papers=[autoprotonet]", "-n", env=workflow_env)
    out = paper.stdout
    for rule, count in (("fewshot_train", 4), ("fewshot_evaluate", 4), ("fewshot_refinement", 1),
                        ("fewshot_prototypes", 1)):
        jobs = out.split(f"rule {rule}:")[1:]
        assert len(jobs) == count, rule
        for job in jobs:
            head = job.split("\n[")[0]
            assert "gpu=1" in head and "cifar100" in head and "fewshot-paper" in head, head
