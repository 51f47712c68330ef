"""Few-shot runs end to end: a container in, ``model.pt`` + ``metrics.json`` + an MLflow run out; evaluations.

The same guarantees as ``training.run.train_run``: while a run trains, ``checkpoint.pt`` (with a fingerprint
of everything that changes its result) and ``run_key`` sit in its folder, so a killed run resumes
into the same MLflow run; ``metrics.json`` is written last, atomically, and only when training finished, so
its presence means the run is done. A checkpoint of another configuration is deleted and the run starts over.

Entry points for the DAG (each writes its outputs atomically):

- ``train_fewshot_run``: one (dataset, method, recipe, seed) run;
- ``evaluate_fewshot_run``: 5-way 1- and 5-shot accuracy of a run's model on the meta-test classes, 1,000
  seeded episodes each, to one json.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from poisonlab import tracking
from poisonlab.atomic import torch_save, write_json
from poisonlab.data.base import sha256_of
from poisonlab.data.container import ImageDataset
from poisonlab.fewshot.evaluate import embed_pool, evaluate_fewshot
from poisonlab.fewshot.methods import build_method
from poisonlab.fewshot.models import ProtoNet, build_fewshot_model
from poisonlab.fewshot.splits import ClassPool, class_pools
from poisonlab.fewshot.train import FewShotRecipe, fit_episodes
from poisonlab.registry import ConfigError
from poisonlab.training.loop import load_checkpoint, pick_device
from poisonlab.training.precision import resolve_precision


@dataclass(frozen=True)
class FewShotRunSpec:
    """The names that identify a few-shot run: its folder, its MLflow run name, its table row."""

    dataset: str
    method: str
    recipe: str
    seed: int = 0

    @property
    def name(self) -> str:
        return f"fewshot/{self.dataset}/{self.method}/{self.recipe}/seed{self.seed}"


def load_pools(data_path: str | os.PathLike, split: str, device: torch.device | str, pad_to: int | None
               ) -> tuple[ImageDataset, dict[str, ClassPool]]:
    dataset = ImageDataset.load(data_path)
    return dataset, class_pools(dataset, split, device, pad_to)


def train_fewshot_run(spec: FewShotRunSpec, recipe: FewShotRecipe, data_path: str | os.PathLike,
                      run_dir: str | os.PathLike, *, split: str | None = None, pad_to: int | None = None,
                      method_options: dict[str, Any] | None = None, init_weights: str | os.PathLike | None = None,
                      device: str = "auto", progress: bool = True) -> dict[str, Any]:
    """Train ``spec.method`` on the meta-train classes of ``split`` (default: the dataset's own split).

    ``init_weights`` is the ``model.pt`` of the run a method starts from (``autoprotonet-ft`` ← ``ae-pretrain``);
    ``pad_to`` zero-pads images to that size first (MNIST 28 → 32).
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    checkpoint_path = run_dir / "checkpoint.pt"
    method_options = dict(method_options or {})
    method = build_method(spec.method, method_options)
    if (method.starts_from is None) != (init_weights is None):
        raise ConfigError(f"few-shot method '{spec.method}' " + (
            f"starts from a '{method.starts_from}' model: give its model.pt as init_weights"
            if method.starts_from else "trains from scratch: init_weights must not be given"))
    split = split or spec.dataset
    torch_device = pick_device(device)
    dataset, pools = load_pools(data_path, split, torch_device, pad_to)
    data_sha256 = sha256_of(data_path)
    channels, height, _ = pools["train"].image_shape
    precision = resolve_precision(recipe.precision, torch_device)

    torch.manual_seed(spec.seed)  # model initialisation; everything after draws from fit_episodes' generator
    model = build_fewshot_model(method.arch, in_channels=channels, image_size=height)
    init_sha256 = None
    if init_weights is not None:
        init_sha256 = sha256_of(init_weights)
        model.load_state_dict(torch.load(init_weights, map_location="cpu", weights_only=True))
    model.to(torch_device)
    # The resolved precision too: a run killed on a bf16 machine is not resumed in fp32 on another.
    fingerprint = {**dataclasses.asdict(spec), "arch": method.arch, "recipe_config": recipe.to_dict(),
                   "method_options": method_options, "split": split, "pad_to": pad_to, "data_sha256": data_sha256,
                   "init_sha256": init_sha256, "precision": precision}
    # A stale attempt's checkpoint is deleted here: a fresh start reuses no MLflow run of it.
    resume = load_checkpoint(checkpoint_path, fingerprint) is not None

    tags = {**tracking.environment_tags(), "dataset_sha256": data_sha256, "precision_resolved": precision,
            "source_checksum": dataset.source_checksum, "paper": "autoprotonet",
            **{k: str(v) for k, v in dataclasses.asdict(spec).items()}}
    params = {**dataclasses.asdict(spec), "arch": method.arch, "split": split, "pad_to": pad_to,
              **recipe.to_dict(), "method_options": method_options}
    with tracking.tracked_run(run_dir, resume=resume, experiment=tracking.experiment_name(spec.dataset),
                              run_name=spec.name, params=params, tags=tags) as tracked:
        result = fit_episodes(model, method, pools, recipe, seed=spec.seed, checkpoint_path=checkpoint_path,
                              fingerprint=fingerprint, on_epoch=tracked.log_epoch, progress=progress)
        last = result.history[-1]
        record = {
            **dataclasses.asdict(spec),
            "arch": method.arch,
            "split": split,
            "classes": {phase: list(pool.classes) for phase, pool in pools.items()},
            "pad_to": pad_to,
            "in_channels": channels,
            "image_size": height,
            "epochs": recipe.epochs,
            "selected_epoch": result.selected_epoch,
            "final_train_loss": last["train_loss"],
            "history": result.history,
            "wall_seconds": result.wall_seconds,
            "device": result.device,
            "precision": result.precision,
            "run_key": tracked.key,
            "git_commit": tags["git_commit"],
            "recipe_config": recipe.to_dict(),
            "method_options": method_options,
            "init_sha256": init_sha256,
            "dataset_sha256": data_sha256,
            "source_checksum": dataset.source_checksum,
            "host": tags["host"],
            "slurm_job_id": tags["slurm_job_id"],
            "versions": {k.removeprefix("version."): v for k, v in tags.items() if k.startswith("version.")},
        }
        tracked.log_summary({"final_train_loss": last["train_loss"], "wall_seconds": result.wall_seconds,
                                "selected_epoch": result.selected_epoch})
        torch_save(model.state_dict(), run_dir / "model.pt")
        write_json(run_dir / "metrics.json", record)
    checkpoint_path.unlink()
    return record


def load_fewshot_model(run_dir: str | os.PathLike, device: torch.device | str = "cpu") -> tuple[ProtoNet, dict]:
    """A finished run's model (in eval mode, on ``device``) and its ``metrics.json`` record."""
    run_dir = Path(run_dir)
    record = json.loads((run_dir / "metrics.json").read_text())
    model = build_fewshot_model(record["arch"], in_channels=record["in_channels"], image_size=record["image_size"])
    model.load_state_dict(torch.load(run_dir / "model.pt", map_location="cpu", weights_only=True))
    return model.to(device).eval(), record


def evaluate_fewshot_run(run_dir: str | os.PathLike, data_path: str | os.PathLike, out_path: str | os.PathLike, *,
                         way: int = 5, shots: tuple[int, ...] = (1, 5), query: int = 15, episodes: int = 1000,
                         seed: int = 0, device: str = "auto") -> dict[str, Any]:
    """``way``-way accuracy of a run's model for each of ``shots`` on its split's meta-test classes, to one json.

    The run's own split, padding and precision are used; the episodes depend on ``seed`` only, so all runs
    evaluated with one seed are scored on the same episodes.
    """
    torch_device = pick_device(device)
    model, record = load_fewshot_model(run_dir, torch_device)
    _, pools = load_pools(data_path, record["split"], torch_device, record["pad_to"])
    embeddings = embed_pool(model, pools["test"], record["precision"])  # once for every shot
    results = [evaluate_fewshot(model, pools["test"], way=way, shot=shot, query=query, episodes=episodes, seed=seed,
                                precision=record["precision"], embeddings=embeddings) for shot in shots]
    summary = {key: record[key] for key in ("dataset", "method", "arch", "recipe", "seed", "split")}
    # Keyed by shot, so a table's metric can name one: "results.1-shot.acc".
    output = {**summary, "run_dir": str(run_dir), "results": {f"{r['shot']}-shot": r for r in results}}
    write_json(out_path, output)
    return output
