"""ssl-attribution in the DAG: settings and file lists, a tiny end-to-end run, the paper-scale Slurm dry run."""

from __future__ import annotations

import json
import re

import numpy as np
import polars as pl
import pytest

from helpers import ROOT, snakemake
from poisonlab.attribution.dag import AttributionSettings, attributor_inputs, reference_models, subset_shards
from poisonlab.config import load_scaled
from poisonlab.paths import Paths
from poisonlab.registry import ConfigError
from poisonlab.reporting import TABLE_COLUMNS

TINY = ["--configfile", "tests/fixtures/tiny.yaml", "tests/fixtures/attribution-tiny.yaml", "--config", "seeds=[0]"]
SETTING = "results/attribution/mnist5k/tinycnn/attribution-tinycnn/seed0"


def test_settings_of_every_scale_and_the_files_each_job_reads():
    paper = AttributionSettings.from_config(load_scaled(ROOT / "config" / "config.yaml", "paper"))
    # The repository's search: K 1280 bisected at a resolution of 10 with 1 + 7 probes, R 5, 100 targets.
    assert (paper.k, paper.grid[:2], paper.grid[-1], len(paper.grid)) == (1280, (10, 20), 1280, 128)
    assert (paper.budget, paper.retrains, paper.targets, paper.references) == (8, 5, 100, 10)
    assert all(paper.job_resources(stage)["gpu"] == 1 for stage in ("ssl", "attribute", "retrain"))
    embedded = AttributionSettings.from_config(load_scaled(ROOT / "config" / "config.yaml", "embedded"))
    paths = Paths("data", "results")
    assert reference_models(paths, "mnist5k", "tinycnn", "r", embedded) == [
        f"results/runs/mnist5k/clean/none/tinycnn/r/seed{s}/model.pt" for s in range(3)]
    trak = attributor_inputs(paths, "mnist5k", "tinycnn", "r", 0, "trak", embedded)
    assert list(trak) == ["references"] and len(trak["references"]) == embedded.references
    esvm = attributor_inputs(paths, "mnist5k", "tinycnn", "r", 0, "ssl-esvm", embedded)
    assert esvm["ssl_metrics"] == "results/attribution/mnist5k/ssl/moco/tinycnn/seed0/metrics.json"
    assert attributor_inputs(paths, "mnist5k", "tinycnn", "r", 0, "pixel-knn", embedded) == {}
    assert subset_shards(paths, "mnist5k", "tinycnn", "r", 0, "heldout", embedded) == [
        f"results/attribution/mnist5k/tinycnn/r/seed0/subsets/heldout/shard{i}.npz" for i in range(2)]


