"""The training loop: data resident on the device, batched augmentation, a checkpoint every epoch.

The whole training set is one tensor on the device (uint8, or float16 for
sanitized data off the uint8 grid); an epoch is a seeded ``randperm`` sliced
into batches, each augmented as a batch where it lives, after
KellerJordan/cifar10-airbench. There is no DataLoader, no worker and no
per-image Python in the hot loop. The test set is scored after every epoch so
one run gives the final and the peak accuracy (the learned-faster protocol).

Every source of randomness after model initialisation is one
``torch.Generator`` whose state is checkpointed with the model, optimizer and
schedule, so a run killed after epoch k and started again finishes with the
same weights as one never killed (bitwise on the CPU).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from poisonlab.atomic import torch_save
from poisonlab.data.container import ImageDataset
from poisonlab.gpus import claim_gpu
from poisonlab.registry import ConfigError
from poisonlab.training.augment import Augmentation
from poisonlab.training.precision import resolve_precision
from poisonlab.training.procedure import EpochContext, Objective, TrainingDefense, soft_cross_entropy
from poisonlab.training.recipe import Recipe

logger = logging.getLogger(__name__)


@dataclass
class DeviceData:
    """A dataset as NCHW tensors on one device, with the statistics to normalise it."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    mean: torch.Tensor = field(init=False)
    std: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        # Per-channel statistics of the training images as given (poisoned or not), computed
        # once: a trainer only sees its own training set.
        total = torch.zeros(2, self.x_train.shape[1], dtype=torch.float64, device=self.x_train.device)
        for chunk in self.x_train.split(1024):  # in chunks: ImageNet-sized sets do not fit as float
            pixels = chunk.transpose(0, 1).flatten(1).double()
            total += torch.stack([pixels.sum(1), pixels.square().sum(1)])
        count = self.x_train.numel() / self.x_train.shape[1]
        mean, mean_square = total / count
        self.mean = mean.float().view(1, -1, 1, 1)
        # A floor of 1/4 grey level keeps a constant channel from dividing by zero.
        self.std = (mean_square - mean.square()).clamp_min(0).sqrt().float().clamp_min(0.25).view(1, -1, 1, 1)

    @classmethod
    def from_container(cls, dataset: ImageDataset, device: torch.device) -> DeviceData:
        def images(x: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).to(device)

        return cls(images(dataset.x_train), torch.from_numpy(dataset.y_train).to(device),
                   images(dataset.x_test), torch.from_numpy(dataset.y_test).to(device), dataset.num_classes)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Raw pixel values (uint8, float16 or float32 in [0, 255]) → standardised float32, channels_last.

        Computed on the NHWC view, so the result is born channels_last instead of copied into it.
        """
        nhwc = x.permute(0, 2, 3, 1).float()
        return ((nhwc - self.mean.view(1, 1, 1, -1)) / self.std.view(1, 1, 1, -1)).permute(0, 3, 1, 2)

    def one_hot(self, labels: torch.Tensor) -> torch.Tensor:
        """Labels (N,) → targets (N, K); label maps (N, H, W) → (N, K, H, W) for segmentation.

        A map's label outside [0, K) — the ignore label, 255 in VOC and Cityscapes — gets an all-zero
        target, which adds nothing to a cross-entropy against soft targets.
        """
        if labels.dim() == 1:
            return F.one_hot(labels, self.num_classes).float()
        known = labels.where(labels < self.num_classes, self.num_classes)
        return F.one_hot(known, self.num_classes + 1)[..., :-1].movedim(-1, 1).float()

    def training_batches(self, batch_size: int, augmentations: list[Augmentation], generator: torch.Generator
                         ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """One epoch of (augmented raw images in [0, 255], soft targets, labels) in a seeded order.

        Raw, not normalised: a defense's objective (adversarial training) perturbs pixels, and
        ``normalize`` is the model's first step in every objective.
        """
        for batch in shuffled_batches(len(self.x_train), batch_size, generator, self.x_train.device):
            x, labels = self.x_train[batch], self.y_train[batch]
            targets = self.one_hot(labels)
            for augment in augmentations:
                x, targets = augment(x, targets, generator)
            if labels.dim() > 1:  # a map moved with its crop and flip: score against where it went
                labels = targets.argmax(1).where(targets.amax(1) > 0, self.num_classes)
            yield x, targets, labels


@dataclass
class TrainResult:
    history: list[dict[str, float]]
    wall_seconds: float
    device: str
    precision: str  # as resolved on the device: bf16 or fp32

    @property
    def final_test_acc(self) -> float:
        return self.history[-1]["test_acc"]

    @property
    def peak(self) -> dict[str, float]:
        """The epoch with the highest test accuracy (the first, on ties)."""
        return max(self.history, key=lambda row: (row["test_acc"], -row["epoch"]))


def pick_device(name: str = "auto") -> torch.device:
    """``auto``: CUDA where available, else the CPU. Plain ``cuda`` on a machine with several GPUs is the one
    this job claims a slot of (``poisonlab.gpus``: jobs spread over the GPUs), made the current device;
    ``cuda:N`` is taken as given."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device '{name}' asked for, but CUDA is not available here; use 'cpu' or 'auto'")
    count = torch.cuda.device_count() if name == "cuda" else 0
    if count > 1:
        index = claim_gpu([str(torch.cuda.get_device_properties(i).uuid) for i in range(count)])
        torch.cuda.set_device(index)  # so that code placing tensors on plain "cuda" uses it too
        return torch.device("cuda", index)
    return torch.device(name)


