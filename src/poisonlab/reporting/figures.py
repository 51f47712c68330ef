"""Figures of the paper reproductions, built from run outputs (json, npz) only, registered by name.

Each figure is a function of file paths and options (keyword-only, so
``FIGURES.build`` rejects an option a figure does not take) that returns a
matplotlib ``Figure``; ``save_figure`` writes it as pdf and png. Figures are
made with ``matplotlib.figure.Figure`` rather than pyplot: no backend or
display is involved (pdf and png are rendered by their own canvases), and no
global figure list keeps them alive. Runs are ``{label: paths}``, one path a
seed; where there is more than one seed a figure shows the mean and, as the
tables do, the sample standard deviation.

Every figure follows ``reporting.style``, shared by all papers: a poison (defense,
model) has one colour and marker everywhere, found from the names in each run's
``metrics.json`` (beside the json a figure reads); more than ``style.MAX_LINES``
lines are split into panels; labels sit on the data; and a caption line says
the dataset, scale (``scale``, the pipeline's), model, epochs and seeds.

- ``accuracy-over-epochs`` (learned-faster): clean test accuracy per epoch, from ``metrics.json``.
- ``loss-speed-vs-peak`` (learned-faster): mean training loss against peak test accuracy, from ``peak.json``.
- ``dfr-over-epochs`` (learn-from-unlearnable): test accuracy before and after DFR per epoch, from ``dfr.json``.
- ``sharpening-examples`` (cuda-sharpening): clean, CUDA, CUDA + RSK and CUDA + RSK + FF images, every class.
- ``perturbations-per-class`` (ar-poisoning): each class's perturbation and poisoned image.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from poisonlab.atomic import atomic_path
from poisonlab.data.container import ImageDataset
from poisonlab.defenses.sharpening import rsk, rsk_ff
from poisonlab.registry import ConfigError, Registry
from poisonlab.reporting import style
from poisonlab.reporting.tables import load_metrics, lookup

FIGURES: Registry[Callable[..., Figure]] = Registry("figure")

Runs = Mapping[str, Sequence[str | os.PathLike]]  # label → one json path a seed

PNG_DPI = 150
STYLE = "whitegrid"
NAME_FIELDS = ("poison", "defense", "arch", "dataset")  # the fields a figure's labels may stand for, in this order
MARKS_PER_LINE = 6  # markers on a line: enough to tell it in gray print, few enough not to hide it


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


def _run_records(runs: Runs) -> dict[str, list[dict]]:
    """Each label's runs' ``metrics.json`` (the file itself, or the one in the folder of the json given)."""
    return {label: [load_metrics(Path(path).with_name("metrics.json")) for path in paths]
            for label, paths in runs.items()}


def _names(records: Mapping[str, list[dict]]) -> tuple[str, dict[str, str]]:
    """The field the labels stand for and each label's name in it: the first field that tells all labels
    apart (the poison of each, usually), else the first that varies (labels may then share a style)."""
    named = {field: {label: str(runs[0].get(field)) for label, runs in records.items()} for field in NAME_FIELDS}
    field = next((f for f in NAME_FIELDS if len(set(named[f].values())) == len(records)), None)
    if field is None:
        field = next((f for f in NAME_FIELDS if len(set(named[f].values())) > 1), "poison")
    return field, named[field]


def _styles(records: Mapping[str, list[dict]]) -> dict[str, style.Style]:
    """Each label's fixed style: that of the name it stands for (``style.style_of``)."""
    kind, names = _names(records)
    return {label: style.style_of(kind, name) for label, name in names.items()}


def _first_of_each_class(dataset: ImageDataset, count: int | None, path: str | os.PathLike) -> np.ndarray:
    """Index of the first training image of each class (of the first ``count``, if given)."""
    indices = []
    for label in range(dataset.num_classes if count is None else min(count, dataset.num_classes)):
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


def _caption_of_images(data: ImageDataset, *, scale: str, what: str) -> str:
    poison = data.meta.get("poison", {})
    return (f"{data.meta.get('dataset', '?')} ({scale} scale) · poison {poison.get('name', '?')} "
            f"(seed {poison.get('seed', '?')}) · {what} · images only: no model, no epochs")


# ---------------------------------------------------------------- drawing helpers


def _new_figure(rows: int, columns: int, *, size: tuple[float, float], style_name: str = STYLE,
                **subplots) -> tuple[Figure, np.ndarray]:
    """A figure and its (rows, columns) axes, styled locally: seaborn's theme is not set for the process."""
    # seaborn is imported here, where a figure is drawn: Snakemake's own process imports this module for
    # the figures' names when it checks the config, and seaborn (scipy, pandas) costs it ~1.4 s.
    import seaborn as sns

    figure = Figure(figsize=size, layout="constrained")
    with sns.axes_style(style_name):
        axes = figure.subplots(rows, columns, squeeze=False, **subplots)
    return figure, axes


