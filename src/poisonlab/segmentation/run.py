"""robust-seg's jobs, one function a DAG rule: train a net, measure its robustness, synthesise with it.

A trained net lives in ``results/seg/{dataset}/{procedure}/{arch}/{recipe}/seed{seed}/``
as ``model.pt`` (inference weights: AdvProp's auxiliary batch norms dropped)
and ``metrics.json``; training goes through the project's ``fit`` with the
procedure's objective, resumes from ``checkpoint.pt`` into the same MLflow run
after a kill, as ``poisonlab.training.run`` does for classifiers. A user's
checkpoint (paper scale: DDC-AT's PSPNet) is evaluated through
``load_user_model`` instead, with ImageNet normalisation as hszhao/semseg.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from poisonlab import tracking
from poisonlab.atomic import save_npz, torch_save, write_json
from poisonlab.data.base import sha256_of
from poisonlab.segmentation.data import SegmentationDataset
from poisonlab.segmentation.metrics import segmentation_metric
from poisonlab.segmentation.models import build_seg_model, load_weights
from poisonlab.segmentation.procedures import SEG_PROCEDURES
from poisonlab.training.loop import DeviceData, fit, load_checkpoint, pick_device
from poisonlab.training.precision import resolve_precision
from poisonlab.training.recipe import Recipe

IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)  # hszhao/semseg's value_scale 255 normalisation
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)


class Normalizer:
    """Raw pixels in [0, 255] (N, C, H, W) → the net's input; the same arithmetic as ``DeviceData.normalize``."""

    def __init__(self, mean, std, device: torch.device | str = "cpu") -> None:
        self.mean = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() - self.mean) / self.std


def device_data(dataset: SegmentationDataset, device: torch.device) -> DeviceData:
    """Images NCHW and label maps (N, H, W) int64 on ``device``: the trainer's data for segmentation."""
    def images(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).to(device)

    return DeviceData(images(dataset.x_train), torch.from_numpy(dataset.m_train.astype(np.int64)).to(device),
                      images(dataset.x_test), torch.from_numpy(dataset.m_test.astype(np.int64)).to(device),
                      dataset.num_classes)


@dataclass(frozen=True)
class SegRunSpec:
    dataset: str
    procedure: str
    arch: str
    recipe: str
    seed: int = 0

    @property
    def name(self) -> str:
        return f"{self.dataset}/{self.procedure}/{self.arch}/{self.recipe}/seed{self.seed}"


def train_segmentation(spec: SegRunSpec, recipe: Recipe, data_path: str | os.PathLike, run_dir: str | os.PathLike, *,
                       procedure_options: dict[str, Any] | None = None, model_options: dict[str, Any] | None = None,
                       device: str = "auto", progress: bool = True) -> dict[str, Any]:
    """Train ``spec.arch`` by ``spec.procedure`` on a segmentation container; ``metrics.json`` is written last."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    checkpoint_path = run_dir / "checkpoint.pt"
    procedure_options, model_options = dict(procedure_options or {}), dict(model_options or {})
    procedure = SEG_PROCEDURES.build(spec.procedure, **procedure_options)  # bad options fail before loading data
    dataset = SegmentationDataset.load(data_path)
    data_sha256 = sha256_of(data_path)
    torch_device = pick_device(device)
    precision = resolve_precision(recipe.precision, torch_device)
    torch.manual_seed(spec.seed)  # model initialisation; everything after draws from fit's generator
    in_channels = dataset.image_shape[2]
    model = procedure.prepare(build_seg_model(spec.arch, num_classes=dataset.num_classes, in_channels=in_channels,
                                              **model_options)).to(torch_device)
    data = device_data(dataset, torch_device)
    fingerprint = {**dataclasses.asdict(spec), "recipe_config": recipe.to_dict(), "data_sha256": data_sha256,
                   "procedure_options": procedure_options, "model_options": model_options, "precision": precision}
    # A stale attempt's checkpoint is deleted here: a fresh start reuses no MLflow run of it.
    resume = load_checkpoint(checkpoint_path, fingerprint) is not None

    tags = {**tracking.environment_tags(), "dataset_sha256": data_sha256, "precision_resolved": precision,
            **{k: str(v) for k, v in dataclasses.asdict(spec).items()}}
    params = {**dataclasses.asdict(spec), **recipe.to_dict(), "procedure_options": procedure_options,
              "model_options": model_options}
    with tracking.tracked_run(run_dir, resume=resume, experiment=tracking.experiment_name(spec.dataset),
                              run_name=spec.name, params=params, tags=tags) as tracked:
        result = fit(model, data, recipe, seed=spec.seed, checkpoint_path=checkpoint_path, fingerprint=fingerprint,
                     on_epoch=tracked.log_epoch, progress=progress, defense=procedure.defense,
                     metric=segmentation_metric)
        peak = result.peak
        record = {
            **dataclasses.asdict(spec), "epochs": recipe.epochs,
            "final_test_acc": result.final_test_acc, "final_test_miou": result.history[-1]["test_miou"],
            "peak_test_acc": peak["test_acc"], "peak_epoch": int(peak["epoch"]), "history": result.history,
            "wall_seconds": result.wall_seconds, "device": result.device, "precision": result.precision,
            "run_key": tracked.key, "git_commit": tags["git_commit"], "recipe_config": recipe.to_dict(),
            "procedure_options": procedure_options, "model_options": model_options, "dataset_sha256": data_sha256,
            "num_classes": dataset.num_classes, "in_channels": in_channels,
            "normalization": {"mean": data.mean.flatten().tolist(), "std": data.std.flatten().tolist()},
            "data_meta": dataset.meta,
            "versions": {k.removeprefix("version."): v for k, v in tags.items() if k.startswith("version.")},
        }
        tracked.log_summary({k: record[k] for k in ("final_test_acc", "final_test_miou", "wall_seconds")})
        torch_save(procedure.deploy(model), run_dir / "model.pt")
        write_json(run_dir / "metrics.json", record)
    checkpoint_path.unlink()
    return record


def load_trained(run_dir: str | os.PathLike, device: str = "cpu") -> tuple[torch.nn.Module, Normalizer, dict]:
    """A finished run's net (eval mode, inference weights), its input normalisation and its metrics.json."""
    run_dir = Path(run_dir)
    record = json.loads((run_dir / "metrics.json").read_text())
    model = build_seg_model(record["arch"], num_classes=record["num_classes"], in_channels=record["in_channels"],
                            **record["model_options"])
    model.load_state_dict(torch.load(run_dir / "model.pt", map_location=device, weights_only=True))
    norm = record["normalization"]
    return model.to(device).eval(), Normalizer(norm["mean"], norm["std"], device), record


