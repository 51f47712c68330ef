"""A training job's start-up, phase by phase: from the process's birth to its first batch.

Runs the train rule's code path (``training.run.train_run``, one epoch of the embedded recipe on MNIST-5k)
in fresh interpreters, as Snakemake starts a job, and stamps each phase against the process's creation
time (``psutil``): the interpreter, ``import torch``, poisonlab's modules, the container and model, the
optimizer (torch.optim's own classes would import ``torch._dynamo`` here; training/optim.py's do not),
the run's tracking, and the first training step.
Median of ``--repeats`` processes. Run on demand:

    .venv/bin/python benchmarks/job_startup.py [--repeats 5]

``python -X importtime -c "import poisonlab.training.run"`` breaks the import phases down further.
Results also go to benchmarks/results/job_startup.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from poisonlab.atomic import write_json

# The job, stamping phases as it goes; each stamp is seconds since the process was created.
JOB = r"""
import sys, time
from contextlib import contextmanager
import psutil
born = psutil.Process().create_time()
stamps = {"interpreter": time.time() - born}
import torch
stamps["import torch"] = time.time() - born
from poisonlab.training import Recipe
from poisonlab.training import loop, run as run_module
from poisonlab.training.run import RunSpec, train_run
stamps["import poisonlab"] = time.time() - born

def stamped(name, function):
    def wrapper(*args, **kwargs):
        result = function(*args, **kwargs)
        stamps.setdefault(name, time.time() - born)
        return result
    return wrapper

class FirstStep(Exception):
    pass

def first_step(*args, **kwargs):
    stamps["first batch"] = time.time() - born
    raise FirstStep

run_module.build_model = stamped("container and model", run_module.build_model)
Recipe.make_optimizer = stamped("optimizer", Recipe.make_optimizer)
tracked_run = run_module.tracking.tracked_run

@contextmanager
def tracked(*args, **kwargs):
    with tracked_run(*args, **kwargs) as tracked:
        stamps["tracking"] = time.time() - born
        yield tracked

run_module.tracking.tracked_run = tracked
loop.train_step = first_step
torch.set_num_threads(1)
spec = RunSpec(dataset="mnist5k", arch="smallcnn", recipe="embedded", seed=0)
recipe = Recipe.from_dict({**CONFIG, "epochs": 1}, name="recipes.embedded")
try:
    train_run(spec, recipe, sys.argv[1], sys.argv[2], device="cpu", progress=False)
except FirstStep:
    pass
print(json.dumps(stamps))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/job_startup.json"))
    args = parser.parse_args()

    from poisonlab.config import get_recipe, load_config
    from poisonlab.data import build_dataset

    recipe = get_recipe(load_config("config/config.yaml"), "embedded").to_dict()
    runs = []
    with tempfile.TemporaryDirectory() as folder:
        data = Path(folder) / "mnist5k.npz"
        build_dataset("mnist5k").save(data)
        env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{folder}/mlflow.db"}
        job = f"import json\nCONFIG = {recipe!r}\n" + JOB
        for repeat in range(args.repeats):
            done = subprocess.run([sys.executable, "-c", job, str(data), f"{folder}/run{repeat}"], env=env,
                                  capture_output=True, text=True, check=True)
            runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    phases = {name: statistics.median(run[name] for run in runs) for name in runs[0]}
    previous = 0.0
    print(f"{'phase':28s} {'ends at':>8s} {'takes':>7s}  (median of {args.repeats} processes, seconds)")
    for name, ends in sorted(phases.items(), key=lambda item: item[1]):
        print(f"{name:28s} {ends:8.2f} {ends - previous:7.2f}")
        previous = ends
    write_json(args.out, {"phases_s": phases, "runs": runs})


if __name__ == "__main__":
    main()