@pytest.mark.parametrize(("attribution", "message"), [
    ({"removal": ["trak"], "attributors": ["ssl-esvm"]}, "attribution.removal: 'trak' is not one of"),
    ({"grid": [50, 400], "k": 300}, "must be increasing positive k ending at attribution.k=300"),
    ({"attributors": ["datamodels"]}, "datamodels needs attribution.subsets.fit >= 2"),
    ({"attributor_options": {"trak": {"C": 1}}}, "unknown option"),
    ({"ssl": {"method": "byol"}}, "unknown SSL method 'byol'"),
    ({"targets": 5, "lds_targets": 4}, "attribution.targets must lie in"),
])
def test_bad_attribution_settings_name_the_field(attribution, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        AttributionSettings.from_config({"attribution": attribution})


def test_tiny_dag_builds_the_ssl_attribution_tables_and_figures(scratch_repo, workflow_env):
    # ~30 jobs of a few seconds each; the timeout leaves room for a machine shared with other jobs.
    snakemake(scratch_repo, "--profile", "local", "ssl-attribution_tables", *TINY, env=workflow_env, timeout=1800)
    setting = scratch_repo / SETTING
    targets = json.loads((setting / "targets.json").read_text())
    assert len(targets["indices"]) == 8 and targets["support"] == 1 and targets["reference_models"] == 2

    removal = pl.read_csv(scratch_repo / "paper/ssl-attribution/tables/removal-support.csv")
    assert tuple(removal.columns) == TABLE_COLUMNS and removal["row"].unique().to_list() == ["ssl-esvm"]
    unit = json.loads((setting / "support/ssl-esvm/removal/target0.json").read_text())
    median = removal.filter(pl.col("column") == "Median")["ours"].item()
    assert (median == unit["support"]) if unit["flipped"] else np.isnan(median)
    assert unit["probes"][0]["k"] == 40 and unit["models_trained"] == len(unit["probes"])
    assert not (setting / "support/ssl-esvm/removal/target0.state.json").exists()
    mislabel = pl.read_csv(scratch_repo / "paper/ssl-attribution/tables/mislabel-support.csv")
    assert mislabel["row"].unique().to_list() == ["random"]

    lds = pl.read_csv(scratch_repo / "paper/ssl-attribution/tables/lds.csv").filter(pl.col("column") == "LDS")
    assert lds["row"].to_list() == ["ssl-esvm", "trak", "random", "datamodels"]
    assert lds["ours"].is_between(-1, 1).all() and set(lds["scale"]) == {"embedded"}
    # datamodels fit on the 4 fit models only; LDS scored every attributor on the 3 held-out ones.
    fit, heldout = (np.load(setting / f"subsets/{part}/shard0.npz")["masks"] for part in ("fit", "heldout"))
    assert fit.shape[0] == 4 and heldout.shape[0] == 3 and not (fit[:, None] == heldout[None]).all(-1).any()
    assert json.loads((setting / "lds/datamodels/lds.json").read_text())["subsets"] == 3

    cost = pl.read_csv(scratch_repo / "paper/ssl-attribution/tables/cost.csv")
    trained = dict(cost.filter(pl.col("column") == "Models trained").select("row", "ours").iter_rows())
    assert trained == {"ssl-esvm": 1, "trak": 2, "random": 0, "datamodels": 4}
    for name in ("neighbours", "removal-support-cdf", "mislabel-support-cdf", "lds"):
        assert (scratch_repo / f"paper/ssl-attribution/figures/{name}.png").stat().st_size > 0

    ssl = json.loads((scratch_repo / "results/attribution/mnist5k/ssl/moco/tinycnn/seed0/metrics.json").read_text())
    assert ssl["run_key"] and ssl["epochs"] == 1 and 0 <= ssl["knn_acc"] <= 100
    again = snakemake(scratch_repo, "--profile", "local", "ssl-attribution_tables", *TINY, env=workflow_env)
    assert "Nothing to be done" in again.stdout + again.stderr


def test_paper_scale_dry_run_lists_every_attribution_job_with_a_gpu(scratch_repo, workflow_env):
    result = snakemake(scratch_repo, "--profile", "slurm", "ssl-attribution_tables", "-n", "--config", "scale=paper",
                       env=workflow_env)
    settings = AttributionSettings.from_config(load_scaled(ROOT / "config" / "config.yaml", "paper"))
    jobs = {}
    for block in re.split(r"\n(?=\[.*\]\nrule )", result.stdout):
        found = re.search(r"^rule (\S+):", block, re.M)
        if found:
            jobs.setdefault(found[1], []).append(block)
    searched = len(settings.removal) + len(settings.mislabel)
    assert len(jobs["attribution_support"]) == settings.targets * searched == 800
    assert len(jobs["attribution_subsets"]) == settings.subsets.shards("heldout") == 10
    assert len(jobs["attribution_attribute"]) == len(settings.attributors)
    assert len(jobs["train"]) == settings.references and all(
        "recipe=attribution-resnet9" in job and "arch=resnet9" in job for job in jobs["train"])
    for rule in ("attribution_ssl", "attribution_features", "attribution_targets", "attribution_attribute",
                 "attribution_subsets", "attribution_support", "train"):
        assert all("gpu=1" in job for job in jobs[rule]), rule
