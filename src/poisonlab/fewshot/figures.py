"""AutoProtoNet's figures, from the npz and json that ``fewshot.prototypes`` writes (never from MLflow).

- ``prototypes_figure``: the paper's decoded-prototype figure (``Paper - Prototypes Figure.ipynb``): the
  5-way 5-shot support set, one column a class and one row a shot, beside one row of decoded prototypes a
  model (IA, IAP, AP, named in bold as the notebook), columns aligned by class.
- ``refinement_figure``: the case study (``Paper - Case Study.ipynb``): the 1-shot supports (the target's
  atypical one framed), the example, the decoded interpolants p_0…p_10 (the chosen one framed), and the
  accuracy on the validation episodes for every i, with its 95% interval, the chosen i marked.

Both follow ``reporting.style`` (a method's fixed colour for the curve, the caption line) and return a
matplotlib ``Figure`` built without pyplot; ``reporting.figures.save_figure`` writes it as pdf and png.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from poisonlab.reporting import style
from poisonlab.reporting.figures import FIGURES

CELL = 0.9  # inches a thumbnail
FRAME = 2.5  # line width of a highlighted thumbnail's frame


def _show(ax: Axes, image: np.ndarray, *, frame: str | None = None) -> None:
    """One (C, H, W) image, uint8 or float in [0, 1], without ticks; grey levels for one channel."""
    pixels = image.astype(np.float32) / (255.0 if image.dtype == np.uint8 else 1.0)
    pixels = np.clip(pixels.transpose(1, 2, 0), 0, 1)
    if pixels.shape[2] == 1:
        ax.imshow(pixels[:, :, 0], cmap="gray", vmin=0, vmax=1)
    else:
        ax.imshow(pixels)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(frame is not None)
        if frame is not None:
            spine.set_edgecolor(frame)
            spine.set_linewidth(FRAME)


def _runs_caption(runs: dict[str, dict]) -> str:
    described = "; ".join(f"{label}: {run['method']}, recipe {run['recipe']}, seed {run['seed']}"
                          for label, run in runs.items())
    datasets = sorted({run["dataset"] for run in runs.values()})
    return f"{', '.join(datasets)} · {described}"


def prototypes_figure(prototypes_npz: str | os.PathLike, *, scale: str = "") -> Figure:
    """Support set (left) beside each model's decoded prototypes (right); one column a class in both."""
    with np.load(prototypes_npz) as arrays:
        support = arrays["support"]  # (way, shot, C, H, W)
        labels = arrays["labels"].tolist()
        decoded = {label: arrays[f"decoded_{label}"] for label in labels}
        classes = arrays["classes"].tolist()
        about = json.loads(str(arrays["about"]))
    way, shot = support.shape[:2]
    figure = Figure(figsize=(CELL * 2 * way + 1.2, CELL * max(shot, len(labels)) + 1.0), layout="constrained")
    left, right = figure.subfigures(1, 2, wspace=0.05)
    left.suptitle(f"Support set ({way}-way {shot}-shot)", fontsize=9)
    right.suptitle("Decoded prototypes", fontsize=9)
    support_axes = left.subplots(shot, way, squeeze=False)
    for k in range(way):
        for s in range(shot):
            _show(support_axes[s, k], support[k, s])
        support_axes[0, k].set_title(f"class {classes[k]}", fontsize=8)
    model_axes = right.subplots(len(labels), way, squeeze=False)
    for row, label in enumerate(labels):
        for k in range(way):
            _show(model_axes[row, k], decoded[label][k])
        # Black row names, as the paper's bold IA / IAP / AP: the methods have no entries in style.STYLES yet,
        # and two hashed colours may coincide.
        model_axes[row, 0].set_ylabel(label, fontsize=9, fontweight="bold")
        if row == 0:
            for k in range(way):
                model_axes[0, k].set_title(f"class {classes[k]}", fontsize=8)
    runs = about.get("runs", {})
    caption = _runs_caption(runs) if runs else ""
    scale_note = f" · {scale} scale" if scale else ""
    style.add_caption(figure, f"{caption} · support seed {about.get('seed', '?')}{scale_note}")
    return figure


