"""jpeg-photoguard in the DAG: a tiny end-to-end run of its tables, figure and HTML report, and the paper scale's
GPU jobs."""

from __future__ import annotations

import json
import re

import polars as pl
import pytest

from helpers import report_in_chromium, snakemake
from poisonlab.reporting import Cell, build_table

TINY = ["--configfile", "tests/fixtures/editing-tiny.yaml"]
RECORDS = "results/editing/skimage-photos/small-ae/seed0"


def test_a_list_valued_metric_makes_a_cell_the_mean_and_std_over_its_items(tmp_path):
    record = tmp_path / "record.json"
    record.write_text(json.dumps({"retained": 0.5, "per_photo": {"retained": [0.2, 0.4, 0.9]}}))
    cell = dict(table="t", row="r", column="c", dataset="skimage-photos", scale="embedded", runs=(str(record),))
    per_photo = build_table([Cell(metric="per_photo.retained", **cell)]).row(0, named=True)
    assert per_photo["ours"] == pytest.approx(0.5) and per_photo["ours_std"] == pytest.approx(0.3605551)
    assert per_photo["n_seeds"] == 1
    mean = build_table([Cell(metric="retained", **cell)]).row(0, named=True)
    assert mean["ours"] == pytest.approx(0.5) and mean["ours_std"] is None


def test_tiny_dag_builds_the_jpeg_sweep_tables_figure_and_report_then_does_nothing(scratch_repo, workflow_env):
    snakemake(scratch_repo, "--profile", "local", "jpeg-photoguard_tables", *TINY, env=workflow_env)

    sweep = pl.read_csv(scratch_repo / "paper/jpeg-photoguard/tables/jpeg-sweep.csv")
    assert list(dict.fromkeys(sweep["row"])) == ["clean (control)", "encoder-eps8"]
    assert list(dict.fromkeys(sweep["column"])) == ["none", "jpeg-95", "jpeg-50"]
    cells = {(r["row"], r["column"]): r for r in sweep.iter_rows(named=True)}
    # Before JPEG an attack keeps all its progress and the clean photo has none; each is a mean over 2 photos.
    assert cells["encoder-eps8", "none"]["ours"] == pytest.approx(1)
    assert cells["clean (control)", "none"]["ours"] == pytest.approx(0)
    record = json.loads((scratch_repo / RECORDS / "encoder-eps8/jpeg-50.json").read_text())
    assert record["purifier"] == "jpeg-50" and record["autoencoder"] == "small-ae" and record["photos"] == [
        "chelsea", "coffee"]
    assert cells["encoder-eps8", "jpeg-50"]["ours"] == pytest.approx(record["retained"])
    assert cells["encoder-eps8", "jpeg-50"]["ours_std"] == pytest.approx(record["retained_std"])
    quality = pl.read_csv(scratch_repo / "paper/jpeg-photoguard/tables/image-quality.csv")
    psnr = {r["column"]: r["ours"] for r in quality.iter_rows(named=True) if r["row"] == "clean (control)"}
    assert psnr["jpeg-95"] > psnr["jpeg-50"]  # the sanitizer's quality orders the error
    for name in ("examples.pdf", "examples.png"):
        assert (scratch_repo / "paper/jpeg-photoguard/figures" / name).stat().st_size > 0
    small_ae = json.loads((scratch_repo / "results/editing/autoencoders/small-ae/seed0/metrics.json").read_text())
    assert small_ae["steps"] == 20 and small_ae["run_key"]

    again = snakemake(scratch_repo, "--profile", "local", "jpeg-photoguard_tables", *TINY, "-n", env=workflow_env)
    assert "Nothing to be done" in again.stdout + again.stderr

    # The report a reader opens: the paper's category holds its figure (drawn) and both tables (the csv's cells).
    snakemake(scratch_repo, "jpeg-photoguard_tables", *TINY, "--report", "report.html", env=workflow_env)
    shown = report_in_chromium(scratch_repo / "report.html", "jpeg-photoguard")
    assert shown["figures"]["examples"] > 0
    assert sorted(shown["tables"]) == ["edit-quality", "image-quality", "image-ssim", "jpeg-sweep"]
    header, *rows = shown["tables"]["jpeg-sweep"]
    assert header == ["", "none", "jpeg-95", "jpeg-50"] and [row[0] for row in rows] == ["clean (control)", "encoder-eps8"]
    assert rows[1][1].startswith(f"{cells['encoder-eps8', 'none']['ours']:.2f}")


def test_paper_scale_dry_run_gives_the_attacks_and_sweeps_gpus(scratch_repo, workflow_env):
    paper = snakemake(scratch_repo, "--profile", "slurm", "jpeg-photoguard_tables", "--config", "scale=paper", "-n",
                      env=workflow_env)
    jobs = {name: paper.stdout.split(f"rule {name}:")[1:] for name in ("editing_immunize", "editing_sweep")}
    rows = sorted(re.search(r"immunizer=(\S+)", job).group(1) for job in jobs["editing_immunize"])
    assert rows == ["diffusion", "encoder-eps8", "encoder-zero-eps8"]
    assert len(jobs["editing_sweep"]) == 4  # the three rows and the clean control
    for job in [*jobs["editing_immunize"], *jobs["editing_sweep"]]:
        assert "gpu=1" in job.split("\n[")[0] and "/sd-vae/" in job.split("\n[")[0]
    assert "rule editing_small_ae:" not in paper.stdout  # the paper scale measures in SD's VAE
