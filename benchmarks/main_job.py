"""Where the main job's time goes: every rule's jobs, summed from the benchmark files the DAG writes.

Each rule of the workflow has a ``benchmark:`` file beside its log (``logs/**/<job>.benchmark.tsv``;
the profiles set ``benchmark-extended``, so each file names its rule). After a run:

    .venv/bin/python benchmarks/main_job.py [--logs logs] [--wall-s 1234] [--out benchmarks/results/main_job.json]

prints one row a rule — jobs, seconds summed over its jobs (wall time each job ran, so two jobs at once
count twice), mean and longest job, CPU seconds, largest resident memory — sorted by seconds, and the
CPU it ran on. ``--wall-s`` (the run's own wall time, e.g. from ``time make main``) adds the overall
parallelism (summed job seconds / wall seconds).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import polars as pl

from poisonlab.atomic import write_json
from precision import cpu_description  # benchmarks/precision.py: the CPU and its bf16 flags


def read_benchmarks(logs: Path) -> pl.DataFrame:
    """One row a job: its rule and what Snakemake measured (s, cpu_time, max_rss in MB)."""
    files = sorted(logs.rglob("*.benchmark.tsv"))
    if not files:
        raise SystemExit(f"no *.benchmark.tsv under {logs}: run the DAG first (make main)")
    frames = []
    for path in files:
        frame = pl.read_csv(path, separator="\t", infer_schema_length=0)
        if "rule_name" not in frame.columns:
            raise SystemExit(f"{path}: no rule_name column; run Snakemake with --benchmark-extended (the profiles do)")
        frames.append(frame.select("rule_name", "s", "cpu_time", "max_rss").tail(1))
    jobs = pl.concat(frames)
    return jobs.with_columns(
        pl.col(column).replace("NA", None).cast(pl.Float64) for column in ("s", "cpu_time", "max_rss")
    )


def per_rule(jobs: pl.DataFrame) -> pl.DataFrame:
    return (
        jobs.group_by("rule_name")
        .agg(
            pl.len().alias("jobs"),
            pl.col("s").sum().alias("job_s"),
            pl.col("s").mean().alias("mean_s"),
            pl.col("s").max().alias("longest_s"),
            pl.col("cpu_time").sum().alias("cpu_s"),
            pl.col("max_rss").max().alias("max_rss_mb"),
        )
        .sort("job_s", descending=True)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logs", type=Path, default=Path("logs"))
    parser.add_argument("--wall-s", type=float, help="the run's wall time, to report its parallelism")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/main_job.json"))
    args = parser.parse_args()

    rules = per_rule(read_benchmarks(args.logs))
    total_job_s = rules["job_s"].sum()
    print(f"CPU: {cpu_description()}")
    with pl.Config(tbl_rows=-1, tbl_hide_dataframe_shape=True, float_precision=1):
        print(rules)
    print(f"{rules['jobs'].sum()} jobs, {total_job_s:,.0f} job-seconds, {rules['cpu_s'].sum():,.0f} CPU-seconds")
    if args.wall_s:
        print(f"wall {args.wall_s:,.0f} s: {total_job_s / args.wall_s:.2f} jobs running on average")
    write_json(args.out, {"cpu": cpu_description(), "wall_s": args.wall_s, "rules": rules.to_dicts()})


if __name__ == "__main__":
    main()