def evaluate(model: torch.nn.Module, data: DeviceData, batch_size: int, precision: str = "auto") -> float:
    """Test accuracy in percent, at the ``precision`` the model was trained with (a recipe's).

    For label maps, the pixel accuracy over every pixel whose label is a class (not the ignore label).
    """
    model.eval()
    correct = counted = 0
    with torch.no_grad(), autocast(data.x_test.device, precision):
        for start in range(0, len(data.x_test), batch_size):
            x = data.normalize(data.x_test[start:start + batch_size])
            labels = data.y_test[start:start + batch_size]
            known = labels < data.num_classes
            correct += ((model(x).argmax(1) == labels) & known).sum().item()
            counted += known.sum().item()
    return 100.0 * correct / counted


def accuracy_metric(model: torch.nn.Module, data: DeviceData, batch_size: int, precision: str) -> dict[str, float]:
    """``fit``'s default test metric: ``evaluate``'s accuracy, recorded as ``test_acc``."""
    return {"test_acc": evaluate(model, data, batch_size, precision)}


# (model, data, eval batch size, precision) → the epoch's test metrics; ``test_acc`` among them.
Metric = Callable[[torch.nn.Module, DeviceData, int, str], dict[str, float]]


def fit(
    model: torch.nn.Module,
    data: DeviceData,
    recipe: Recipe,
    *,
    seed: int,
    checkpoint_path: str | os.PathLike | None = None,
    fingerprint: dict[str, Any] | None = None,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    progress: bool = True,
    defense: TrainingDefense | None = None,
    weights_dir: str | os.PathLike | None = None,
    keep_weights_every: int = 1,
    metric: Metric = accuracy_metric,
) -> TrainResult:
    """Train ``model`` (already on ``data``'s device) by ``recipe``; resume from ``checkpoint_path`` if present.

    ``fingerprint`` names what the checkpoint belongs to (data, arch, recipe, seed); a checkpoint
    with another fingerprint (the configuration changed since a killed attempt) is deleted and
    training starts over, never mixing the two runs.
    ``defense`` is a training-time defense (transforms, objective, per-epoch hook). With
    ``weights_dir``, the model's weights after every ``keep_weights_every``-th epoch and the last
    are kept as ``epochNNN.pt`` there, for evaluations over training (DFR). ``metric`` scores the test
    set after every epoch (segmentation: pixel accuracy as ``test_acc``, and mIoU).
    """
    defense = defense or TrainingDefense()
    objective = defense.objective or plain_objective(recipe.label_smoothing)
    device = data.x_train.device
    precision = resolve_precision(recipe.precision, device)
    # channels_last: faster convolutions on CUDA and, measured here, ~1.4× on a 2-core CPU too.
    model.to(memory_format=torch.channels_last)
    generator = torch.Generator(device=device).manual_seed(seed)
    augmentations = defense.augmentations(recipe.augment)
    steps_per_epoch = -(-len(data.x_train) // recipe.batch_size)
    optimizer = recipe.make_optimizer(model.parameters())
    scheduler = recipe.make_scheduler(optimizer, steps_per_epoch)
    history: list[dict[str, float]] = []
    resumed_seconds = 0.0

    checkpoint = load_checkpoint(checkpoint_path, fingerprint)
    if checkpoint is not None:
        restore_training_state(checkpoint, model, optimizer, scheduler, generator)
        defense.state.update(checkpoint["defense_state"])
        history = checkpoint["history"]
        resumed_seconds = checkpoint["wall_seconds"]
        logger.info("resuming from %s after epoch %d", checkpoint_path, len(history))

    started = time.perf_counter()
    epochs = tqdm(range(len(history) + 1, recipe.epochs + 1), initial=len(history), total=recipe.epochs,
                  desc="epochs", unit="ep", disable=not progress)
    for epoch in epochs:
        epoch_started = time.perf_counter()
        if defense.on_epoch_start is not None:
            defense.on_epoch_start(EpochContext(model, optimizer, data, epoch, generator, defense.state))
        model.train()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device)
        counted = torch.zeros((), device=device)  # labels scored: one an image, or a map's known pixels
        for x, targets, labels in data.training_batches(recipe.batch_size, augmentations, generator):
            with autocast(device, precision):
                loss, logits = objective(model, x, targets, data.normalize, generator)
            train_step(loss, optimizer, scheduler, recipe.grad_clip)
            loss_sum += loss.detach() * len(labels)
            known = labels < data.num_classes
            correct += ((logits.argmax(1) == labels) & known).sum()
            counted += known.sum()

        row = {
            "epoch": epoch,
            "train_loss": loss_sum.item() / len(data.x_train),
            "train_acc": 100.0 * correct.item() / counted.item(),
            **metric(model, data, recipe.eval_batch_size, precision),
            "seconds": time.perf_counter() - epoch_started,
        }
        history.append(row)
        epochs.set_postfix(loss=f"{row['train_loss']:.3f}", test=f"{row['test_acc']:.1f}")
        logger.info("epoch %d/%d: train loss %.4f, train acc %.2f, test acc %.2f (%.1f s)", epoch, recipe.epochs,
                    row["train_loss"], row["train_acc"], row["test_acc"], row["seconds"])
        if checkpoint_path is not None:
            save_training_state(checkpoint_path, fingerprint, model, optimizer, scheduler, generator,
                                defense_state=defense.state, history=history,
                                wall_seconds=resumed_seconds + time.perf_counter() - started)
        if weights_dir is not None and (epoch % keep_weights_every == 0 or epoch == recipe.epochs):
            torch_save(model.state_dict(), Path(weights_dir) / f"epoch{epoch:03d}.pt")
        if on_epoch is not None:
            on_epoch(row)

    return TrainResult(history, resumed_seconds + time.perf_counter() - started, str(device), precision)