def load_user_model(arch: str, checkpoint: str | os.PathLike, *, num_classes: int, device: str = "cpu"
                    ) -> tuple[torch.nn.Module, Normalizer]:
    """A user's checkpoint (DDC-AT's, torchvision's) in ``arch``, normalised as hszhao/semseg (ImageNet)."""
    model = load_weights(build_seg_model(arch, num_classes=num_classes, in_channels=3), checkpoint, arch)
    return model.to(device).eval(), Normalizer(IMAGENET_MEAN, IMAGENET_STD, device)


def load_classifier(model_path: str | os.PathLike, data_path: str | os.PathLike, *,
                    device: str = "cpu") -> tuple[torch.nn.Module, Normalizer]:
    """The independent judge: a classifier run's ``model.pt`` (its arch read from the run's ``metrics.json``
    beside it) and the normalisation its training set gave it."""
    from poisonlab.data.container import ImageDataset
    from poisonlab.models import build_model

    arch = json.loads((Path(model_path).parent / "metrics.json").read_text())["arch"]
    dataset = ImageDataset.load(data_path)
    height, _, channels = dataset.image_shape
    model = build_model(arch, num_classes=dataset.num_classes, in_channels=channels, image_size=height)
    model.load_state_dict(torch.load(model_path, map_location=device, weights_only=True))
    stats = DeviceData.from_container(dataset, torch.device(device))
    return model.to(device).eval(), Normalizer(stats.mean.flatten().tolist(), stats.std.flatten().tolist(), device)


def save_arrays(path: str | os.PathLike, arrays: dict[str, torch.Tensor | np.ndarray]) -> None:
    """Tensors as numpy arrays in one npz (images as uint8 in [0, 255] when float in [0, 1])."""
    def as_array(value):
        value = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
        return (value * 255).round().astype(np.uint8) if value.dtype.kind == "f" else value

    save_npz(path, **{k: as_array(v) for k, v in arrays.items()})



# ---------------------------------------------------------------- evaluations of a trained net


def robustness_run(run_dir: str | os.PathLike, data_path: str | os.PathLike, json_path: str | os.PathLike,
                   examples_path: str | os.PathLike, *, attacks: dict[str, dict] | None = None,
                   epsilon: float = 0.03, step_size: float = 0.01, count: int | None = None, batch_size: int = 64,
                   keep: int = 4, seed: int = 0, device: str = "cpu") -> dict[str, Any]:
    """Clean and attacked mIoU / pixel accuracy of a run's net on the first ``count`` test images.

    ``attacks``: column → attack and options (default ``PAPER_ATTACKS``: clean, BIM-2/4/6, PGD-20 × 3
    restarts); ``epsilon``/``step_size`` shared by them. Writes ``json_path`` and, for the figures, the
    first ``keep`` images, their maps and each column's attacked images and predictions (``examples_path``).
    """
    from poisonlab.segmentation.robustness import PAPER_ATTACKS, build_attacks, evaluate_robustness

    spec = attacks or PAPER_ATTACKS
    built = build_attacks(spec, epsilon=epsilon, step_size=step_size)
    model, normalize, record = load_trained(run_dir, device)
    dataset = SegmentationDataset.load(data_path)
    data = device_data(dataset, torch.device(device))
    x, maps = data.x_test[:count], data.y_test[:count]
    results, examples = evaluate_robustness(model, x, maps, normalize, num_classes=data.num_classes, attacks=built,
                                            batch_size=batch_size, seed=seed, keep=keep)
    out = {"run": record["dataset"] + "/" + record["procedure"], "procedure": record["procedure"],
           "arch": record["arch"], "seed": record["seed"], "count": len(x), "epsilon": epsilon,
           "step_size": step_size, "attacks": spec, "results": results}
    save_arrays(examples_path, {"images": x[:keep].float() / 255, "maps": maps[:keep],
                                **{f"{c}_images": e["images"] for c, e in examples.items()},
                                **{f"{c}_predictions": e["predictions"] for c, e in examples.items()}})
    write_json(json_path, out)
    return out


