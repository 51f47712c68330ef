"""Poison × defense cells trained straight through the library, for a GPU box without the workflow's stack.

The DAG (`snakemake all_tables`) is how poisonlab runs experiments; this script runs the same
library calls — ``apply_poison``, ``apply_sanitizer``, ``fit`` with the training-time defense — for a
handful of cells where Snakemake, MLflow and polars are not installed (a lent GPU machine with only
PyTorch). Recipes come from the project's config by name. Run on demand:

    python benchmarks/defense_grid.py --cells clean/none cuda/none cuda/rsk-ff cuda/at-linf-8 \\
        --recipe cuda-sharpening --extra-config config/papers/cuda-sharpening.yaml --arch resnet18
    python benchmarks/defense_grid.py --cells ar/none ar/jpeg-10 --recipe small \\
        --extra-config config/scales/cifar10-small.yaml --arch smallcnn     # the cifar10-small subset

One json line a cell (final and peak test accuracy, seconds) to stdout, all of them to
benchmarks/results/defense_grid.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import torch

from poisonlab.atomic import write_json
from poisonlab.config import (get_dataset_options, get_defense_options, get_poison_options, get_recipe, load_config,
                              merge)
from poisonlab.data import build_dataset
from poisonlab.defenses import Sanitizer, apply_sanitizer, build_defense
from poisonlab.models import build_model
from poisonlab.poisons import apply_poison
from poisonlab.training import DeviceData, Recipe, fit, pick_device

ROOT = Path(__file__).resolve().parents[1]
SHARED_CIFAR = ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"


def run_cell(clean, poison: str, defense: str, *, config: dict, recipe: Recipe, arch: str,
             device: torch.device) -> dict:
    started = time.perf_counter()
    dataset = "cifar10-jpeg"
    data = clean if poison == "clean" else apply_poison(
        poison, clean, seed=0, params=get_poison_options(config, poison, dataset), device=device)
    options = get_defense_options(config, defense, dataset)
    training_defense = build_defense(defense, options)
    if isinstance(training_defense, Sanitizer):
        data = apply_sanitizer(defense, data, seed=0, options=options, device=device)
        training_defense = None
    prepared = time.perf_counter() - started
    height, _, channels = data.image_shape
    torch.manual_seed(0)
    model = build_model(arch, num_classes=data.num_classes, in_channels=channels, image_size=height).to(device)
    result = fit(model, DeviceData.from_container(data, device), recipe, seed=0, progress=False,
                 defense=training_defense)
    peak = result.peak
    return {"poison": poison, "defense": defense, "arch": arch, "epochs": recipe.epochs,
            "train_images": len(clean.x_train), "final_test_acc": result.final_test_acc,
            "peak_test_acc": peak["test_acc"], "peak_epoch": int(peak["epoch"]), "prepare_s": prepared,
            "train_s": result.wall_seconds, "device": result.device,
            "history": [round(row["test_acc"], 2) for row in result.history]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", nargs="+", required=True, metavar="POISON/DEFENSE")
    parser.add_argument("--recipe", required=True, help="a recipe name defined in the config")
    parser.add_argument("--config", default=str(ROOT / "config" / "config.yaml"))
    parser.add_argument("--extra-config", default=None, help="a yaml merged over --config (a paper's recipes)")
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs")
    parser.add_argument("--path", default=str(SHARED_CIFAR), help="cifar10-jpeg tarball or folder")
    parser.add_argument("--train", type=int, default=None,
                        help="stratified training subset (default: the config's cifar10-jpeg subset, else all)")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    config = load_config(args.config)
    if args.extra_config:
        config = merge(config, load_config(args.extra_config))
    recipe = get_recipe(config, args.recipe)
    if args.epochs:
        recipe = Recipe.from_dict({**recipe.to_dict(), "epochs": args.epochs}, name=f"recipes.{args.recipe}")
    device = pick_device(args.device)
    subset = get_dataset_options(config, "cifar10-jpeg")[1] if "cifar10-jpeg" in config["datasets"] else None
    if args.train:
        subset = {"train": args.train, "test": 10_000}
    clean = build_dataset("cifar10-jpeg", options={"path": args.path}, subset=subset)
    rows = []
    for cell in args.cells:
        poison, defense = cell.split("/")
        rows.append(run_cell(clean, poison, defense, config=config, recipe=recipe, arch=args.arch, device=device))
        print(json.dumps(rows[-1]), flush=True)
        write_json(ROOT / "benchmarks" / "results" / "defense_grid.json", rows)


if __name__ == "__main__":
    main()
