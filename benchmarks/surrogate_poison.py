"""Generation time of a surrogate poison (em, em-class, tap, rem, …) on real images, and its effect.

Loads ``cifar10-jpeg`` (or ``mnist5k``), runs the poison through ``apply_poison`` exactly as the
``poison`` rule does, and reports wall seconds; with ``--train-epochs`` it then trains a model on
the poisoned training set and on the clean one and reports both test accuracies. Run on demand
(a GPU is the intended place for CIFAR-sized surrogate poisons):

    .venv/bin/python benchmarks/surrogate_poison.py --poison em --dataset cifar10-jpeg \\
        [--train 50000] [--option surrogate=resnet18] [--train-epochs 0] [--device auto]

Progress (one log line a round) goes to stderr; the result row to stdout and
benchmarks/results/surrogate_poison_<poison>.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import torch
import yaml

from poisonlab.atomic import write_json
from poisonlab.data import build_dataset
from poisonlab.models import build_model
from poisonlab.poisons import apply_poison
from poisonlab.training import DeviceData, Recipe, fit, pick_device

SHARED_CIFAR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10-jpeg.tar.gz"


def load(dataset: str, path: str, train: int | None, test: int):
    if dataset == "mnist5k":
        return build_dataset("mnist5k")
    subset = {"train": train, "test": test} if train else None
    return build_dataset(dataset, options={"path": path}, subset=subset)


def train_accuracy(dataset, arch: str, epochs: int, device: torch.device) -> float:
    height, _, channels = dataset.image_shape
    torch.manual_seed(0)
    model = build_model(arch, num_classes=dataset.num_classes, in_channels=channels, image_size=height).to(device)
    recipe = Recipe.from_dict({"epochs": epochs, "batch_size": 512, "lr": 0.1, "schedule": "cosine",
                               "warmup_epochs": 1, "grad_clip": 5.0,
                               "augment": {"crop": {"padding": 4}, "flip": {}}})
    return fit(model, DeviceData.from_container(dataset, device), recipe, seed=0, progress=False).final_test_acc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--poison", default="em")
    parser.add_argument("--dataset", default="cifar10-jpeg", choices=["cifar10-jpeg", "mnist5k"])
    parser.add_argument("--path", default=str(SHARED_CIFAR), help="cifar10-jpeg tarball or folder")
    parser.add_argument("--train", type=int, default=None, help="stratified training subset (default: all)")
    parser.add_argument("--test", type=int, default=10_000)
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="poison option, YAML-typed (repeatable)")
    parser.add_argument("--train-epochs", type=int, default=0, help="train a model on the result (0: skip)")
    parser.add_argument("--arch", default="resnet18", help="the model --train-epochs trains")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    device = pick_device(args.device)
    options = {key: yaml.safe_load(value) for key, value in (item.split("=", 1) for item in args.option)}

    clean = load(args.dataset, args.path, args.train, args.test)
    started = time.perf_counter()
    poisoned = apply_poison(args.poison, clean, seed=0, params=options, device=device)
    seconds = time.perf_counter() - started
    row = {"poison": args.poison, "dataset": args.dataset, "train_images": len(clean.x_train), "options": options,
           "device": torch.cuda.get_device_name() if device.type == "cuda" else str(device),
           "generation_s": seconds, "linf_max": float(poisoned.extras["perturbation_linf"].max())}
    if args.train_epochs:
        row |= {"arch": args.arch, "train_epochs": args.train_epochs,
                "clean_test_acc": train_accuracy(clean, args.arch, args.train_epochs, device),
                "poisoned_test_acc": train_accuracy(poisoned, args.arch, args.train_epochs, device)}
    print(json.dumps(row))
    write_json(Path(__file__).parent / "results" / f"surrogate_poison_{args.poison}.json", row)


if __name__ == "__main__":
    main()
