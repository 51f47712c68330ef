"""Episodic training: a recipe of episode shapes and counts, and the loop that draws, augments and steps.

The repository's recipe (``train_autoprotonet.py``, ``scripts/workshop_paper_scripts/``; design note §1.3):
20-way 5-shot 15-query training episodes, 8 a step, 1,000 steps an epoch, 30 epochs; SGD lr 0.1, momentum 0.9,
Nesterov, weight decay 5e-4 (the head's scale included); the rate ×0.06 from epoch 20 on (its ``LambdaLR`` is
stepped before each epoch, so epochs 1–19 run at 0.1); validation on 2,000 5-way 5-shot 15-query episodes
of the meta-val classes after every epoch, keeping the best (here the same seeded episodes every epoch). The optimizer and schedule are the project's
(``training.recipe``'s registries): ``schedule: step``, ``milestones: [19]`` (0-based epochs), ``gamma: 0.06``.

The loop follows ``training.loop.fit``: one ``torch.Generator`` drives every episode and augmentation, and
its state is checkpointed with the model, optimizer and schedule after every epoch, so a run killed after
epoch k and restarted finishes with the same weights as one never killed. Without meta-val classes (the
embedded and natural-image splits) the last epoch is kept.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from poisonlab.fewshot.episodes import (augment_episodes, build_episode_augmentations, check_episode_shape,
                                        sample_episodes)
from poisonlab.fewshot.evaluate import evaluate_fewshot
from poisonlab.fewshot.methods import FewShotMethod
from poisonlab.fewshot.models import ProtoNet
from poisonlab.fewshot.splits import ClassPool
from poisonlab.registry import ConfigError
from poisonlab.training.loop import (autocast, load_checkpoint, restore_training_state, save_training_state,
                                     train_step)
from poisonlab.training.precision import resolve_precision
from poisonlab.training.recipe import Recipe, recipe_from_dict

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FewShotRecipe:
    """How a few-shot model is trained; defaults are the repository's paper recipe."""

    way: int = 20
    shot: int = 5
    query: int = 15
    episodes_per_step: int = 8
    steps_per_epoch: int = 1000
    epochs: int = 30
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    schedule: str = "step"
    milestones: tuple[int, ...] = (19,)  # 0-based epochs from which the rate is multiplied by gamma
    gamma: float = 0.06
    augment: dict[str, dict] = field(default_factory=dict)  # episode augmentations, name → options, in order
    precision: str = "auto"
    val_way: int = 5
    val_shot: int = 5
    val_query: int = 15
    val_episodes: int = 2000  # 0: no validation even where the split has meta-val classes

    @classmethod
    def from_dict(cls, values: dict[str, Any], *, name: str = "fewshot recipe") -> FewShotRecipe:
        return recipe_from_dict(cls, values, name)

    def validate(self, name: str = "fewshot recipe") -> None:
        for key in ("way", "shot", "query", "episodes_per_step", "steps_per_epoch", "val_way", "val_shot",
                    "val_query"):
            if not getattr(self, key) >= 1:
                raise ConfigError(f"{name}.{key} must be >= 1; got {getattr(self, key)}")
        if self.val_episodes < 0:
            raise ConfigError(f"{name}.val_episodes must be >= 0; got {self.val_episodes}")
        self.optimization().validate(name)  # epochs, rates, optimizer, schedule, precision
        build_episode_augmentations(self.augment)  # unknown names and bad options fail now, not mid-run

    def optimization(self) -> Recipe:
        """The project's ``Recipe`` holding this recipe's optimizer and schedule (its batch is a step's images)."""
        return Recipe(epochs=self.epochs, batch_size=self.episodes_per_step * self.way * (self.shot + self.query),
                      optimizer=self.optimizer, lr=self.lr, momentum=self.momentum, nesterov=self.nesterov,
                      weight_decay=self.weight_decay, schedule=self.schedule, milestones=self.milestones,
                      gamma=self.gamma, precision=self.precision)

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "milestones": list(self.milestones)}


@dataclass
class FewShotResult:
    history: list[dict[str, float]]
    wall_seconds: float
    device: str
    precision: str
    selected_epoch: int  # the epoch whose weights the model holds: best on meta-val, else the last