def _panels(count: int, columns: int, panel: tuple[float, float], *, xlabel: str, ylabel: str
            ) -> tuple[Figure, list[Axes]]:
    """``count`` panels of size ``panel`` (inches) on a grid ``columns`` wide, sharing both axes.

    Unused grid cells are removed; each column's lowest panel shows the x axis and its label, each row's
    first the y label.
    """
    columns = min(columns, count)
    rows = math.ceil(count / columns)
    figure, grid = _new_figure(rows, columns, size=(panel[0] * columns, panel[1] * rows), sharex=True, sharey=True)
    for ax in grid.flat[count:]:
        ax.remove()
    axes = list(grid.flat[:count])
    for index, ax in enumerate(axes):
        if index + columns >= count:  # nothing below it
            ax.xaxis.set_tick_params(labelbottom=True)
            ax.set_xlabel(xlabel)
        if index % columns == 0:
            ax.set_ylabel(ylabel)
    return figure, axes


def _mean_and_sd(histories: Sequence[Sequence[dict]], key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per epoch over seeds: epochs, mean of ``key``, sample sd (0 with one seed)."""
    by_epoch: dict[int, list[float]] = {}
    for history in histories:
        for row in history:
            by_epoch.setdefault(int(row["epoch"]), []).append(float(row[key]))
    epochs = np.array(sorted(by_epoch))
    values = [by_epoch[e] for e in epochs]
    return (epochs, np.array([np.mean(v) for v in values]),
            np.array([np.std(v, ddof=1) if len(v) > 1 else 0.0 for v in values]))


def _draw_line(ax: Axes, epochs: np.ndarray, mean: np.ndarray, sd: np.ndarray, look: style.Style, *,
               label: str, dashed: bool = False) -> None:
    ax.plot(epochs, mean, color=look.colour, marker=look.marker, markersize=4, label=label,
            markevery=max(1, len(epochs) // MARKS_PER_LINE), linestyle="--" if dashed else "-", linewidth=1.4)
    if sd.any():
        ax.fill_between(epochs, mean - sd, mean + sd, color=look.colour, alpha=0.15, linewidth=0)


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


def _image_grid(rows: dict[str, np.ndarray], titles: Sequence[str], caption: str) -> Figure:
    """One row of images (N, H, W, C) in [0, 1] per key, labelled with it; columns titled ``titles``."""
    width = 1.3 if len(titles) <= 8 else 1.05
    figure, axes = _new_figure(len(rows), len(titles), size=(max(width * len(titles), 6.5), 1.25 * len(rows) + 0.4),
                               style_name="white")
    for row, (row_label, images) in enumerate(rows.items()):
        for column, image in enumerate(images):
            _show_image(axes[row, column], image)
            if row == 0:
                axes[row, column].set_title(titles[column], fontsize=9)
        axes[row, 0].set_ylabel(row_label, fontsize=9)
    style.add_caption(figure, caption)
    return figure


# ---------------------------------------------------------------- learned-faster


@FIGURES.register("accuracy-over-epochs")
def accuracy_over_epochs(*, runs: Runs, scale: str) -> Figure:
    """Clean test accuracy per epoch from ``metrics.json`` histories, mean ± sd over seeds, a line a label.

    Up to ``style.MAX_LINES`` labels share one axes; more are split into a panel a family (the clean
    baseline in each), panels sharing their y axis. Each line is labelled at its end.
    """
    _check_runs("accuracy-over-epochs", runs)
    records = _run_records(runs)
    for label, paths in runs.items():
        for path, record in zip(paths, records[label]):
            if not record.get("history"):
                raise ConfigError(f"{path} has no history; accuracy-over-epochs needs a trained run's metrics.json")
    looks = _styles(records)
    kind, names = _names(records)
    labels = list(runs)
    panels = style.facets(kind, [names[label] for label in labels])
    figure, axes = _panels(len(panels), 2, (6.5, 3.6) if len(panels) == 1 else (4.6, 2.9), xlabel="epoch",
                           ylabel="clean test accuracy (%)")
    ends = []
    for ax, (title, members) in zip(axes, panels):
        panel_ends = []
        for label in (labels[i] for i in members):
            epochs, mean, sd = _mean_and_sd([r["history"] for r in records[label]], "test_acc")
            _draw_line(ax, epochs, mean, sd, looks[label], label=label)
            panel_ends.append((epochs[-1], mean[-1], label, looks[label].colour))
        ax.set_title(title, fontsize=10)
        ends.append(panel_ends)
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    style.add_caption(figure, style.caption_of_runs([r for rs in records.values() for r in rs], scale=scale))
    for ax, panel_ends in zip(axes, ends):
        style.label_line_ends(ax, panel_ends)
    return figure


@FIGURES.register("loss-speed-vs-peak")
def loss_speed_vs_peak(*, runs: Runs, scale: str) -> Figure:
    """A labelled point per label: mean training loss over epochs (x) against peak test accuracy (y), from peak.json.

    Bars are the sd over seeds; labels are placed so that none overlaps another label or a point.
    """
    _check_runs("loss-speed-vs-peak", runs)
    records = _run_records(runs)
    looks = _styles(records)
    figure, axes = _new_figure(1, 1, size=(6.5, 4.8))
    ax = axes[0, 0]
    points = []
    for label, paths in runs.items():
        peaks = [(path, load_metrics(path)) for path in paths]
        losses = np.array([lookup(record, "mean_train_loss", path) for path, record in peaks])
        accuracies = np.array([lookup(record, "peak_test_acc", path) for path, record in peaks])
        spread = {"xerr": losses.std(ddof=1), "yerr": accuracies.std(ddof=1)} if len(paths) > 1 else {}
        ax.errorbar(losses.mean(), accuracies.mean(), fmt=looks[label].marker, color=looks[label].colour,
                    markersize=7, capsize=3, **spread)
        points.append((losses.mean(), accuracies.mean()))
    ax.margins(0.12)
    ax.set(xlabel="mean training loss over epochs (area under the loss curve / epochs)",
           ylabel="peak clean test accuracy (%)")
    style.add_caption(figure, style.caption_of_runs([r for rs in records.values() for r in rs], scale=scale))
    style.place_labels(ax, points, list(runs))
    return figure


# ---------------------------------------------------------------- learn-from-unlearnable


@FIGURES.register("dfr-over-epochs")
def dfr_over_epochs(*, runs: Runs, scale: str) -> Figure:
    """A panel a label: test accuracy per kept epoch after DFR (solid) and before it (dashed), from dfr.json.

    Panels share both axes, so a reader compares the poisons' gaps across them.
    """
    _check_runs("dfr-over-epochs", runs)
    records = _run_records(runs)
    looks = _styles(records)
    curves = {}
    for label, paths in runs.items():
        evaluations = []
        for path in paths:
            rows = load_metrics(path).get("epochs")
            if not rows:
                raise ConfigError(f"{path} has no epochs; dfr-over-epochs needs the dfr evaluation's json")
            evaluations.append(rows)
        curves[label] = evaluations
    figure, axes = _panels(len(runs), 4, (2.6, 2.3) if len(runs) > 1 else (5.0, 3.4),
                           xlabel="epoch of the checkpoint", ylabel="clean test acc. (%)")
    for ax, (label, evaluations) in zip(axes, curves.items()):
        for key, dashed in (("test_acc_after", False), ("test_acc_before", True)):
            _draw_line(ax, *_mean_and_sd(evaluations, key), looks[label], label=label, dashed=dashed)
        ax.set_title(label, fontsize=10, color=looks[label].colour)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    key = [Line2D([], [], color="0.3", linestyle=dash, label=text)
           for dash, text in (("-", "after DFR (last layer retrained on clean data)"), ("--", "before DFR"))]
    figure.legend(handles=key, loc="outside upper center", ncols=2, frameon=False, fontsize=9)
    style.add_caption(figure, style.caption_of_runs([r for rs in records.values() for r in rs], scale=scale))
    return figure


# ---------------------------------------------------------------- cuda-sharpening


@FIGURES.register("sharpening-examples")
def sharpening_examples(*, clean: str | os.PathLike, poisoned: str | os.PathLike, scale: str,
                        images_per_row: int | None = None, seed: int = 0) -> Figure:
    """The first training image of every class (or of the first ``images_per_row``): clean, CUDA, CUDA + RSK,
    CUDA + RSK + FF.

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
    caption = _caption_of_images(poisoned_data, scale=scale,
                                 what=f"first training image of each class · RSK, FF drawn with seed {seed}")
    return _image_grid(rows, [str(clean_data.classes[label]) for label in labels], caption)


# ---------------------------------------------------------------- ar-poisoning


def min_max(image: np.ndarray) -> np.ndarray:
    """``image`` scaled to [0, 1] over all its pixels and channels; a constant image becomes mid-gray."""
    low, high = image.min(), image.max()
    return np.full_like(image, 0.5) if high == low else (image - low) / (high - low)


@FIGURES.register("perturbations-per-class")
def perturbations_per_class(*, clean: str | os.PathLike, poisoned: str | os.PathLike, scale: str,
                            classes_shown: int | None = None) -> Figure:
    """First training image of every class (or of the first ``classes_shown``): poisoned − clean (min-max
    scaled); the poisoned image."""
    clean_data, poisoned_data = _clean_and_poisoned(clean, poisoned)
    chosen = _first_of_each_class(clean_data, classes_shown, clean)
    perturbations = poisoned_data.x_train[chosen].astype(np.float32) - clean_data.x_train[chosen].astype(np.float32)
    rows = {
        "perturbation\n(min-max scaled)": np.stack([min_max(delta) for delta in perturbations]),
        "poisoned": _to_display(poisoned_data.x_train[chosen]),
    }
    caption = _caption_of_images(poisoned_data, scale=scale, what="first training image of each class")
    return _image_grid(rows, [str(clean_data.classes[clean_data.y_train[i]]) for i in chosen], caption)


# ---------------------------------------------------------------- the papers' own figure modules

# Imported last, for their @FIGURES.register side effects (they import this module's FIGURES).
import poisonlab.attribution.figures  # noqa: E402,F401
import poisonlab.editing.figures  # noqa: E402,F401
import poisonlab.fewshot.figures  # noqa: E402,F401
import poisonlab.segmentation.figures  # noqa: E402,F401
