"""``peak``: what early stopping recovers, and how fast the training loss falls — from a run's history alone.

Sandoval-Segura et al., "Poisons that are learned faster are more effective"
(CVPR-W 2022) score a poison by the peak clean test accuracy over 100 epochs
(test accuracy every epoch) and its epoch, and relate it to how fast training
loss falls: poisons that reach a low training loss sooner have a lower peak.
The paper shows loss curves rather than one speed number, so two summaries of
the curve are reported here (our choices):

- ``epochs_to_loss_threshold``: the first epoch whose mean training loss is
  below ``loss_threshold``, null if none is. Default 0.5, about a fifth of the
  chance-level loss of 10 classes (ln 10 ≈ 2.3): low enough that only a fitted
  training set gets there.
- ``mean_train_loss`` / ``mean_train_acc``: the area under the per-epoch
  training loss / accuracy curve divided by the number of epochs, with each
  epoch a unit-wide step (the plain mean of the per-epoch values, so a
  one-epoch run has one too). A poison learned faster has a smaller loss area
  and a larger accuracy area.

Peak and final accuracy are read from ``history`` (the peak is the first epoch
on ties, as ``metrics.json``'s own ``peak_epoch``). No model is loaded.
"""

from __future__ import annotations

from typing import Any

from poisonlab.checks import Positive
from poisonlab.evaluation.base import EVALUATIONS, TrainedRun
from poisonlab.registry import ConfigError


@EVALUATIONS.register("peak")
def peak(run: TrainedRun, *, loss_threshold: Positive = 0.5) -> dict[str, Any]:
    history = run.metrics["history"]
    if not history:
        raise ConfigError(f"run {run.run_dir}: metrics.json has an empty history")
    best = max(history, key=lambda row: (row["test_acc"], -row["epoch"]))
    below = [row["epoch"] for row in history if row["train_loss"] < loss_threshold]
    return {
        "epochs": len(history),
        "peak_test_acc": best["test_acc"],
        "peak_epoch": best["epoch"],
        "final_test_acc": history[-1]["test_acc"],
        "epochs_to_loss_threshold": below[0] if below else None,
        "mean_train_loss": sum(row["train_loss"] for row in history) / len(history),
        "mean_train_acc": sum(row["train_acc"] for row in history) / len(history),
    }