def fit_episodes(model: ProtoNet, method: FewShotMethod, pools: dict[str, ClassPool], recipe: FewShotRecipe, *,
                 seed: int, checkpoint_path: str | os.PathLike | None = None, fingerprint: dict | None = None,
                 on_epoch: Callable[[dict[str, float]], None] | None = None, progress: bool = True) -> FewShotResult:
    """Train ``model`` (on the pools' device) by ``method`` and ``recipe``; resume from ``checkpoint_path``."""
    train_pool = pools["train"]
    check_episode_shape(train_pool, way=recipe.way, shot=recipe.shot, query=recipe.query)
    val_pool = pools.get("val") if recipe.val_episodes else None
    if val_pool is not None:
        check_episode_shape(val_pool, way=recipe.val_way, shot=recipe.val_shot, query=recipe.val_query)
    device = train_pool.images.device
    precision = resolve_precision(recipe.precision, device)
    generator = torch.Generator(device=device).manual_seed(seed)
    augmentations = build_episode_augmentations(recipe.augment)
    optimization = recipe.optimization()
    optimizer = optimization.make_optimizer(model.parameters())
    scheduler = optimization.make_scheduler(optimizer, recipe.steps_per_epoch)
    history: list[dict[str, float]] = []
    best: dict[str, Any] = {"epoch": 0, "val_acc": -1.0, "model": None}
    resumed_seconds = 0.0

    checkpoint = load_checkpoint(checkpoint_path, fingerprint)
    if checkpoint is not None:
        restore_training_state(checkpoint, model, optimizer, scheduler, generator)
        history, best, resumed_seconds = checkpoint["history"], checkpoint["best"], checkpoint["wall_seconds"]
        logger.info("resuming from %s after epoch %d", checkpoint_path, len(history))

    started = time.perf_counter()
    bar = tqdm(total=recipe.epochs * recipe.steps_per_epoch, initial=len(history) * recipe.steps_per_epoch,
               desc=f"{method.name} steps", unit="step", disable=not progress)
    for epoch in range(len(history) + 1, recipe.epochs + 1):
        epoch_started = time.perf_counter()
        model.train()
        sums: dict[str, torch.Tensor] = {}
        correct = torch.zeros((), device=device)
        classifies = False  # ae-pretrain has no logits, so no training accuracy
        for _ in range(recipe.steps_per_epoch):
            episodes = sample_episodes(train_pool, way=recipe.way, shot=recipe.shot, query=recipe.query,
                                       episodes=recipe.episodes_per_step, generator=generator)
            episodes = augment_episodes(episodes, augmentations, generator)
            with autocast(device, precision):
                out = method.loss(model, episodes)
            train_step(out.loss, optimizer, scheduler)
            for key, value in {"loss": out.loss.detach(), **out.parts}.items():
                sums[key] = sums.get(key, 0) + value.float()
            if out.logits is not None:
                classifies = True
                correct += (out.logits.argmax(2) == episodes.query_labels).float().mean()
            bar.update()

        row = {"epoch": epoch, **{f"train_{k}": v.item() / recipe.steps_per_epoch for k, v in sums.items()}}
        if classifies:
            row["train_acc"] = 100.0 * correct.item() / recipe.steps_per_epoch
        if val_pool is not None:
            score = evaluate_fewshot(model, val_pool, way=recipe.val_way, shot=recipe.val_shot,
                                     query=recipe.val_query, episodes=recipe.val_episodes, seed=seed,
                                     precision=precision)
            row["val_acc"], row["val_ci95"] = score["acc"], score["ci95"]
            if score["acc"] > best["val_acc"]:
                best = {"epoch": epoch, "val_acc": score["acc"],
                        "model": {k: v.detach().clone() for k, v in model.state_dict().items()}}
        row["seconds"] = time.perf_counter() - epoch_started
        history.append(row)
        shown = {"loss": f"{row['train_loss']:.3f}", **({"val": f"{row['val_acc']:.1f}"} if "val_acc" in row else {})}
        bar.set_postfix(shown)
        logger.info("epoch %d/%d: %s", epoch, recipe.epochs,
                    ", ".join(f"{k} {v:.4f}" for k, v in row.items() if k != "epoch"))
        if checkpoint_path is not None:
            save_training_state(checkpoint_path, fingerprint, model, optimizer, scheduler, generator,
                                history=history, best=best,
                                wall_seconds=resumed_seconds + time.perf_counter() - started)
        if on_epoch is not None:
            on_epoch(row)
    bar.close()

    selected = len(history)
    if best["model"] is not None:  # the repository keeps best_model.pth, the best epoch on meta-val
        model.load_state_dict(best["model"])
        selected = best["epoch"]
    return FewShotResult(history, resumed_seconds + time.perf_counter() - started, str(device), precision, selected)
