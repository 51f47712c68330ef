"""Figures of the paper reproductions, built from run outputs (json, npz) only, registered by name.

Each figure is a function of file paths and options (keyword-only, so
``FIGURES.build`` rejects an option a figure does not take) that returns a
matplotlib ``Figure``; ``save_figure`` writes it as pdf and png. Figures are
made with ``matplotlib.figure.Figure`` rather than pyplot: no backend or
display is involved (pdf and png are rendered by their own canvases), and no
global figure list keeps them alive. Runs are ``{label: paths}``, one path a
seed; where there is more than one seed a figure shows the mean and, as the
tables do, the sample standard deviation.

- ``accuracy-over-epochs`` (learned-faster): clean test accuracy per epoch, from ``metrics.json``.
- ``loss-speed-vs-peak`` (learned-faster): mean training loss against peak test accuracy, from ``peak.json``.
- ``dfr-over-epochs`` (learn-from-unlearnable): test accuracy before and after DFR per epoch, from ``dfr.json``.
- ``sharpening-examples`` (cuda-sharpening): clean, CUDA, CUDA + RSK and CUDA + RSK + FF images.
- ``perturbations-per-class`` (ar-poisoning): each class's perturbation and poisoned image.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import seaborn as sns
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from poisonlab.atomic import atomic_path
from poisonlab.data.container import ImageDataset
from poisonlab.defenses.sharpening import rsk, rsk_ff
from poisonlab.registry import ConfigError, Registry
from poisonlab.reporting.tables import load_metrics, lookup

FIGURES: Registry[Callable[..., Figure]] = Registry("figure")

Runs = Mapping[str, Sequence[str | os.PathLike]]  # label → one json path a seed

PNG_DPI = 150
STYLE = "whitegrid"
BEFORE_AFTER_DASHES = {"after DFR": "", "before DFR": (4, 2)}  # solid after, dashed before


def save_figure(fig: Figure, *, pdf: str | os.PathLike, png: str | os.PathLike) -> None:
    """Write ``fig`` as pdf and png, each complete or not at all.

    The figure is not in pyplot's list, so nothing needs closing: dropping it frees it.
    """
    with atomic_path(pdf) as tmp:  # no creation date: the same figure gives the same bytes
        fig.savefig(tmp, format="pdf", bbox_inches="tight", metadata={"CreationDate": None})
    with atomic_path(png) as tmp:
        fig.savefig(tmp, format="png", dpi=PNG_DPI, bbox_inches="tight")


# ---------------------------------------------------------------- inputs


def _check_runs(figure: str, runs: Runs) -> None:
    if not runs:
        raise ConfigError(f"figure '{figure}': runs is empty; give {{label: [json path, one a seed]}}")
    for label, paths in runs.items():
        if isinstance(paths, (str, os.PathLike)) or not paths:
            raise ConfigError(f"figure '{figure}': runs['{label}'] must be a non-empty list of paths; got {paths!r}")


def _first_of_each_class(dataset: ImageDataset, count: int, path: str | os.PathLike) -> np.ndarray:
    """Index of the first training image of each of the first ``count`` classes."""
    indices = []
    for label in range(min(count, dataset.num_classes)):
        found = np.flatnonzero(dataset.y_train == label)
        if not len(found):
            raise ConfigError(f"{path} has no training image of class '{dataset.classes[label]}'")
        indices.append(found[0])
    return np.array(indices)


def _clean_and_poisoned(clean: str | os.PathLike, poisoned: str | os.PathLike) -> tuple[ImageDataset, ImageDataset]:
    """Both containers, checked to hold the same training images in the same order."""
    clean_data, poisoned_data = ImageDataset.load(clean), ImageDataset.load(poisoned)
    if clean_data.x_train.shape != poisoned_data.x_train.shape or not np.array_equal(clean_data.y_train,
                                                                                     poisoned_data.y_train):
        raise ConfigError(f"{poisoned} does not match {clean} image for image (shape {poisoned_data.x_train.shape} "
                          f"vs {clean_data.x_train.shape}, or other labels); it must be made from it")
    return clean_data, poisoned_data


# ---------------------------------------------------------------- drawing helpers


def _new_figure(rows: int, columns: int, *, size: tuple[float, float],
                style: str = STYLE) -> tuple[Figure, np.ndarray]:
    """A figure and its (rows, columns) axes, styled locally: seaborn's theme is not set for the process."""
    figure = Figure(figsize=size, layout="constrained")
    with sns.axes_style(style):
        axes = figure.subplots(rows, columns, squeeze=False)
    return figure, axes


