"""Decoded prototypes and the prototype-refinement case study, as reproducible procedures.

**Decoded prototypes** (``Paper - Prototypes Figure.ipynb``): a 5-way 5-shot support set, each class's mean
support embedding put through the decoder; one row of decoded prototypes a model (IA, IAP, AP), every model
on the same support set.

**Refinement** (paper §4.2, ``Paper - Case Study.ipynb``): a person judges one prototype p inadequate, picks an
example image, embeds it (e), decodes the interpolants p_i = p + (i/10)(e − p) and replaces p by the one
they pick (i = 7 in the notebook: query accuracy 80.0 → 98.0 on their 50 photographs). The notebook decoded
i = 0…9; here i = 0…10, so i = 10 (e itself) is on the curve too.

No person is in this loop, and the notebook's photographs are not available, so the choices are a seeded
rule (design note §5.1), each recorded in the output and each overridable from config:

- the task: ``way`` classes of the pool (the meta-test classes), drawn from the seed;
- each class's images are split in two halves by the seed: a *validation* half, from which
  ``val_episodes`` query sets of ``queries`` images a class are drawn (the notebook's 10 a class), and a
  *held-out* half, from which supports and the example come;
- 1-shot supports: for every class a held-out image drawn from the seed, except the *target* class (drawn
  from the seed, or ``target_class``), whose support is made deliberately atypical: its held-out image
  farthest from the mean embedding of its held-out images;
- the example e: the held-out image of the target class closest to that mean (or ``example_index``);
- the chosen interpolant ``chosen_i`` (default 7, as the notebook) stands in for the person's pick; the
  accuracy for every i is reported, so the choice can be audited.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from poisonlab.atomic import save_npz, write_json
from poisonlab.fewshot.episodes import fixed_episodes
from poisonlab.fewshot.evaluate import embed_pool, interval95
from poisonlab.fewshot.methods import unit_pixels
from poisonlab.fewshot.models import ProtoNet, class_prototypes
from poisonlab.fewshot.run import load_fewshot_model, load_pools
from poisonlab.fewshot.splits import ClassPool
from poisonlab.registry import ConfigError
from poisonlab.training.loop import pick_device

INTERPOLATION_STEPS = 10  # p_i = p + (i/10)(e − p), as the notebook's show_interpolation
NOTEBOOK_CHOICE = 7  # the interpolant the authors picked (Paper - Case Study.ipynb, cell 11)


@torch.no_grad()
def decode_prototypes(model: ProtoNet, support: torch.Tensor, labels: torch.Tensor, way: int) -> torch.Tensor:
    """Decoded prototypes of one support set: raw images (S, C, H, W), labels (S,) → (way, C, H, W) in [0, 1]."""
    model.eval()
    embeddings = model.embed(unit_pixels(support)).float()
    prototypes = class_prototypes(embeddings[None], labels[None], way)[0]
    return model.decode(prototypes).float().clamp(0, 1)


def interpolate(prototype: torch.Tensor, example: torch.Tensor, steps: int = INTERPOLATION_STEPS) -> torch.Tensor:
    """p_i = p + (i/steps)(e − p) for i = 0…steps: (D,), (D,) → (steps + 1, D); row 0 is p, the last e."""
    fractions = torch.arange(steps + 1, dtype=prototype.dtype, device=prototype.device) / steps
    return prototype + fractions[:, None] * (example - prototype)


def prototypes_figure_data(models: dict[str, ProtoNet], pool: ClassPool, out_npz: str | os.PathLike, *,
                           way: int = 5, shot: int = 5, seed: int = 0, about: dict | None = None) -> dict[str, Any]:
    """One seeded ``way``-way ``shot``-shot support set of ``pool`` and each model's decoded prototypes, to npz.

    The npz holds ``support`` uint8 (way, shot, C, H, W), ``decoded_<label>`` float32 (way, C, H, W) for each
    model with a decoder (a ProtoNet has none and is left out), ``classes``, ``labels`` (the row order) and
    ``about``: a json string of the returned record and ``about`` (what the runs were, for the caption).
    """
    episode = next(fixed_episodes(pool, way=way, shot=shot, query=1, episodes=1, seed=seed))
    support, labels = episode.support[0], episode.support_labels[0]
    decoded = {label: decode_prototypes(model, support, labels, way).cpu().numpy()
               for label, model in models.items() if model.decoder is not None}
    if not decoded:
        raise ConfigError("decoded prototypes need at least one model with a decoder (conv4-ae)")
    class_names = [pool.classes[c] for c in episode.classes[0].tolist()]
    record = {"classes": class_names, "models": list(decoded), "way": way, "shot": shot, "seed": seed, **(about or {})}
    save_npz(out_npz, support=support.view(way, shot, *support.shape[1:]).cpu().numpy().astype(np.uint8),
             classes=np.array(class_names), labels=np.array(list(decoded)), about=np.array(json.dumps(record)),
             **{f"decoded_{label}": images for label, images in decoded.items()})
    return record


def _halves(pool: ClassPool, classes: list[int], generator: torch.Generator) -> tuple[list[torch.Tensor], ...]:
    """Each class's images split by the seed into a validation half and a held-out half (pool indices)."""
    validation, held_out = [], []
    for c in classes:
        members = pool.members[c, :int(pool.counts[c])]
        members = members[torch.randperm(len(members), generator=generator).to(members.device)]
        validation.append(members[:len(members) // 2])
        held_out.append(members[len(members) // 2:])
    return validation, held_out


@torch.no_grad()
def refinement_case_study(model: ProtoNet, pool: ClassPool, *, way: int = 5, chosen_i: int = NOTEBOOK_CHOICE,
                          queries: int = 10, val_episodes: int = 100, seed: int = 0, target_class: str | None = None,
                          example_index: int | None = None, precision: str = "fp32") -> tuple[dict, dict]:
    """The refinement procedure on ``pool`` (module docstring): a json-ready record and the images, as arrays.

    The record has the task (classes, target, support and example indices), the accuracy (mean ± ci95 over
    the validation episodes) for every i, ``before`` (i = 0) and ``after`` (i = ``chosen_i``). The arrays:
    ``support`` uint8 (way, C, H, W), ``example`` uint8 (C, H, W), ``decoded_before`` and ``decoded_after``
    (way, C, H, W) and ``interpolants`` (11, C, H, W), decoded, in [0, 1].
    """
    if not 0 <= chosen_i <= INTERPOLATION_STEPS:
        raise ConfigError(f"refinement chosen_i must lie in 0..{INTERPOLATION_STEPS}; got {chosen_i}")
    if way > pool.num_classes:
        raise ConfigError(f"refinement way {way} exceeds the pool's {pool.num_classes} classes")
    generator = torch.Generator().manual_seed(seed)
    classes = torch.randperm(pool.num_classes, generator=generator)[:way].sort().values.tolist()
    names = [pool.classes[c] for c in classes]
    if target_class is None:
        target = int(torch.randint(way, (), generator=generator))
    elif target_class in names:
        target = names.index(target_class)
    else:
        raise ConfigError(f"refinement target_class '{target_class}' is not one of the task's classes {names}")
    validation, held_out = _halves(pool, classes, generator)
    embeddings = embed_pool(model, pool, precision)

    supports = [int(h[torch.randint(len(h), (), generator=generator)]) for h in held_out]
    candidates = held_out[target]
    distance = (embeddings[candidates] - embeddings[candidates].mean(0)).square().sum(1)
    supports[target] = int(candidates[distance.argmax()])  # the deliberately atypical support
    example = int(candidates[distance.argmin()]) if example_index is None else int(example_index)
    if example_index is not None and int(pool.labels[example]) != classes[target]:
        raise ConfigError(f"refinement example_index {example_index} is not an image of '{names[target]}'")

    prototypes = embeddings[supports]  # 1-shot: a prototype is its support's embedding
    interpolants = interpolate(prototypes[target], embeddings[example])
    candidates_sets = prototypes.expand(len(interpolants), -1, -1).clone()
    candidates_sets[:, target] = interpolants  # (11, way, D): the task's prototypes with p replaced by p_i

    # Validation query sets, the same for every i: a pool of the validation halves, labels = task positions.
    val_index = torch.cat(validation)
    val_labels = torch.cat([torch.full((len(v),), k, device=val_index.device) for k, v in enumerate(validation)])
    val_pool = ClassPool.from_tensors(pool.images[val_index], val_labels, tuple(names))
    val_embeddings = embeddings[val_index]
    per_episode = []
    for batch in fixed_episodes(val_pool, way=way, shot=0, query=queries, episodes=val_episodes, seed=seed + 1):
        labels = batch.classes.gather(1, batch.query_labels)  # episode positions → task positions
        query_embeddings = val_embeddings[batch.query_index].flatten(0, 1)  # (E·way·Q, D)
        logits = model.logits(query_embeddings.expand(len(candidates_sets), -1, -1), candidates_sets)
        predictions = logits.argmax(2).view(len(candidates_sets), len(batch), -1)
        per_episode.append(100.0 * (predictions == labels).float().mean(2))
    accuracies = torch.cat(per_episode, 1).cpu().numpy()  # (11, episodes)
    curve = [{"i": i, "acc": mean, "ci95": ci95}
             for i, (mean, ci95) in enumerate(interval95(row) for row in accuracies)]

    record = {
        "way": way, "shot": 1, "queries": queries, "val_episodes": val_episodes, "seed": seed,
        "classes": names, "target_class": names[target], "chosen_i": chosen_i,
        "support_index": supports, "example_index": example, "steps": INTERPOLATION_STEPS,
        # per_i keyed by i, so a table's metric can name one: "per_i.7.acc".
        "before": curve[0], "after": curve[chosen_i], "per_i": {str(row["i"]): row for row in curve},
        "best_i": int(np.argmax([row["acc"] for row in curve])),  # for auditing only; not the chosen one
    }
    refined = candidates_sets[chosen_i]
    arrays = {
        "support": pool.images[supports].cpu().numpy(),
        "example": pool.images[example].cpu().numpy(),
        "decoded_before": model.decode(prototypes).float().clamp(0, 1).cpu().numpy(),
        "decoded_after": model.decode(refined).float().clamp(0, 1).cpu().numpy(),
        "interpolants": model.decode(interpolants).float().clamp(0, 1).cpu().numpy(),
        "accuracies": accuracies,
    }
    return record, arrays


def refinement_run(run_dir: str | os.PathLike, data_path: str | os.PathLike, out_json: str | os.PathLike,
                   out_npz: str | os.PathLike, *, device: str = "auto", **options: Any) -> dict:
    """``refinement_case_study`` on a finished run's meta-test classes; the record to json, images to npz."""
    torch_device = pick_device(device)
    model, run = load_fewshot_model(run_dir, torch_device)
    _, pools = load_pools(data_path, run["split"], torch_device, run["pad_to"])
    record, arrays = refinement_case_study(model, pools["test"], precision=run["precision"], **options)
    record = {**{key: run[key] for key in ("dataset", "method", "arch", "recipe", "split")},
              "training_seed": run["seed"], "run_dir": str(Path(run_dir)), **record}
    save_npz(out_npz, **arrays, classes=np.array(record["classes"]))
    write_json(out_json, record)
    return record


def prototypes_run(run_dirs: dict[str, str | os.PathLike], data_path: str | os.PathLike, out_npz: str | os.PathLike,
                   *, way: int = 5, shot: int = 5, seed: int = 0, device: str = "auto") -> dict[str, Any]:
    """``prototypes_figure_data`` for finished runs ``{row label: run folder}`` (IA, IAP, AP) of one split."""
    torch_device = pick_device(device)
    loaded = {label: load_fewshot_model(run_dir, torch_device) for label, run_dir in run_dirs.items()}
    splits = {(run["split"], run["pad_to"]) for _, run in loaded.values()}
    if len(splits) != 1:
        raise ConfigError(f"decoded prototypes compare runs of one split and size; got {sorted(map(str, splits))}")
    split, pad_to = splits.pop()
    _, pools = load_pools(data_path, split, torch_device, pad_to)
    about = {"split": split, "runs": {label: {key: run[key] for key in ("dataset", "method", "recipe", "seed")}
                                      for label, (_, run) in loaded.items()}}
    return prototypes_figure_data({label: model for label, (model, _) in loaded.items()}, pools["test"], out_npz,
                                  way=way, shot=shot, seed=seed, about=about)