def refinement_figure(refinement_json: str | os.PathLike, refinement_npz: str | os.PathLike, *,
                      scale: str = "") -> Figure:
    """The refinement case study: supports and example, decoded interpolants, and accuracy against i."""
    record = json.loads(open(refinement_json).read())
    with np.load(refinement_npz) as arrays:
        support, example = arrays["support"], arrays["example"]
        interpolants = arrays["interpolants"]
    target = record["classes"].index(record["target_class"])
    steps, chosen = record["steps"], record["chosen_i"]
    colour = style.style_of("method", record["method"]).colour
    highlight = style.RED  # frames the atypical support, the example and the chosen interpolant

    figure = Figure(figsize=(CELL * (steps + 1) + 0.6, 5.6), layout="constrained")
    top, middle, bottom = figure.subfigures(3, 1, height_ratios=[1.25, 1.1, 2.4])
    top.suptitle(f"1-shot supports (the {record['target_class']} support is the atypical one) and the example e",
                 fontsize=9)
    axes = top.subplots(1, len(support) + 1)
    for k, image in enumerate(support):
        _show(axes[k], image, frame=highlight if k == target else None)
        axes[k].set_title(f"class {record['classes'][k]}", fontsize=8)
    _show(axes[-1], example, frame=highlight)
    axes[-1].set_title("example e", fontsize=8)

    middle.suptitle(f"decoded p_i = p + (i/{steps})(e − p); i = {chosen} chosen", fontsize=9)
    strip = middle.subplots(1, steps + 1)
    for i, image in enumerate(interpolants):
        _show(strip[i], image, frame=highlight if i == chosen else None)
        strip[i].set_title(f"{i}", fontsize=8)

    ax = bottom.subplots()
    curve = list(record["per_i"].values())
    i_values = np.array([row["i"] for row in curve])
    accuracy = np.array([row["acc"] for row in curve])
    ci95 = np.array([row["ci95"] for row in curve])
    ax.fill_between(i_values, accuracy - ci95, accuracy + ci95, color=colour, alpha=0.2, linewidth=0)
    ax.plot(i_values, accuracy, color=colour, marker=style.style_of("method", record["method"]).marker,
            label=f"{record['method']} (95% interval shaded)")
    ax.axvline(chosen, color=highlight, linestyle="--", linewidth=1)
    ax.annotate(f"before {record['before']['acc']:.1f}", (0, record["before"]["acc"]), xytext=(4, -12),
                textcoords="offset points", fontsize=8)
    ax.annotate(f"chosen i = {chosen}: {record['after']['acc']:.1f}", (chosen, record["after"]["acc"]),
                xytext=(4, 6), textcoords="offset points", fontsize=8, color=highlight)
    ax.set_xticks(i_values)
    ax.set_xlabel("interpolant i")
    ax.set_ylabel(f"query accuracy (%), {record['way']}-way 1-shot")
    ax.legend(fontsize=8, loc="lower right", frameon=False)
    ax.spines[["top", "right"]].set_visible(False)  # seaborn's despine, without importing it for this
    style.add_caption(figure, (
        f"{record['dataset']} meta-test classes {', '.join(record['classes'])}" + (f" ({scale} scale)" if scale else "")
        + f" · model {record['method']}, recipe {record['recipe']}, seed {record['training_seed']}"
        + f" · {record['val_episodes']} validation episodes of {record['queries']} queries a class,"
        + f" seed {record['seed']}"))
    return figure


# ---------------------------------------------------------------- the DAG's figures (config/papers/autoprotonet.yaml)
# The grid's figure rule hands the AutoProtoNet run's record (``runs``: label → its json, one a seed); the first
# seed's arrays lie beside it (``<file>.npz``, the same job's).


def _first(runs: Mapping[str, Sequence[str]]) -> Path:
    return Path(next(iter(runs.values()))[0])


@FIGURES.register("fewshot-prototypes")
def dag_prototypes(*, runs: Mapping[str, Sequence[str]], scale: str) -> Figure:
    return prototypes_figure(_first(runs).with_suffix(".npz"), scale=scale)


@FIGURES.register("fewshot-refinement")
def dag_refinement(*, runs: Mapping[str, Sequence[str]], scale: str) -> Figure:
    record = _first(runs)
    return refinement_figure(record, record.with_suffix(".npz"), scale=scale)
