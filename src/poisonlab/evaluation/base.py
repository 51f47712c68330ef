"""The evaluation interface: a finished run in, one JSON-able record out.

An evaluation is a function registered under its DESIGN.md name that takes a
``TrainedRun`` and its keyword-only options::

    @EVALUATIONS.register("dfr")
    def dfr(run, *, train_images=5000, C=1.0, seed=0):
        ...
        return {"epochs": [...], ...}

``evaluate_run`` is the one entry point (CLI, Snakemake scripts): it checks the
option names before anything is loaded, opens the run's ``metrics.json``, and
returns the evaluation's result under the run's identifying keys, with the
options as resolved (defaults filled in), so the record says how it was made.
"""

from __future__ import annotations

import inspect
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from poisonlab.data.container import ImageDataset
from poisonlab.models import Classifier, build_model
from poisonlab.registry import ConfigError, Registry
from poisonlab.training.loop import pick_device

Evaluation = Callable[..., dict[str, Any]]

EVALUATIONS: Registry[Evaluation] = Registry("evaluation")

# The keys of metrics.json that name a run (its path, its table cell); every evaluation record repeats them.
IDENTITY_KEYS = ("dataset", "poison", "defense", "arch", "recipe", "seed")

_EPOCH_FILE = re.compile(r"epoch(\d+)\.pt")


@dataclass
class TrainedRun:
    """A finished training run: its folder and record, the containers it was trained and checked on."""

    run_dir: Path
    metrics: dict[str, Any]
    training_data: Path
    clean_data: Path
    device: torch.device

    @classmethod
    def open(cls, run_dir: str | os.PathLike, *, training_data: str | os.PathLike, clean_data: str | os.PathLike,
             device: str | torch.device = "cpu") -> TrainedRun:
        run_dir = Path(run_dir)
        metrics_path = run_dir / "metrics.json"
        if not metrics_path.exists():
            raise ConfigError(f"run {run_dir} has no metrics.json: it has not finished training")
        metrics = json.loads(metrics_path.read_text())
        missing = [key for key in (*IDENTITY_KEYS, "history") if key not in metrics]
        if missing:
            raise ConfigError(f"{metrics_path} lacks {', '.join(missing)}")
        device = device if isinstance(device, torch.device) else pick_device(device)
        return cls(run_dir, metrics, Path(training_data), Path(clean_data), device)

    @property
    def identity(self) -> dict[str, Any]:
        return {key: self.metrics[key] for key in IDENTITY_KEYS}

    @cached_property
    def training(self) -> ImageDataset:
        """The container the run trained on (poisoned, sanitized or clean)."""
        return ImageDataset.load(self.training_data)

    @cached_property
    def clean(self) -> ImageDataset:
        """The clean container the training set was made from: same images in the same order, unperturbed."""
        return ImageDataset.load(self.clean_data)

    def checkpoints(self) -> list[tuple[int, Path]]:
        """(epoch, path) of the weights kept in ``epochs/`` during training, by epoch."""
        kept = [(int(match[1]), path) for path in (self.run_dir / "epochs").glob("epoch*.pt")
                if (match := _EPOCH_FILE.fullmatch(path.name))]
        if not kept:
            raise ConfigError(f"run {self.run_dir} kept no per-epoch weights in epochs/; train it with "
                              "keep_weights_every set to evaluate over training")
        return sorted(kept)

    def load_model(self, weights_path: str | os.PathLike) -> Classifier:
        """The run's arch with the weights at ``weights_path``, on the run's device, in eval mode."""
        height, _, channels = self.training.image_shape
        model = build_model(self.metrics["arch"], num_classes=self.training.num_classes, in_channels=channels,
                            image_size=height)
        model.load_state_dict(torch.load(weights_path, map_location=self.device, weights_only=True))
        # channels_last as in training (fit), so the same weights give the same numbers as they did there.
        return model.to(self.device, memory_format=torch.channels_last).eval()


def evaluate_run(name: str, run_dir: str | os.PathLike, *, training_data: str | os.PathLike,
                 clean_data: str | os.PathLike, options: dict[str, Any] | None = None,
                 device: str | torch.device = "cpu") -> dict[str, Any]:
    """Evaluation ``name`` of the finished run in ``run_dir``: the run's identifying keys, the evaluation's
    name and resolved options, then its result.

    ``training_data`` is the container the run trained on, ``clean_data`` the clean container it was
    made from (the same file for a clean run); ``device`` a torch device or a name ("cpu", "cuda", "auto").
    """
    options = dict(options or {})
    EVALUATIONS.check_options(name, options)
    run = TrainedRun.open(run_dir, training_data=training_data, clean_data=clean_data, device=device)
    evaluation = EVALUATIONS.get(name)
    return {**run.identity, "evaluation": name, "options": _resolved_options(evaluation, options),
            **evaluation(run, **options)}


def _resolved_options(evaluation: Evaluation, options: dict[str, Any]) -> dict[str, Any]:
    parameters = inspect.signature(evaluation).parameters.values()
    defaults = {p.name: p.default for p in parameters if p.kind is p.KEYWORD_ONLY}
    return {**defaults, **options}
