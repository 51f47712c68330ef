"""Snakemake's own cost on one machine: how often it re-runs its job selection, at two rate-limit settings.

Runs a DAG of ``--jobs`` shell jobs (each sleeps ``--sleep`` s, so the jobs themselves cost no CPU) on
2 cores, once with Snakemake's default ``--max-jobs-per-timespan 100/1s`` and once with the local
profile's setting, and reports for each: the selections made (``Ready jobs`` lines of ``--verbose``), the
Snakemake process's CPU seconds, and the wall time (which includes waiting for the last re-selection
timer at exit). Run on demand:

    .venv/bin/python benchmarks/scheduler_passes.py [--jobs 120 --sleep 1.5]

Results also go to benchmarks/results/scheduler_passes.json.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from poisonlab.atomic import write_json

ROOT = Path(__file__).resolve().parents[1]
SNAKEFILE = """
rule all:
    input: expand("out/{{i}}.txt", i=range({jobs}))

rule sleeper:
    input: "in.txt"
    output: "out/{{i}}.txt"
    shell: "sleep {sleep}; touch {{output}}"
"""


def measure(folder: Path, setting: str) -> dict:
    """One run of the DAG in ``folder`` at ``--max-jobs-per-timespan setting``: selections, CPU, wall."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run([str(Path(sys.executable).with_name("snakemake")), "--cores", "2", "--verbose",
                             "--forceall", "--max-jobs-per-timespan", setting, "all"],
                            cwd=folder, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # The sleeping jobs' own CPU is a few ms each: what the children used is Snakemake's.
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    log = result.stdout + result.stderr
    return {"setting": setting, "selections": log.count("Ready jobs"), "snakemake_cpu_s": round(cpu, 2),
            "wall_s": round(wall, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=120)
    parser.add_argument("--sleep", type=float, default=1.5)
    args = parser.parse_args()
    profile = yaml.safe_load((ROOT / "profiles/local/config.yaml").read_text())
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "Snakefile").write_text(SNAKEFILE.format(jobs=args.jobs, sleep=args.sleep))
        (folder / "in.txt").touch()
        for setting in ("100/1s", profile["max-jobs-per-timespan"]):
            rows.append(measure(folder, setting))
            print(rows[-1], flush=True)
    write_json(ROOT / "benchmarks/results/scheduler_passes.json",
               {"jobs": args.jobs, "sleep_s": args.sleep, "ideal_wall_s": args.jobs * args.sleep / 2, "runs": rows})


if __name__ == "__main__":
    main()
