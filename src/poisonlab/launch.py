"""Sweeps outside the DAG: the train rule's own function, sent through submitit.

``poisonlab launch`` (or ``python -m poisonlab.launch``) submits one job per
(arch, seed) to Slurm, to local subprocesses or into this process (debug). Each
job calls ``train_run`` with the train rule's arguments (``train_arguments``: the
configured paths, recipe, defense options and kept weights) and writes the same
run folder (metrics.json, model.pt, an MLflow run), so the tables read it like the DAG's.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import submitit
from submitit.core.utils import UncompletedJobError

from poisonlab import tracking
from poisonlab.config import get_defense_options, get_recipe
from poisonlab.paths import Paths, training_data
from poisonlab.registry import ConfigError, Registry
from poisonlab.training.run import RunSpec, train_run

# AutoExecutor pinned to one environment: left to guess, it picks Slurm wherever `srun` exists.
EXECUTORS: Registry[Callable[[str | Path], submitit.Executor]] = Registry("executor")
for _cluster in ("debug", "local", "slurm"):
    EXECUTORS.register(_cluster)(functools.partial(submitit.AutoExecutor, cluster=_cluster))


def slurm_parameters(resources: dict[str, Any], slurm: dict[str, Any] | None = None) -> dict[str, Any]:
    """``resources.train`` (Snakemake's names) and Slurm options → submitit's ``update_parameters`` names.

    The generic names reach every executor (local honours timeout_min and gpus_per_node);
    ``slurm_``-prefixed ones are ignored off Slurm, so one dict serves all three.
    """
    parameters = {
        "timeout_min": int(resources["runtime"]),
        # submitit hands Slurm int(mem_gb * 1024) MB: 4000 → --mem=4000MB, what the Snakemake profile asks for.
        "mem_gb": resources["mem_mb"] / 1024,
        "cpus_per_task": int(resources.get("cpus", 1)),
    }
    if resources.get("gpu"):  # none asked for: no GPU flag at all, as the Snakemake profile does
        parameters["gpus_per_node"] = int(resources["gpu"])
    return parameters | {f"slurm_{key}": value for key, value in (slurm or {}).items() if value is not None}


def train_arguments(config: dict[str, Any], spec: RunSpec, *, data_path: str | Path | None = None,
                    run_dir: str | Path | None = None) -> dict[str, Any]:
    """``train_run``'s arguments for ``spec`` as the train rule gives them, its training data checked.

    ``data_path`` and ``run_dir`` default to the rule's: the container the run trains on (clean,
    poisoned or sanitized) and the run's folder, under the configured paths.
    """
    from poisonlab.data import DATASETS
    from poisonlab.models import MODELS
    from poisonlab.poisons import POISONS

    DATASETS.get(spec.dataset)
    MODELS.get(spec.arch)
    POISONS.get(spec.poison)
    recipe = get_recipe(config, spec.recipe)
    defense_options = get_defense_options(config, spec.defense, spec.dataset)
    data_path = Path(data_path or training_data(config, spec.dataset, spec.poison, spec.defense))
    if not data_path.exists():
        scale = config.get("scale", "embedded")
        raise ConfigError(f"training data {data_path} does not exist; build it with `snakemake --profile local "
                          f"{data_path} --config scale={scale}`" + (f" or `poisonlab data --dataset {spec.dataset} "
                                                                   f"--out {data_path}`" if scale == "embedded" and
                                                                   data_path.parent.name == "clean" else ""))
    return {"spec": spec, "recipe": recipe, "data_path": data_path,
            "run_dir": Path(run_dir or Paths.from_config(config).run_dir(**dataclasses.asdict(spec))),
            "defense_options": defense_options, "keep_weights_every": config.get("keep_weights_every", 1)}


def launch_sweep(config: dict[str, Any], *, archs: Sequence[str], seeds: Sequence[int], dataset: str | None = None,
                 poison: str = "clean", defense: str = "none", recipe: str | None = None, executor: str = "slurm",
                 folder: str | Path = "logs/submitit", slurm: dict[str, Any] | None = None,
                 device: str = "auto") -> list[submitit.Job]:
    """Submit ``train_run`` for each (arch, seed) without a metrics.json yet, as one batch (a Slurm job array).

    Every name and the training container are checked before anything is submitted; the
    debug executor's jobs run only when their ``result()`` is asked for.
    """
    make_executor = EXECUTORS.get(executor)
    dataset = dataset or config["dataset"]
    specs = dict.fromkeys(RunSpec(dataset=dataset, arch=arch, recipe=recipe or config["recipe"], seed=seed,
                                  poison=poison, defense=defense) for arch in archs for seed in seeds)  # no duplicates
    arguments = [train_arguments(config, spec) for spec in specs]  # every name checked before any job
    pending = [kwargs for kwargs in arguments if not (kwargs["run_dir"] / "metrics.json").exists()]
    if not pending:
        return []
    try:
        jobs_executor = make_executor(folder)
        jobs_executor.update_parameters(name=f"train-{dataset}",
                                        **slurm_parameters(config["resources"]["train"], slurm))
    except (RuntimeError, NameError) as error:  # submitit's words for "no srun here" and "no such parameter"
        raise ConfigError(f"executor '{executor}': {error}") from None
    # Parallel jobs would race to create the sqlite store and the experiment (as in the DAG's onstart).
    tracking.init_store([tracking.experiment_name(dataset)])
    with jobs_executor.batch():
        jobs = [jobs_executor.submit(train_run, **kwargs, device=device, progress=False) for kwargs in pending]
    return jobs


def launch_command(config: dict[str, Any], args: argparse.Namespace) -> int:
    """``poisonlab launch``: one line per submitted job; with --wait, each run's final test accuracy."""
    archs, seeds = args.arch or config["archs"], args.seed or config["seeds"]
    jobs = launch_sweep(config, archs=archs, seeds=seeds, dataset=args.dataset, recipe=args.recipe,
                        executor=args.executor, device=config.get("device", "auto"),
                        slurm={"partition": args.partition, "account": args.account})
    if skipped := len(set(archs)) * len(set(seeds)) - len(jobs):
        print(f"skipped {skipped} finished run(s)")
    # The run folder as submitted, read back from the job's own pickle.
    run_dirs = [job.submission().kwargs["run_dir"] for job in jobs]
    for job, run_dir in zip(jobs, run_dirs):
        print(f"{job.job_id}\t{run_dir}")
    if not (args.wait or args.executor == "debug"):  # debug jobs would otherwise never run
        print("their MLflow runs appear after `poisonlab sync` (run it once they end)")
        return 0
    status = 0
    for job, run_dir in zip(jobs, run_dirs):
        try:
            print(f"{run_dir}\tfinal_test_acc {job.result()['final_test_acc']:.2f}")
        except UncompletedJobError as error:  # one failed run must not hide the others' results
            print(f"{run_dir}\tfailed: {error}", file=sys.stderr)
            status = 1
    tracking.sync()  # the runs' journals into MLflow
    return status


if __name__ == "__main__":
    from poisonlab.cli import main

    sys.exit(main(["launch", *sys.argv[1:]]))