def shuffled_batches(n: int, batch_size: int, generator: torch.Generator, device: torch.device) -> list[torch.Tensor]:
    """One epoch's batches of indices into ``n`` examples, in an order drawn from ``generator``."""
    order = torch.randperm(n, generator=generator, device=generator.device)
    return list(order.to(device).split(batch_size))


def train_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer,
               scheduler: torch.optim.lr_scheduler.LRScheduler, grad_clip: float | None = None) -> None:
    """One step down ``loss``: backward, clip the global gradient norm, optimizer step, schedule step.

    The step of ``fit`` and of every model trained inside a method (poison surrogates, the orthogonal
    projection's linear model), whose optimizer and schedule come from a ``Recipe`` too.
    """
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip is not None:  # over what the optimizer steps: the recipe hands it all of the model
        torch.nn.utils.clip_grad_norm_([p for group in optimizer.param_groups for p in group["params"]], grad_clip)
    optimizer.step()
    scheduler.step()


def plain_objective(label_smoothing: float) -> Objective:
    """The undefended objective: normalise, forward, cross-entropy against the (soft) targets."""

    def objective(model, x, targets, normalize, generator):
        logits = model(normalize(x))
        return soft_cross_entropy(logits, targets, label_smoothing), logits

    return objective


def autocast(device: torch.device, precision: str):
    """A recipe's ``precision`` on ``device``: bf16 autocast (no loss scaling needed, unlike fp16) or fp32.

    "auto" is resolved from the hardware (``training.precision``): bf16 on CUDA and on CPUs with
    native bf16, fp32 elsewhere.
    """
    if resolve_precision(precision, device) == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


def save_training_state(path: str | os.PathLike, fingerprint: dict[str, Any] | None, model: torch.nn.Module,
                        optimizer: torch.optim.Optimizer, scheduler: Any, generator: torch.Generator,
                        **extra: Any) -> None:
    """A resumable checkpoint: what every training loop restores (``restore_training_state``), plus its ``extra``."""
    torch_save({"fingerprint": fingerprint or {}, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "generator": generator.get_state(), **extra}, path)


def restore_training_state(checkpoint: dict[str, Any], model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                           scheduler: Any, generator: torch.Generator) -> None:
    """Model, optimizer, schedule and RNG back to where ``save_training_state`` left them."""
    model.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    scheduler.load_state_dict(checkpoint["scheduler"])
    generator.set_state(checkpoint["generator"])


def load_checkpoint(path: str | os.PathLike | None, fingerprint: dict[str, Any] | None) -> dict | None:
    """The checkpoint at ``path`` if it belongs to the run ``fingerprint`` names, else None.

    A killed attempt's checkpoint whose configuration (data, recipe, precision, options…) differs
    from this run's cannot be resumed: it is deleted, with one line saying what changed, and the
    run starts over. It is not kept aside: the rerun remakes everything it held.
    """
    if path is None or not Path(path).exists():
        return None
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    stored, wanted = checkpoint["fingerprint"], fingerprint or {}
    if stored == wanted:
        return checkpoint
    changed = sorted(key for key in {*stored, *wanted} if stored.get(key) != wanted.get(key))
    logger.warning("checkpoint %s is of an earlier configuration (changed: %s); starting over", path,
                   ", ".join(changed))
    Path(path).unlink()
    return None