def _legend_outside(ax: Axes) -> None:
    sns.move_legend(ax, "upper left", bbox_to_anchor=(1.01, 1), frameon=False, title=None)


def _to_display(images: np.ndarray) -> np.ndarray:
    """Pixel values (N, H, W, C) in [0, 255], any dtype → float in [0, 1] for imshow."""
    return np.clip(images.astype(np.float32) / 255, 0, 1)


def _show_image(ax: Axes, image: np.ndarray) -> None:
    """An (H, W, C) image in [0, 1]: RGB, or gray for a single channel."""
    if image.shape[-1] == 1:
        ax.imshow(image[..., 0], cmap="gray", vmin=0, vmax=1)
    else:
        ax.imshow(image)
    ax.set_xticks([])
    ax.set_yticks([])


def _image_grid(rows: dict[str, np.ndarray], titles: Sequence[str]) -> Figure:
    """One row of images (N, H, W, C) in [0, 1] per key, labelled with it; columns titled ``titles``."""
    figure, axes = _new_figure(len(rows), len(titles), size=(1.3 * len(titles), 1.4 * len(rows)), style="white")
    for row, (row_label, images) in enumerate(rows.items()):
        for column, image in enumerate(images):
            _show_image(axes[row, column], image)
            if row == 0:
                axes[row, column].set_title(titles[column], fontsize=9)
        axes[row, 0].set_ylabel(row_label, fontsize=9)
    return figure


# ---------------------------------------------------------------- learned-faster


@FIGURES.register("accuracy-over-epochs")
def accuracy_over_epochs(*, runs: Runs) -> Figure:
    """A line per label: clean test accuracy per epoch from ``metrics.json`` histories, mean ± std over seeds."""
    _check_runs("accuracy-over-epochs", runs)
    columns: dict[str, list] = {"epoch": [], "test_acc": [], "label": []}
    for label, paths in runs.items():
        for path in paths:
            history = load_metrics(path).get("history")
            if not history:
                raise ConfigError(f"{path} has no history; accuracy-over-epochs needs a trained run's metrics.json")
            for row in history:
                columns["epoch"].append(row["epoch"])
                columns["test_acc"].append(row["test_acc"])
                columns["label"].append(label)
    figure, axes = _new_figure(1, 1, size=(6.5, 3.5))
    ax = axes[0, 0]
    sns.lineplot(data=columns, x="epoch", y="test_acc", hue="label", hue_order=list(runs), errorbar="sd", ax=ax)
    ax.set(xlabel="epoch", ylabel="clean test accuracy (%)")
    _legend_outside(ax)
    return figure


@FIGURES.register("loss-speed-vs-peak")
def loss_speed_vs_peak(*, runs: Runs) -> Figure:
    """A labelled point per label: mean training loss over epochs (x) against peak test accuracy (y), from peak.json."""
    _check_runs("loss-speed-vs-peak", runs)
    figure, axes = _new_figure(1, 1, size=(5.5, 4))
    ax = axes[0, 0]
    palette = sns.color_palette(n_colors=len(runs))
    for (label, paths), color in zip(runs.items(), palette):
        records = [(path, load_metrics(path)) for path in paths]
        losses = np.array([lookup(record, "mean_train_loss", path) for path, record in records])
        peaks = np.array([lookup(record, "peak_test_acc", path) for path, record in records])
        spread = {"xerr": losses.std(ddof=1), "yerr": peaks.std(ddof=1)} if len(paths) > 1 else {}
        ax.errorbar(losses.mean(), peaks.mean(), fmt="o", color=color, capsize=3, **spread)
        ax.annotate(label, (losses.mean(), peaks.mean()), xytext=(5, 5), textcoords="offset points", fontsize=9)
    ax.set(xlabel="mean training loss over epochs (area under the loss curve / epochs)",
           ylabel="peak clean test accuracy (%)")
    return figure


# ---------------------------------------------------------------- learn-from-unlearnable


