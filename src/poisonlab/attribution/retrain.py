"""Models trained inside the attribution stage: reference models, TRAK checkpoints, subset models, probes.

Every retrain goes through the project's trainer (``training.loop.fit`` with a ``Recipe``), so a probe
of the counterfactual search trains exactly as a run of the ``train`` rule would on the same data:
tensors on the device, batched augmentation, the recipe's precision. Only the data differ — a view
with some training images removed or relabelled, or a random subset — and the evaluation set is the
handful of images whose predictions are asked for (the targets), not the whole test set, so a
probe spends its time training.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from poisonlab.models import build_model
from poisonlab.training.loop import DeviceData, autocast, fit, pick_device
from poisonlab.training.precision import resolve_precision
from poisonlab.training.recipe import Recipe


@dataclass(frozen=True)
class Retrainer:
    """How to retrain the attributed model: its arch, recipe and device; the data come per call."""

    arch: str
    recipe: Recipe
    num_classes: int
    device: str = "cpu"

    def train(self, x_train: np.ndarray, y_train: np.ndarray, x_eval: np.ndarray, *, seed: int
              ) -> tuple[torch.nn.Module, np.ndarray]:
        """Train from scratch on (``x_train``, ``y_train``) (uint8 NHWC); return the model and its logits on ``x_eval``."""
        device = pick_device(self.device)
        torch.manual_seed(seed)  # initialisation; fit draws everything after from its own generator
        model = build_model(self.arch, num_classes=self.num_classes, in_channels=x_train.shape[-1],
                            image_size=x_train.shape[1]).to(device)
        # The eval images stand in as the "test set": fit scores them after every epoch, which costs
        # nothing for a few targets and keeps the trainer unchanged.
        data = _device_data(x_train, y_train, x_eval, self.num_classes, device)
        fit(model, data, self.recipe, seed=seed, progress=False)
        return model, logits_of(model, data, x_eval, self.recipe.precision)

    def correct(self, x_train: np.ndarray, y_train: np.ndarray, x_target: np.ndarray, y_target: int, *,
                seed: int) -> bool:
        """Whether a model retrained on the given data classifies the target correctly (one probe retrain)."""
        _, logits = self.train(x_train, y_train, x_target[None], seed=seed)
        return bool(logits[0].argmax() == y_target)


def load_classifier(path: str | os.PathLike, arch: str, *, num_classes: int, in_channels: int, image_size: int
                    ) -> torch.nn.Module:
    """A trained run's ``model.pt`` (weights only), rebuilt as ``arch``: reference models, TRAK's checkpoints."""
    model = build_model(arch, num_classes=num_classes, in_channels=in_channels, image_size=image_size)
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval()


def predict_probs(models: list[torch.nn.Module], x_train: np.ndarray, y_train: np.ndarray, x: np.ndarray, *,
                  num_classes: int, precision: str = "fp32", device: str = "cpu") -> np.ndarray:
    """(models, images, classes) softmax of each model on ``x``, normalised by the training set's statistics
    (as the trainer normalised them): the reference predictions targets and flip classes come from."""
    data = _device_data(x_train, y_train, x[:1], num_classes, pick_device(device))
    return np.stack([softmax(logits_of(m.to(data.x_train.device), data, x, precision)) for m in models])


def _device_data(x_train: np.ndarray, y_train: np.ndarray, x_eval: np.ndarray, num_classes: int,
                 device: torch.device) -> DeviceData:
    def images(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).to(device)

    return DeviceData(images(x_train), torch.from_numpy(np.asarray(y_train, np.int64)).to(device),
                      images(x_eval), torch.zeros(len(x_eval), dtype=torch.int64, device=device), num_classes)


def logits_of(model: torch.nn.Module, data: DeviceData, x: np.ndarray, precision: str,
              batch_size: int = 512) -> np.ndarray:
    """float32 logits of ``model`` on raw images ``x`` (uint8 NHWC), normalised with ``data``'s statistics."""
    device = data.x_train.device
    model.eval()
    out = []
    with torch.no_grad(), autocast(device, resolve_precision(precision, device)):
        for start in range(0, len(x), batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(x[start:start + batch_size].transpose(0, 3, 1, 2)))
            out.append(model(data.normalize(batch.to(device))).float().cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, data.num_classes), np.float32)


def margins(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Correct-class logit minus the largest other logit, per row: the datamodels' model output."""
    logits = np.asarray(logits, np.float64)
    rows = np.arange(len(logits))
    correct = logits[rows, labels]
    others = logits.copy()
    others[rows, labels] = -np.inf
    return correct - others.max(1)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.asarray(logits, np.float64) - np.max(logits, axis=-1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(-1, keepdims=True)
