"""The attribution stage's DAG jobs, one function each: files in, the job's output files written.

Each ``workflow/scripts/attribution_*.py`` reads its ``snakemake`` object and calls one of these. The
computing is in the modules they call (``support``, ``subsets``, ``attributors``, ...); here the
files are read, the pieces joined, and the results written atomically.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from poisonlab.atomic import save_npz, write_json
from poisonlab.attribution import AttributionInputs, attribute, extract_features
from poisonlab.attribution.dag import PARTS, SubsetPool
from poisonlab.attribution.retrain import Retrainer, load_classifier, predict_probs
from poisonlab.attribution.subsets import dense_scores, lds, subset_margins, subset_masks
from poisonlab.attribution.support import choose_targets, summarize_supports, support_unit
from poisonlab.data.container import ImageDataset
from poisonlab.models import build_model
from poisonlab.training.loop import DeviceData, pick_device
from poisonlab.training.recipe import Recipe

NEIGHBOURS_SHOWN = 8  # training images per method in the neighbours figure


def _json(path: str | os.PathLike) -> dict:
    return json.loads(Path(path).read_text())


def _classifiers(paths: list[str], arch: str, dataset: ImageDataset) -> list[torch.nn.Module]:
    height, _, channels = dataset.image_shape
    return [load_classifier(path, arch, num_classes=dataset.num_classes, in_channels=channels, image_size=height)
            for path in paths]


# ---------------------------------------------------------------- targets, features, subset models


def write_targets(clean: str, references: list[str], out: str, *, arch: str, support: int, total: int, seed: int,
                  precision: str, device: str) -> None:
    """``total`` targets every reference model gets right, in a seeded order; the first ``support`` are searched."""
    dataset = ImageDataset.load(clean)
    probs = predict_probs(_classifiers(references, arch, dataset), dataset.x_train, dataset.y_train, dataset.x_test,
                          num_classes=dataset.num_classes, precision=precision, device=str(pick_device(device)))
    chosen = choose_targets(probs, dataset.y_test, total, seed=seed)
    # choose_targets returns them sorted by index: shuffle so the support targets are a random few of them.
    order = np.random.default_rng(seed).permutation(total)
    write_json(out, {**{key: [values[i] for i in order] for key, values in chosen.items()}, "support": support,
                     "reference_models": len(references)})


def write_features(clean: str, backbone: str, out: str, *, arch: str | None, device: str) -> None:
    features = extract_features("ssl", ImageDataset.load(clean), checkpoint=backbone, arch=arch, device=device)
    save_npz(out, train=features["train"], test=features["test"])


def retrainer_for(dataset: ImageDataset, *, arch: str, recipe: dict[str, Any], device: str) -> Retrainer:
    """The attributed model's retrainer from config values: its arch, its recipe's mapping, the device."""
    return Retrainer(arch, Recipe.from_dict(recipe, name="attribution recipe"), dataset.num_classes, device)


def write_subset_shard(clean: str, targets: str, out: str, *, retrain: dict[str, Any], pool: SubsetPool, part: str,
                       shard: int, seed: int) -> None:
    """Shard ``shard`` of part ``part`` of the subset pool: its masks and the margins of every target under them."""
    dataset, chosen = ImageDataset.load(clean), _json(targets)
    retrainer = retrainer_for(dataset, **retrain)
    start, stop = pool.shard_range(part, shard)
    stream = PARTS[part]
    masks = subset_masks(len(dataset.y_train), getattr(pool, part), alpha=pool.alpha, seed=100 * seed + stream)
    started = time.perf_counter()
    margins = subset_margins(retrainer, dataset.x_train, dataset.y_train, masks[start:stop],
                             dataset.x_test[chosen["indices"]], np.asarray(chosen["labels"]),
                             seed=100_000 * stream + 1_000 * seed + start)
    save_npz(out, masks=masks[start:stop], margins=margins, seconds=np.float64(time.perf_counter() - started))


def _pool(shards: list[str]) -> tuple[np.ndarray, np.ndarray, float]:
    loaded = [np.load(path) for path in shards]
    return (np.concatenate([s["masks"] for s in loaded]), np.concatenate([s["margins"] for s in loaded]),
            float(sum(s["seconds"] for s in loaded)))


# ---------------------------------------------------------------- one attributor


def write_attribution(method: str, options: dict[str, Any], *, clean: str, targets: str, arch: str,
                      topk_out: str, cost_out: str, neighbours_out: str, features: str | None = None,
                      ssl_metrics: str | None = None, references: list[str] = (), subsets: list[str] = (),
                      device: str = "cpu") -> None:
    """Rank the training images for every target with ``method``: top-k, its cost, and the first target's top images."""
    dataset, chosen = ImageDataset.load(clean), _json(targets)
    indices, labels = np.asarray(chosen["indices"]), np.asarray(chosen["labels"])
    inputs = AttributionInputs(y_train=dataset.y_train, target_indices=indices, target_labels=labels,
                               x_train=dataset.x_train, x_targets=dataset.x_test[indices])
    if features:
        stored = np.load(features)
        inputs.train_features, inputs.target_features = stored["train"], stored["test"][indices]
        if ssl_metrics:  # the backbone is this method's one trained model
            inputs.upstream = {"models_trained": 1, "seconds": _json(ssl_metrics)["wall_seconds"]}
    if references:
        torch_device = pick_device(device)
        inputs.checkpoints = [model.state_dict() for model in _classifiers(list(references), arch, dataset)]
        height, _, channels = dataset.image_shape
        inputs.build_model = lambda: build_model(arch, num_classes=dataset.num_classes, in_channels=channels,
                                                 image_size=height)
        inputs.normalize = DeviceData.from_container(dataset, torch_device).normalize
        inputs.upstream = {"seconds": sum(_json(Path(p).with_name("metrics.json"))["wall_seconds"]
                                          for p in references)}
        options = {**options, "device": str(torch_device)}
    if subsets:
        inputs.subset_masks, inputs.subset_margins, seconds = _pool(list(subsets))
        inputs.upstream = {"seconds": seconds}
    result = attribute(method, inputs, **options)
    save_npz(topk_out, topk=result.topk, scores=result.scores, signed=np.bool_(result.signed))
    write_json(cost_out, {"attributor": method, "targets": len(indices), "k": int(result.topk.shape[1]),
                          **result.cost, "megabytes": result.cost["bytes"] / 1e6})
    top = result.topk[0, :NEIGHBOURS_SHOWN]
    write_json(neighbours_out, {"attributor": method, "target": int(indices[0]),
                                "target_label": str(dataset.classes[labels[0]]),
                                "target_image": dataset.x_test[indices[0]].tolist(),
                                "images": dataset.x_train[top].tolist(),
                                "labels": [str(dataset.classes[y]) for y in dataset.y_train[top]]})


