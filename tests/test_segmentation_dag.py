"""robust-seg in the DAG: a tiny end-to-end run of its tables and figures, and the paper scale's GPU jobs."""

from __future__ import annotations

import json
import re

import polars as pl
import pytest
import yaml

from helpers import snakemake
from poisonlab.registry import ConfigError
from poisonlab.segmentation.settings import SegSettings

TINY = ["--configfile", "tests/fixtures/tiny.yaml", "tests/fixtures/segmentation-tiny.yaml", "--config", "seeds=[0]"]
RUNS = "results/segmentation/mnist5k-seg/tinyunet"
ROWS = ["Standard", "SAT", "AdvProp"]


def test_settings_name_what_is_missing():
    with pytest.raises(ConfigError, match="needs 'standard'"):
        SegSettings.from_config({"segmentation": {"procedures": {"sat": {}}}})
    settings = SegSettings.from_config({"segmentation": {"procedures": {"standard": {}}}})
    with pytest.raises(ConfigError, match="no entry under segmentation.datasets"):
        settings.dataset_options("voc2012")
    with pytest.raises(ConfigError, match="unknown task"):
        SegSettings.from_config({"segmentation": {"procedures": {"standard": {}}, "synthesis": {"paint": {}}}})


def test_tiny_dag_builds_the_robust_seg_tables_and_figures_then_does_nothing(scratch_repo, workflow_env):
    # The recipe lives in the grid spec: one epoch here, so the whole stage takes seconds.
    spec_path = scratch_repo / "config/papers/robust-seg.yaml"
    spec = yaml.safe_load(spec_path.read_text())
    spec["recipes"]["seg-tinyunet"].update(epochs=1, batch_size=16)
    spec_path.write_text(yaml.safe_dump(spec))
    # 22 jobs, each starting Python and torch: ~2 CPU minutes, longer on a shared, loaded machine.
    snakemake(scratch_repo, "--profile", "local", "robust-seg_tables", *TINY, env=workflow_env, timeout=1800)

    tables = scratch_repo / "paper/robust-seg/tables"
    robustness = pl.read_csv(tables / "robustness.csv")
    # The table mechanism orders rows and columns by name.
    assert set(robustness["row"]) == set(ROWS) and len(robustness) == 15
    assert set(robustness["column"]) == {"clean", "BIM-2", "BIM-4", "BIM-6", "PGD"}
    cells = {(r["row"], r["column"]): r["ours"] for r in robustness.iter_rows(named=True)}
    record = json.loads((scratch_repo / RUNS / "sat/seg-tinyunet/seed0/robustness.json").read_text())
    assert record["count"] == 8 and record["attacks"]["pgd"]["steps"] == 2
    assert cells["SAT", "PGD"] == pytest.approx(record["results"]["pgd"]["miou"])
    # An attack never helps the net: fewer correct pixels than clean (the same images, the same net).
    assert record["results"]["bim-6"]["pixel_acc"] <= record["results"]["clean"]["pixel_acc"]
    for name, columns in (("inpainting", 8), ("generation", 4)):
        table = pl.read_csv(tables / f"{name}.csv")
        assert set(table["row"]) == set(ROWS) and table["column"].n_unique() == columns
        assert table["ours"].null_count() == 0
    inpaint = json.loads((scratch_repo / RUNS / "advprop/seg-tinyunet/seed0/inpaint.json").read_text())
    assert inpaint["count"] == 2 and inpaint["steps"] == 3 and inpaint["target"] == "box"
    for name in ("segmentation-examples", "inpainting-examples", "generation-examples"):
        for ext in ("pdf", "png"):
            assert (scratch_repo / "paper/robust-seg/figures" / f"{name}.{ext}").stat().st_size > 0
    # The judge: a standard net of another seed, trained with its own MLflow run; the classifier: the main job's.
    judge = json.loads((scratch_repo / RUNS / "standard/seg-tinyunet/seed1/metrics.json").read_text())
    assert judge["procedure"] == "standard" and judge["seed"] == 1 and judge["run_key"]
    assert (scratch_repo / "results/runs/mnist5k/clean/none/tinycnn/tiny/seed0/model.pt").exists()

    again = snakemake(scratch_repo, "--profile", "local", "robust-seg_tables", *TINY, "-n", env=workflow_env)
    assert "Nothing to be done" in again.stdout + again.stderr


def test_paper_scale_dry_run_gives_every_net_job_a_gpu(scratch_repo, workflow_env):
    paper = snakemake(scratch_repo, "--profile", "slurm", "robust-seg_tables", "--config", "scale=paper", "-n",
                      env=workflow_env)
    out = paper.stdout
    for rule, count in (("segmentation_train", 4), ("segmentation_robustness", 3), ("segmentation_synthesis", 6)):
        jobs = out.split(f"rule {rule}:")[1:]
        assert len(jobs) == count, rule
        for job in jobs:
            head = job.split("\n[")[0]
            assert "gpu=1" in head and "voc2012/pspnet50" in head, head
    assert re.search(r"rule segmentation_canvases:.*?segdata=voc2012", out, re.S)
