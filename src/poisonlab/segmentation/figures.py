"""robust-seg's figures, in the layouts of the paper's (as far as the likely companion repository shows them).

- ``segmentation-examples``: the companion repository's ``notebooks/paper-figure.ipynb``
  layout — per example image: the image, its ground truth, then each model's
  prediction on the clean image and under the attack (BIM-4 there);
- ``inpainting-examples``: the original, the masked input, and each model's inpainting;
- ``generation-examples``: the target map, and each model's generation from noise.

Inputs are the arrays the jobs of ``poisonlab.segmentation.run`` save (npz);
models are keyed by procedure name, each coloured as ``reporting.style``
fixes it for that name (kind ``method``), so a model keeps its colour in every
figure. Label maps use one fixed colour a class: background black, the
classes after it in Tableau 20 order, 255 (ignored) white.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure

from poisonlab.registry import ConfigError, Registry
from poisonlab.reporting import style
from poisonlab.reporting.figures import FIGURES

SEG_FIGURES: Registry[Callable[..., Figure]] = Registry("segmentation figure")
Arrays = Mapping[str, str | os.PathLike]  # procedure name → the npz a job saved for it
TABLEAU20 = ("#1f77b4", "#aec7e8", "#ff7f0e", "#ffbb78", "#2ca02c", "#98df8a", "#d62728", "#ff9896", "#9467bd",
             "#c5b0d5", "#8c564b", "#c49c94", "#e377c2", "#f7b6d2", "#7f7f7f", "#c7c7c7", "#bcbd22", "#dbdb8d",
             "#17becf", "#9edae5")


def label_colours(num_classes: int) -> ListedColormap:
    """Class c → colour c (c = 0 black, then Tableau 20, cycling), for label values 0 … num_classes − 1."""
    return ListedColormap(["#000000", *(TABLEAU20[i % len(TABLEAU20)] for i in range(num_classes - 1))])


def _load(arrays: Arrays, count: int) -> dict[str, dict[str, np.ndarray]]:
    if not arrays:
        raise ConfigError("a robust-seg figure needs the arrays of at least one model")
    loaded = {}
    for name, path in arrays.items():
        with np.load(path, allow_pickle=False) as npz:
            loaded[name] = {key: npz[key][:count] for key in npz.files}
    return loaded


def _image(ax: Axes, image: np.ndarray) -> None:
    """A (C, H, W) uint8 image: gray for one channel."""
    pixels = image.transpose(1, 2, 0).astype(np.float32) / 255
    ax.imshow(pixels[..., 0] if pixels.shape[-1] == 1 else pixels, cmap="gray", vmin=0, vmax=1)


def _map(ax: Axes, labels: np.ndarray, num_classes: int) -> None:
    shown = np.ma.masked_where(labels >= num_classes, labels)  # the ignore label shows as the white background
    ax.imshow(shown, cmap=label_colours(num_classes), vmin=-0.5, vmax=num_classes - 0.5, interpolation="nearest")


def _grid(rows: int, titles: list[tuple[str, str]], caption: str) -> tuple[Figure, np.ndarray]:
    """A figure of ``rows`` × len(titles) bare panels; titles as (text, colour)."""
    figure = Figure(figsize=(1.15 * len(titles) + 0.3, 1.2 * rows + 0.5), layout="constrained")
    axes = figure.subplots(rows, len(titles), squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    for column, (text, colour) in enumerate(titles):
        axes[0, column].set_title(text, fontsize=8, color=colour)
    style.add_caption(figure, caption)
    return figure, axes


def _colour(name: str) -> str:
    return style.style_of("method", name).colour


@SEG_FIGURES.register("segmentation-examples")
def segmentation_examples(*, examples: Arrays, num_classes: int, caption: str, attack: str = "bim-4",
                          count: int = 3) -> Figure:
    """Image, ground truth, and per model its prediction clean and under ``attack`` (``robustness_run``'s npz)."""
    loaded = _load(examples, count)
    first = next(iter(loaded.values()))
    missing = [name for name, a in loaded.items() if f"{attack}_predictions" not in a or "clean_predictions" not in a]
    if missing:
        raise ConfigError(f"segmentation-examples: no clean or '{attack}' predictions saved for {', '.join(missing)}")
    titles = [("image", "0.2"), ("ground truth", "0.2")]
    titles += [(f"{name}\n{column}", _colour(name)) for name in loaded for column in ("clean", attack)]
    figure, axes = _grid(len(first["images"]), titles, caption)
    for row in range(len(first["images"])):
        _image(axes[row, 0], first["images"][row])
        _map(axes[row, 1], first["maps"][row], num_classes)
        for k, arrays in enumerate(loaded.values()):
            _map(axes[row, 2 + 2 * k], arrays["clean_predictions"][row], num_classes)
            _map(axes[row, 3 + 2 * k], arrays[f"{attack}_predictions"][row], num_classes)
    return figure


@SEG_FIGURES.register("inpainting-examples")
def inpainting_examples(*, arrays: Arrays, caption: str, count: int = 4) -> Figure:
    """Original, masked input, and each model's inpainting (``synthesis_run``'s npz, task inpaint)."""
    loaded = _load(arrays, count)
    first = next(iter(loaded.values()))
    titles = [("original", "0.2"), ("masked input", "0.2"), *((name, _colour(name)) for name in loaded)]
    figure, axes = _grid(len(first["original"]), titles, caption)
    for row in range(len(first["original"])):
        _image(axes[row, 0], first["original"][row])
        _image(axes[row, 1], first["masked"][row])
        for k, a in enumerate(loaded.values()):
            _image(axes[row, 2 + k], a["result"][row])
    return figure


@SEG_FIGURES.register("generation-examples")
def generation_examples(*, arrays: Arrays, num_classes: int, caption: str, count: int = 4) -> Figure:
    """The target map and each model's generation from noise (``synthesis_run``'s npz, task generate)."""
    loaded = _load(arrays, count)
    first = next(iter(loaded.values()))
    titles = [("target map", "0.2"), *((name, _colour(name)) for name in loaded)]
    figure, axes = _grid(len(first["maps"]), titles, caption)
    for row in range(len(first["maps"])):
        _map(axes[row, 0], first["maps"][row], num_classes)
        for k, a in enumerate(loaded.values()):
            _image(axes[row, 1 + k], a["result"][row])
    return figure


# ---------------------------------------------------------------- the DAG's figures (config/papers/robust-seg.yaml)
# The grid's figure rule hands each model's records (``runs``: procedure → its json, one a seed); the first
# seed's arrays lie beside its json (``<file>.npz``, the same job's), its class count in the run's metrics.json.


def _arrays(runs: Mapping[str, list[str]]) -> dict[str, str]:
    return {name: str(Path(paths[0]).with_suffix(".npz")) for name, paths in runs.items()}


def _record(runs: Mapping[str, list[str]], file: str = "") -> dict:
    first = Path(next(iter(runs.values()))[0])
    return json.loads((first.parent / f"{file}.json" if file else first).read_text())


@FIGURES.register("seg-segmentation-examples")
def dag_segmentation_examples(*, runs: Mapping[str, list[str]], scale: str, attack: str = "bim-4",
                              count: int = 3) -> Figure:
    record = _record(runs)
    caption = (f"{scale} scale · L∞ ε {record['epsilon']:g}, α {record['step_size']:g} · "
               f"{record['count']} test images")
    return segmentation_examples(examples=_arrays(runs), num_classes=_record(runs, "metrics")["num_classes"],
                                 caption=caption, attack=attack, count=count)


@FIGURES.register("seg-inpainting-examples")
def dag_inpainting_examples(*, runs: Mapping[str, list[str]], scale: str, count: int = 4) -> Figure:
    record = _record(runs)
    caption = f"{scale} scale · {record['optimizer']}, {record['steps']} steps, target {record['target']}"
    return inpainting_examples(arrays=_arrays(runs), caption=caption, count=count)


@FIGURES.register("seg-generation-examples")
def dag_generation_examples(*, runs: Mapping[str, list[str]], scale: str, count: int = 4) -> Figure:
    record = _record(runs)
    caption = (f"{scale} scale · from noise, {record['optimizer']}, {record['steps']} steps, "
               f"target {record['target']}")
    return generation_examples(arrays=_arrays(runs), num_classes=_record(runs, "metrics")["num_classes"],
                               caption=caption, count=count)