# ---------------------------------------------------------------- support and LDS


def write_support_unit(*, clean: str, targets: str, topk: str, out: str, kind: str, target: int,
                       retrain: dict[str, Any], grid: list[int], retrains: int, budget: int | None, seed: int) -> None:
    """The support of the ``target``-th support target under the attribution in ``topk``; resumes from a state file."""
    dataset, chosen = ImageDataset.load(clean), _json(targets)
    retrainer = retrainer_for(dataset, **retrain)
    if target >= chosen["support"]:
        raise ValueError(f"support target {target}: {targets} holds {chosen['support']} support targets")
    record = support_unit(kind=kind, ranking=np.load(topk)["topk"][target], target=chosen["indices"][target],
                          flip_to=chosen["flip_classes"][target], x_train=dataset.x_train, y_train=dataset.y_train,
                          x_test=dataset.x_test, y_test=dataset.y_test, retrainer=retrainer, grid=grid,
                          retrains=retrains, seed=seed, budget=budget,
                          state_path=Path(out).with_suffix(".state.json"))
    write_json(out, record)
    Path(out).with_suffix(".state.json").unlink(missing_ok=True)  # the record now holds every vote


def write_support_summary(units: list[str], out: str, *, attributor: str, kind: str) -> None:
    """The ``support`` record: the paper's statistics over targets, intervals flattened for the tables."""
    records = [_json(path) for path in units]
    summary = summarize_supports([r["support"] for r in records], records[0]["max_k"])
    for key in ("median", "mean_flipped", "pct_flipped"):
        summary[f"{key}_ci_low"], summary[f"{key}_ci_high"] = summary.pop(f"{key}_ci")
    write_json(out, {"attributor": attributor, "kind": kind, **summary,
                     "supports": [r["support"] for r in records],
                     "models_trained": sum(r["models_trained"] for r in records),
                     "seconds": sum(r["seconds"] for r in records)})


def write_lds(topk: str, targets: str, heldout: list[str], out: str, *, attributor: str, n_train: int) -> None:
    """The ``lds`` record of one attributor against the held-out subset models."""
    stored = np.load(topk)
    masks, margins, _ = _pool(heldout)
    scores = dense_scores(stored["topk"], stored["scores"], n_train, signed=bool(stored["signed"]))
    result = lds(scores, masks, margins)
    per_target = np.asarray(result["per_target"])
    valid = per_target[np.isfinite(per_target)]
    write_json(out, {"attributor": attributor, "targets": len(_json(targets)["indices"]), **result,
                     "per_target": [None if not np.isfinite(v) else float(v) for v in per_target],
                     "lds_se": float(valid.std(ddof=1) / np.sqrt(len(valid))) if len(valid) > 1 else None})
