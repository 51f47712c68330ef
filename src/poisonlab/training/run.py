"""One training run, end to end: container in, ``model.pt`` + ``metrics.json`` + an MLflow run out.

A run lives in ``results/runs/{dataset}/{poison}/{defense}/{arch}/{recipe}/seed{seed}/``,
with the weights after every ``keep_weights_every``-th epoch in ``epochs/`` (for DFR), kept in
``epochs.partial/`` while it trains and renamed when it has finished: ``epochs/`` is an output of the
train rule, which Snakemake deletes before a rerun, so a killed run's epochs must live elsewhere to be
resumed. A data-level defense reached the run as its sanitized container, so it trains
plainly; a training-time defense is built here from its name and options. While it trains,
``checkpoint.pt`` and ``run_key`` sit in that folder so a killed run resumes, into the same MLflow
run; ``metrics.json`` is written last and only when training finished, so its presence means the run
is done.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from poisonlab import tracking
from poisonlab.atomic import torch_save, write_json
from poisonlab.data.base import sha256_of
from poisonlab.data.container import ImageDataset
from poisonlab.defenses import Sanitizer, build_defense
from poisonlab.models import build_model
from poisonlab.training.loop import DeviceData, fit, load_checkpoint, pick_device
from poisonlab.training.precision import resolve_precision
from poisonlab.training.recipe import Recipe


@dataclass(frozen=True)
class RunSpec:
    """The names that identify a run: its path, its MLflow run name, its table cell."""

    dataset: str
    arch: str
    recipe: str
    seed: int = 0
    poison: str = "clean"
    defense: str = "none"

    @property
    def name(self) -> str:
        return f"{self.dataset}/{self.poison}/{self.defense}/{self.arch}/{self.recipe}/seed{self.seed}"


def train_run(spec: RunSpec, recipe: Recipe, data_path: str | os.PathLike, run_dir: str | os.PathLike,
              *, device: str = "auto", progress: bool = True, defense_options: dict[str, Any] | None = None,
              keep_weights_every: int = 1) -> dict[str, Any]:
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    checkpoint_path = run_dir / "checkpoint.pt"
    weights_dir = run_dir / "epochs"
    partial_weights_dir = run_dir / "epochs.partial"
    defense_options = dict(defense_options or {})
    defense = build_defense(spec.defense, defense_options)
    if isinstance(defense, Sanitizer):
        defense = None  # already applied to the data this run reads
    dataset = ImageDataset.load(data_path)
    data_sha256 = sha256_of(data_path)
    height, _, channels = dataset.image_shape

    torch_device = pick_device(device)
    precision = resolve_precision(recipe.precision, torch_device)
    torch.manual_seed(spec.seed)  # model initialisation; everything after draws from fit's generator
    model = build_model(spec.arch, num_classes=dataset.num_classes, in_channels=channels,
                        image_size=height).to(torch_device)
    data = DeviceData.from_container(dataset, torch_device)
    # The resolved precision too: a run killed on a bf16 machine is not resumed in fp32 on another.
    fingerprint = {**dataclasses.asdict(spec), "recipe_config": recipe.to_dict(), "data_sha256": data_sha256,
                   "defense_options": defense_options, "precision": precision}
    checkpoint = load_checkpoint(checkpoint_path, fingerprint)
    if checkpoint is None:
        # A fresh start (or a stale attempt's checkpoint, deleted): no epoch or MLflow run of it is reused.
        shutil.rmtree(partial_weights_dir, ignore_errors=True)
    shutil.rmtree(weights_dir, ignore_errors=True)  # a finished run's, trained again

    tags = {**tracking.environment_tags(), "dataset_sha256": data_sha256, "precision_resolved": precision,
            "source_checksum": dataset.source_checksum, "run_dir": str(run_dir),
            **{k: str(v) for k, v in dataclasses.asdict(spec).items()}}
    # The poison's options (as the poisoned container records them) beside the defense's: what made the data.
    poison_options = dataset.meta.get("poison", {}).get("params", {})
    params = {**dataclasses.asdict(spec), **recipe.to_dict(), "defense_options": defense_options,
              "poison_options": poison_options}
    with tracking.tracked_run(run_dir, resume=checkpoint is not None, experiment=tracking.experiment_name(spec.dataset),
                              run_name=spec.name, params=params, tags=tags) as tracked:
        if checkpoint is not None:
            tracked.log_missing_epochs(checkpoint["history"])
        result = fit(model, data, recipe, seed=spec.seed, checkpoint_path=checkpoint_path,
                     fingerprint=fingerprint, on_epoch=tracked.log_epoch, progress=progress, defense=defense,
                     weights_dir=partial_weights_dir, keep_weights_every=keep_weights_every)
        peak = result.peak
        record = {
            **dataclasses.asdict(spec),
            "epochs": recipe.epochs,
            "final_test_acc": result.final_test_acc,
            "peak_test_acc": peak["test_acc"],
            "peak_epoch": int(peak["epoch"]),
            "history": result.history,
            "wall_seconds": result.wall_seconds,
            "device": result.device,
            "precision": result.precision,
            "run_key": tracked.key,
            "git_commit": tags["git_commit"],
            "recipe_config": recipe.to_dict(),
            "defense_options": defense_options,
            "dataset_sha256": data_sha256,
            "source_checksum": dataset.source_checksum,
            "data_meta": dataset.meta,  # how the training set was made: subset, poison and its options, defense
            "host": tags["host"],
            "slurm_job_id": tags["slurm_job_id"],
            "versions": {k.removeprefix("version."): v for k, v in tags.items() if k.startswith("version.")},
        }
        tracked.log_summary({k: record[k] for k in ("final_test_acc", "peak_test_acc", "peak_epoch",
                                                       "wall_seconds")})
        torch_save(model.state_dict(), run_dir / "model.pt")
        partial_weights_dir.rename(weights_dir)
        write_json(run_dir / "metrics.json", record)
    checkpoint_path.unlink()
    return record
