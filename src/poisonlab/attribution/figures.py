"""The ssl-attribution figures: a target's top-8 training images per method, support CDFs, LDS per method.

Each function returns a matplotlib ``Figure`` (save it with ``reporting.figures.save_figure``); methods
keep one colour and marker across figures and papers (``reporting.style.style_of("method", name)``),
and every figure carries a caption line saying what was measured (``reporting.style.add_caption``).
The neighbours figure follows the repository's plot (a target, then each method's top images in a row).
The three are registered in ``reporting.figures.FIGURES`` (``attribution-neighbours``, ``support-cdf``,
``lds-per-method``) as functions of the records the DAG writes (``attribution.records``), one a label.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from poisonlab.reporting.figures import FIGURES, Runs, _check_runs
from poisonlab.reporting.style import add_caption, style_of


def _image(ax, image: np.ndarray) -> None:
    image = np.asarray(image)
    ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray" if image.shape[-1] == 1 else None,
              vmin=0, vmax=255, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def neighbours_figure(target: np.ndarray, target_label: str, rows: Mapping[str, tuple[np.ndarray, Sequence[str]]],
                      *, caption: str, top: int = 8) -> Figure:
    """``target`` (H, W, C uint8), then per method (a row) its ``top`` training images with their labels."""
    figure = Figure(figsize=(1.0 * (top + 1.4), 1.05 * len(rows) + 0.6), layout="constrained")
    axes = figure.subplots(len(rows), top + 1, squeeze=False)
    for r, (method, (images, labels)) in enumerate(rows.items()):
        target_ax = axes[r, 0]
        if r == 0:
            _image(target_ax, target)
            target_ax.set_title(f"target ({target_label})", fontsize=8)
        else:
            target_ax.axis("off")
        for j in range(top):
            ax = axes[r, j + 1]
            if j < len(images):
                _image(ax, images[j])
                ax.set_title(str(labels[j]), fontsize=7)
                for spine in ax.spines.values():
                    spine.set_edgecolor(style_of("method", method).colour)
                    spine.set_linewidth(1.5)
            else:
                ax.axis("off")
        axes[r, 1].set_ylabel(method, fontsize=8, rotation=0, ha="right", va="center",
                              color=style_of("method", method).colour)
    add_caption(figure, caption)
    return figure


def support_cdf_figure(supports: Mapping[str, Sequence[int | None]], *, max_k: int, kind: str, caption: str) -> Figure:
    """Fraction of targets flipped by removing (relabelling) at most k images, per method; None is "> K"."""
    figure = Figure(figsize=(4.2, 3.0), layout="constrained")
    ax = figure.subplots()
    for method, values in supports.items():
        look = style_of("method", method)
        found = np.sort([v for v in values if v is not None])
        steps = np.concatenate([[0], found, [max_k]])
        fraction = np.concatenate([[0], np.arange(1, len(found) + 1), [len(found)]]) / max(len(values), 1)
        ax.step(steps, fraction, where="post", color=look.colour, label=f"{method} ({len(found)}/{len(values)})")
        ax.plot(found, np.arange(1, len(found) + 1) / max(len(values), 1), look.marker, color=look.colour, ms=4)
    ax.set_xlim(0, max_k)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel(f"{kind} support k (training images)")
    ax.set_ylabel("fraction of targets flipped")
    ax.legend(fontsize=7, frameon=False, loc="lower right")
    add_caption(figure, caption)
    return figure


def lds_figure(lds: Mapping[str, Sequence[float]], *, caption: str) -> Figure:
    """Mean LDS per method (bar) with each target's Spearman correlation (points)."""
    figure = Figure(figsize=(0.8 * len(lds) + 1.6, 3.0), layout="constrained")
    ax = figure.subplots()
    for i, (method, per_target) in enumerate(lds.items()):
        values = np.asarray([v for v in per_target if np.isfinite(v)])
        look = style_of("method", method)
        ax.bar(i, values.mean() if len(values) else 0.0, color=look.colour, alpha=0.5, width=0.6)
        jitter = np.linspace(-0.15, 0.15, len(values)) if len(values) > 1 else np.zeros(len(values))
        ax.plot(i + jitter, values, look.marker, color=look.colour, ms=4, ls="none")
    ax.axhline(0, color="0.5", lw=0.8)
    ax.set_xticks(range(len(lds)), list(lds), rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("LDS (Spearman, held-out subsets)")
    add_caption(figure, caption)
    return figure


# ---------------------------------------------------------------- registered: from the DAG's records


def _first_seed(figure: str, runs: Runs) -> dict[str, dict]:
    """Each label's record of its first seed (the figures show one attribution setting)."""
    _check_runs(figure, runs)
    return {label: json.loads(Path(paths[0]).read_text()) for label, paths in runs.items()}


@FIGURES.register("attribution-neighbours")
def attribution_neighbours(*, runs: Runs, scale: str) -> Figure:
    """The first target and each attributor's top training images, from its ``neighbours.json``."""
    records = _first_seed("attribution-neighbours", runs)
    first = next(iter(records.values()))
    rows = {label: (np.asarray(r["images"], np.uint8), r["labels"]) for label, r in records.items()}
    return neighbours_figure(np.asarray(first["target_image"], np.uint8), first["target_label"], rows,
                             caption=f"{scale} scale · test image {first['target']} · each method's top "
                                     f"{len(first['labels'])} same-class training images")


@FIGURES.register("support-cdf")
def support_cdf(*, runs: Runs, scale: str, kind: str) -> Figure:
    """Support CDFs of every attributor, from its ``support`` summary (``supports``: one a target)."""
    records = _first_seed("support-cdf", runs)
    max_k = max(r["max_k"] for r in records.values())
    return support_cdf_figure({label: r["supports"] for label, r in records.items()}, max_k=max_k, kind=kind,
                              caption=f"{scale} scale · {kind} support of {len(next(iter(records.values()))['supports'])}"
                                      f" targets · K = {max_k}")


@FIGURES.register("lds-per-method")
def lds_per_method(*, runs: Runs, scale: str) -> Figure:
    """Mean LDS and each target's correlation per attributor, from its ``lds.json``."""
    records = _first_seed("lds-per-method", runs)
    first = next(iter(records.values()))
    return lds_figure({label: [np.nan if v is None else v for v in r["per_target"]] for label, r in records.items()},
                      caption=f"{scale} scale · {first['targets']} targets · {first['subsets']} held-out subset models")
