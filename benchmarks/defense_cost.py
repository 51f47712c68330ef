"""Per-epoch cost of every training-time defense relative to ``none``, at the embedded scale.

Trains the embedded recipe's model (smallcnn on MNIST-5k by default) for ``--epochs`` epochs under
each training-time defense and reports the mean seconds an epoch (test scoring included, as in a
run) and the ratio to ``none``. Data-level defenses cost nothing per epoch (they run once, before
training) and are skipped. Run on demand:

    .venv/bin/python benchmarks/defense_cost.py [--epochs 2] [--device auto] [--dataset mnist5k]

Results go to stdout and benchmarks/results/defense_cost.json.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from poisonlab.atomic import write_json
from poisonlab.config import get_defense_options, get_recipe, load_config
from poisonlab.data import build_dataset
from poisonlab.defenses import DEFENSES, NUMBERED, TrainingDefense, build_defense
from poisonlab.models import build_model
from poisonlab.training import DeviceData, Recipe, fit, pick_device

ROOT = Path(__file__).resolve().parents[1]


def epoch_seconds(data: DeviceData, recipe: Recipe, defense: TrainingDefense, device: torch.device) -> float:
    torch.manual_seed(0)
    model = build_model("smallcnn", num_classes=data.num_classes, in_channels=data.x_train.shape[1],
                        image_size=data.x_train.shape[-1]).to(device)
    history = fit(model, data, recipe, seed=0, progress=False, defense=defense).history
    return sum(row["seconds"] for row in history) / len(history)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dataset", default="mnist5k")
    args = parser.parse_args()
    device = pick_device(args.device)
    config = load_config(ROOT / "config" / "config.yaml")
    recipe = Recipe.from_dict({**get_recipe(config, config["recipe"]).to_dict(), "epochs": args.epochs})
    data = DeviceData.from_container(build_dataset(args.dataset), device)

    names = [name for name in DEFENSES.names() if name not in NUMBERED]
    defenses = {name: build_defense(name, get_defense_options(config, name, args.dataset)) for name in names}
    training_time = {name: d for name, d in defenses.items() if isinstance(d, TrainingDefense)}
    epoch_seconds(data, recipe, training_time["none"], device)  # warm-up: allocator, kernels, imports
    baseline = epoch_seconds(data, recipe, training_time["none"], device)
    rows = []
    print(f"{'defense':<12}{'s/epoch':>9}{'× none':>8}")
    for name, defense in training_time.items():
        seconds = baseline if name == "none" else epoch_seconds(data, recipe, defense, device)
        rows.append({"defense": name, "seconds_per_epoch": seconds, "relative_to_none": seconds / baseline})
        print(f"{name:<12}{seconds:>9.2f}{seconds / baseline:>8.2f}", flush=True)
    machine = {"device": str(device), "threads": torch.get_num_threads(), "load_average_1min": os.getloadavg()[0]}
    write_json(ROOT / "benchmarks" / "results" / "defense_cost.json",
               {"dataset": args.dataset, "epochs": args.epochs, "machine": machine, "rows": rows})


if __name__ == "__main__":
    main()