@FIGURES.register("dfr-over-epochs")
def dfr_over_epochs(*, runs: Runs) -> Figure:
    """Per label, test accuracy per kept epoch after DFR (solid) and before it (dashed), from dfr.json."""
    _check_runs("dfr-over-epochs", runs)
    # Column names are the legend's section titles: "run" over the labels, "accuracy" over after / before.
    columns: dict[str, list] = {"epoch": [], "test_acc": [], "run": [], "accuracy": []}
    for label, paths in runs.items():
        for path in paths:
            rows = load_metrics(path).get("epochs")
            if not rows:
                raise ConfigError(f"{path} has no epochs; dfr-over-epochs needs the dfr evaluation's json")
            for row in rows:
                for measured, key in (("after DFR", "test_acc_after"), ("before DFR", "test_acc_before")):
                    columns["epoch"].append(row["epoch"])
                    columns["test_acc"].append(row[key])
                    columns["run"].append(label)
                    columns["accuracy"].append(measured)
    figure, axes = _new_figure(1, 1, size=(6.5, 3.5))
    ax = axes[0, 0]
    sns.lineplot(data=columns, x="epoch", y="test_acc", hue="run", hue_order=list(runs), style="accuracy",
                 style_order=list(BEFORE_AFTER_DASHES), dashes=BEFORE_AFTER_DASHES, errorbar="sd", ax=ax)
    ax.set(xlabel="epoch of the checkpoint", ylabel="clean test accuracy (%)")
    _legend_outside(ax)
    return figure


# ---------------------------------------------------------------- cuda-sharpening


@FIGURES.register("sharpening-examples")
def sharpening_examples(*, clean: str | os.PathLike, poisoned: str | os.PathLike, images_per_row: int = 8,
                        seed: int = 0) -> Figure:
    """The first training image of each of the first classes: clean, CUDA, CUDA + RSK, CUDA + RSK + FF.

    RSK and RSK + FF are the ``rsk`` and ``rsk-ff`` defenses' own transforms at their defaults, so the
    images are what training sees, 1 px black border included. Both draw from a generator seeded with
    ``seed``, so they sharpen with the same kernels and the last row is the one above it, filtered.
    """
    clean_data, poisoned_data = _clean_and_poisoned(clean, poisoned)
    chosen = _first_of_each_class(clean_data, images_per_row, clean)
    cuda = torch.from_numpy(poisoned_data.x_train[chosen].astype(np.float32)).permute(0, 3, 1, 2)
    labels = torch.from_numpy(clean_data.y_train[chosen])

    def defended(transform) -> np.ndarray:
        out, _ = transform(cuda, labels, torch.Generator().manual_seed(seed))
        return out.permute(0, 2, 3, 1).numpy()

    rows = {
        "clean": _to_display(clean_data.x_train[chosen]),
        "CUDA": _to_display(poisoned_data.x_train[chosen]),
        "CUDA + RSK": _to_display(defended(rsk().transforms[0])),
        "CUDA + RSK + FF": _to_display(defended(rsk_ff().transforms[0])),
    }
    return _image_grid(rows, [str(clean_data.classes[label]) for label in labels])


# ---------------------------------------------------------------- ar-poisoning


def min_max(image: np.ndarray) -> np.ndarray:
    """``image`` scaled to [0, 1] over all its pixels and channels; a constant image becomes mid-gray."""
    low, high = image.min(), image.max()
    return np.full_like(image, 0.5) if high == low else (image - low) / (high - low)


@FIGURES.register("perturbations-per-class")
def perturbations_per_class(*, clean: str | os.PathLike, poisoned: str | os.PathLike,
                            classes_shown: int = 10) -> Figure:
    """First training image of each of the first classes: poisoned − clean (min-max scaled); the poisoned image."""
    clean_data, poisoned_data = _clean_and_poisoned(clean, poisoned)
    chosen = _first_of_each_class(clean_data, classes_shown, clean)
    perturbations = poisoned_data.x_train[chosen].astype(np.float32) - clean_data.x_train[chosen].astype(np.float32)
    rows = {
        "perturbation\n(min-max scaled)": np.stack([min_max(delta) for delta in perturbations]),
        "poisoned": _to_display(poisoned_data.x_train[chosen]),
    }
    return _image_grid(rows, [str(clean_data.classes[clean_data.y_train[i]]) for i in chosen])