def synthesis_run(run_dir: str | os.PathLike, data_path: str | os.PathLike, json_path: str | os.PathLike,
                  arrays_path: str | os.PathLike, *, task: str, classifier_path: str | os.PathLike,
                  classifier_data_path: str | os.PathLike, transfer_run_dir: str | os.PathLike,
                  optimizer: str = "adam", steps: int = 200, lr: float = 0.05, count: int = 32, hole: int = 16,
                  target: str = "box", seed: int = 0, device: str = "cpu") -> dict[str, Any]:
    """Inpaint (``task`` "inpaint") or generate ("generate") ``count`` test canvases with a run's net, and score them.

    The judges are independent of the optimising net: the classifier run at ``classifier_path`` (trained on
    ``classifier_data_path``, the main job's clean run on mnist5k) and the standard net of
    ``transfer_run_dir`` (another seed). ``target``: ``box`` (each digit's box filled with its class: the
    shape left to the net) or ``map`` (the ground truth, which draws the stroke; see ``synthesis.shapeless``).
    Writes the metrics (``json_path``) and the images (``arrays_path``).
    """
    from poisonlab.registry import ConfigError
    from poisonlab.segmentation import synthesis as syn

    if task not in ("inpaint", "generate") or target not in syn.TARGETS:
        raise ConfigError(f"synthesis task must be inpaint or generate and target one of {', '.join(syn.TARGETS)}; "
                          f"got {task!r}, {target!r}")
    model, normalize, record = load_trained(run_dir, device)
    classifier, classifier_normalize = load_classifier(classifier_path, classifier_data_path, device=device)
    judge, judge_normalize, _ = load_trained(transfer_run_dir, device)
    data = device_data(SegmentationDataset.load(data_path), torch.device(device))
    k = data.num_classes
    if task == "inpaint":
        index, masks, cells = syn.inpainting_tasks(data.y_test, count, hole=hole, seed=seed)
        original, wanted = data.x_test[index].float() / 255, syn.TARGETS[target](data.y_test[index])
        start = syn.hole_start(original, masks)
        result = syn.inpaint(model, original, wanted, masks, normalize, optimizer=optimizer, steps=steps, lr=lr)
        metrics = {
            "recognisability": syn.recognisability(classifier, classifier_normalize, result, cells),
            "recognisability_masked": syn.recognisability(classifier, classifier_normalize, start, cells),
            "recognisability_original": syn.recognisability(classifier, classifier_normalize, original, cells),
            **syn.region_quality(result, original, masks),
            "own_miou": syn.map_agreement(model, normalize, result, wanted, k, masks),
            "transfer_miou": syn.map_agreement(judge, judge_normalize, result, wanted, k, masks),
        }
        arrays = {"original": original, "masked": start, "result": result, "masks": masks, "maps": wanted}
    else:
        index = torch.unique(syn.digit_cells(data.y_test)[:, 0])[:count]  # canvases with a digit to draw
        wanted = syn.TARGETS[target](data.y_test[index])
        generator = torch.Generator(device=device).manual_seed(seed)
        result = syn.generate(model, wanted, normalize, channels=data.x_test.shape[1], generator=generator,
                              optimizer=optimizer, steps=steps, lr=lr)
        cells = syn.digit_cells(wanted)
        metrics = {
            "recognisability": syn.recognisability(classifier, classifier_normalize, result, cells),
            "own_miou": syn.map_agreement(model, normalize, result, wanted, k),
            "transfer_miou": syn.map_agreement(judge, judge_normalize, result, wanted, k),
        }
        arrays = {"result": result, "maps": wanted}
    out = {"task": task, "target": target, "procedure": record["procedure"], "arch": record["arch"],
           "seed": record["seed"],
           "optimizer": optimizer, "steps": steps, "lr": lr, "count": len(index), "metrics": metrics}
    save_arrays(arrays_path, arrays)
    write_json(json_path, out)
    return out
