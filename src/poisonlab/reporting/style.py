"""The look every figure of every paper shares: one colour and marker a name, captions, facets, labels.

A reader who has learnt that CUDA is the orange diamond in one figure finds it
orange and diamond-marked in every other, in this paper and the next. So a
figure never picks colours from a cycle; it asks ``style_of(kind, name)`` for
the fixed ``Style`` of a poison, defense, model (``arch``) or method (the new
papers' attributors, immunizers, editors, segmentation procedures, few-shot
methods), by its registered name:

- Colours come from Tableau 10, a categorical palette (matplotlib's default
  cycle), plus black for the reference of each kind (the clean poison, no
  defense). Within a family (``FAMILIES``) no colour repeats; across families
  a colour comes back only with another marker, so (colour, marker) is unique
  within a kind.
- A name not in ``STYLES`` (a new registry entry) still gets a fixed style,
  drawn from its name's hash, so it never changes from one figure to the next;
  give it an entry here to make it distinct (``tests/test_style.py`` requires one
  for every registered poison, defense, arch and attributor; add the other
  registries as their papers land). ``jpeg-<q>`` is styled as ``jpeg``.

The rest keeps figures legible at a glance: ``facets`` splits more than
``MAX_LINES`` lines into small multiples by family, ``place_labels`` labels
scatter points without overlaps, ``label_line_ends`` labels lines at their
ends, and ``add_caption`` writes the line saying what was trained on what.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.transforms import Bbox

# Tableau 10, by name so the table below reads.
BLUE, ORANGE, GREEN, RED, PURPLE = "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd"
BROWN, PINK, GRAY, OLIVE, CYAN = "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"
BLACK = "#000000"
PALETTE = (BLUE, ORANGE, GREEN, RED, PURPLE, BROWN, PINK, GRAY, OLIVE, CYAN)
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "p", "h", "<", ">", "d")

MAX_LINES = 8  # more lines than this in one axes are split into facets
# Where a scatter label may go, in points from its point, tried in this order: close first, diagonals first.
LABEL_RADII = (7, 14, 22, 32, 44, 58, 74, 92, 112)
LABEL_CLEARANCE = 8  # points between a label and any point but its own, where there is room
LABEL_ANGLES = (45, 135, -45, -135, 0, 180, 90, -90, 22.5, 157.5, -22.5, -157.5, 67.5, 112.5, -67.5, -112.5)
CAPTION_SIZE = 7


@dataclass(frozen=True)
class Style:
    colour: str
    marker: str


def _styles(entries: dict[str, tuple[str, str]]) -> dict[str, Style]:
    return {name: Style(colour, marker) for name, (colour, marker) in entries.items()}


STYLES: dict[str, dict[str, Style]] = {
    "poison": _styles({
        "clean": (BLACK, "o"),
        "em": (BLUE, "o"), "em-class": (CYAN, "s"), "rem": (PURPLE, "D"),
        "tap": (RED, "^"), "tap-untargeted": (ORANGE, "v"),
        "regions-4": (OLIVE, "P"), "regions-16": (GREEN, "X"), "random-noise": (GRAY, "*"), "lsp": (BROWN, "p"),
        "ops": (PINK, "h"), "random-noise-bernoulli": (PURPLE, "d"),
        "ar": (GREEN, ">"), "ar-linf": (CYAN, "<"), "cuda": (ORANGE, "d"),
    }),
    "defense": _styles({
        "none": (BLACK, "o"),
        "at-linf-4": (CYAN, "^"), "at-linf-8": (BLUE, "^"), "at-linf-16": (PURPLE, "^"), "at-l2": (GREEN, "v"),
        "jpeg": (ORANGE, "s"), "grayscale": (GRAY, "s"), "bdr": (BROWN, "s"), "blur": (OLIVE, "s"),
        "cutout": (RED, "D"), "cutmix": (PINK, "D"), "mixup": (OLIVE, "D"), "ueraser": (BROWN, "D"),
        "rsk": (BLUE, "P"), "ssk": (CYAN, "X"), "ff": (GRAY, "*"), "rsk-ff": (RED, "P"), "ssk-ff": (ORANGE, "X"),
        "ortho": (GREEN, "h"), "pst": (PURPLE, "p"),
    }),
    "arch": _styles({
        "smallcnn": (BLUE, "o"), "resnet18": (ORANGE, "s"), "vgg16": (GREEN, "^"), "densenet121": (RED, "D"),
        "mobilenetv2": (PURPLE, "v"), "vit-small": (BROWN, "P"), "resnet9": (CYAN, "X"), "tinycnn": (GRAY, "*"),
    }),
    "dataset": _styles({
        "mnist5k": (GRAY, "o"), "cifar10": (BLUE, "s"), "cifar10-jpeg": (CYAN, "s"), "cifar100": (ORANGE, "^"),
        "svhn": (GREEN, "D"), "imagenet100": (RED, "v"), "stl10": (PURPLE, "P"),
    }),
    # The new papers' methods, an entry each as it is registered: ssl-attribution's attributors so far.
    "method": _styles({
        "ssl-esvm": (BLUE, "o"), "ssl-knn": (CYAN, "s"), "pixel-knn": (PURPLE, "^"), "trak": (ORANGE, "D"),
        "datamodels": (RED, "v"), "random": (GRAY, "X"),
        "standard": (BLACK, "P"), "sat": (GREEN, "h"), "advprop": (BROWN, "p"),  # robust-seg's training procedures
        # autoprotonet's few-shot methods (ProtoNet, AP, IA, IAP)
        "protonet": (OLIVE, "o"), "autoprotonet": (PINK, "s"), "ae-pretrain": (GRAY, "^"),
        "autoprotonet-ft": (ORANGE, "h"),
    }),
}

# Small-multiple panels: the poisons (defenses) a reader compares with each other, the reference beside each.
FAMILIES: dict[str, dict[str, tuple[str, ...]]] = {
    "poison": {
        "error-minimizing": ("em", "em-class", "rem"),
        "error-maximizing": ("tap", "tap-untargeted"),
        "synthetic noise": ("regions-4", "regions-16", "random-noise", "random-noise-bernoulli", "lsp", "ops"),
        "autoregressive and convolution": ("ar", "ar-linf", "cuda"),
    },
    "defense": {
        "adversarial training": ("at-linf-4", "at-linf-8", "at-linf-16", "at-l2"),
        "compression and filters": ("jpeg", "grayscale", "bdr", "blur"),
        "augmentation": ("cutout", "cutmix", "mixup", "ueraser"),
        "sharpening and frequency": ("rsk", "ssk", "ff", "rsk-ff", "ssk-ff"),
        "training procedures": ("ortho", "pst"),
    },
}
REFERENCE = {"poison": "clean", "defense": "none"}


def _base_name(name: str) -> str:
    """``jpeg-10`` → ``jpeg``: a numbered defense is styled (and grouped) as its family."""
    stem, _, number = name.rpartition("-")
    return stem if stem and number.isdigit() else name


def style_of(kind: str, name: str) -> Style:
    """The fixed colour and marker of ``name`` (a poison, defense, arch, dataset or method)."""
    if kind not in STYLES:
        raise ValueError(f"unknown kind of name '{kind}'; known: {', '.join(STYLES)}")
    table = STYLES[kind]
    for candidate in (name, _base_name(name)):
        if candidate in table:
            return table[candidate]
    digest = int.from_bytes(hashlib.sha256(f"{kind}:{name}".encode()).digest()[:4], "big")
    return Style(PALETTE[digest % len(PALETTE)], MARKERS[(digest // len(PALETTE)) % len(MARKERS)])


def facets(kind: str, names: Sequence[str], max_lines: int = MAX_LINES) -> list[tuple[str, list[int]]]:
    """Panels of ``names`` (a line each) as (title, indices into ``names``): one panel when they fit, else one a
    family, the reference (clean, none) in each.

    A family larger than ``max_lines`` is cut into numbered parts; names of no family form a last panel.
    """
    if len(names) <= max_lines:
        return [("", list(range(len(names))))]
    reference = [i for i, name in enumerate(names) if name == REFERENCE.get(kind)]
    panels: dict[str, list[int]] = {title: [] for title in (*FAMILIES.get(kind, {}), "other")}
    for i, name in enumerate(names):
        if i not in reference:
            family = next((title for title, members in FAMILIES.get(kind, {}).items()
                           if name in members or _base_name(name) in members), "other")
            panels[family].append(i)
    size = max(1, max_lines - len(reference))
    split = []
    for title, members in ((title, members) for title, members in panels.items() if members):
        parts = [members[i:i + size] for i in range(0, len(members), size)]
        split += [(title if len(parts) == 1 else f"{title} ({k + 1})", reference + part)
                  for k, part in enumerate(parts)]
    return split


# ---------------------------------------------------------------- captions


def _listed(values: Sequence) -> str:
    distinct = list(dict.fromkeys(str(value) for value in values))
    return ", ".join(distinct) if distinct else "?"


def caption_of_runs(records: Sequence[dict], *, scale: str) -> str:
    """What the runs drawn were: dataset and scale, model, epochs and recipe, seeds (from their metrics.json)."""
    seeds = sorted({int(record["seed"]) for record in records})
    return (f"{_listed([r['dataset'] for r in records])} ({scale} scale) · model {_listed([r['arch'] for r in records])}"
            f" · {_listed([r['epochs'] for r in records])} epochs, recipe {_listed([r['recipe'] for r in records])}"
            f" · {len(seeds)} seed{'s' if len(seeds) > 1 else ''} ({_listed(seeds)})"
            + ("; mean ± sd over seeds" if len(seeds) > 1 else ""))


def add_caption(figure: Figure, text: str) -> None:
    """The figure's caption line, under everything (constrained layout keeps room for it)."""
    figure.supxlabel(text, fontsize=CAPTION_SIZE, color="0.3")


# ---------------------------------------------------------------- labels


def _pixels(figure: Figure, points: float) -> float:
    return points * figure.dpi / 72


def _overlap(box: Bbox, others: list[Bbox]) -> float:
    return sum(max(0.0, min(box.x1, o.x1) - max(box.x0, o.x0)) * max(0.0, min(box.y1, o.y1) - max(box.y0, o.y0))
               for o in others)


def _distance(box: Bbox, point) -> float:
    """From ``point`` to the nearest point of ``box`` (0 inside it)."""
    x, y = point
    return math.hypot(max(box.x0 - x, 0, x - box.x1), max(box.y0 - y, 0, y - box.y1))


def place_labels(ax: Axes, points: Sequence[tuple[float, float]], labels: Sequence[str], *,
                 fontsize: float = 8, marker_points: float = 6) -> None:
    """Label each point with a text that overlaps no other label, no point, stays inside the axes and keeps
    clear of the other points (so it reads as its own point's).

    Greedy: each label takes the first free spot on rings of growing radius around its point (a thin
    leader line when it had to move away); the crowdest points choose first. Positions are offsets in
    points from the data point, computed on the figure's final layout (set the limits and every other
    artist first), so saving does not move them.
    """
    figure = ax.figure
    figure.draw_without_rendering()
    inside = ax.get_window_extent()
    anchors = ax.transData.transform(points)
    reach = _pixels(figure, marker_points)
    obstacles = [Bbox.from_extents(x - reach, y - reach, x + reach, y + reach) for x, y in anchors]
    crowding = [sum(math.dist(a, b) < 12 * reach for b in anchors) for a in anchors]
    clearance = _pixels(figure, LABEL_CLEARANCE)
    placed: list[Bbox] = []
    for index in sorted(range(len(points)), key=lambda i: -crowding[i]):
        own = [o for k, o in enumerate(obstacles) if k != index]
        best = None  # (cost, offset, box)
        for radius, angle in ((r, a) for r in LABEL_RADII for a in LABEL_ANGLES):
            offset = (radius * math.cos(math.radians(angle)), radius * math.sin(math.radians(angle)))
            text = _annotate(ax, labels[index], points[index], offset, fontsize)
            box = text.get_window_extent().padded(_pixels(figure, 1.5))  # never touching: a little air
            text.remove()
            fits = all((inside.containsx(box.x0), inside.containsx(box.x1), inside.containsy(box.y0),
                        inside.containsy(box.y1)))
            # A label close to another point reads as that point's: keep CLEARANCE from the others if possible.
            crowded = sum(max(0.0, clearance - _distance(box, xy)) for k, xy in enumerate(anchors) if k != index)
            cost = _overlap(box, placed + own) + (0.0 if fits else box.width * box.height) + crowded
            if best is None or cost < best[0]:
                best = (cost, offset, box)
            if cost == 0:
                break
        _annotate(ax, labels[index], points[index], best[1], fontsize, leader=math.hypot(*best[1]) > LABEL_RADII[0])
        placed.append(best[2])


def _annotate(ax: Axes, label: str, point: tuple[float, float], offset: tuple[float, float], fontsize: float,
              leader: bool = False):
    """``label`` at ``offset`` points from ``point``, aligned away from it; a thin gray line back to it if asked."""
    dx, dy = offset
    return ax.annotate(label, point, xytext=offset, textcoords="offset points", fontsize=fontsize,
                       ha="left" if dx > 1 else "right" if dx < -1 else "center",
                       va="bottom" if dy > 1 else "top" if dy < -1 else "center",
                       arrowprops={"arrowstyle": "-", "lw": 0.5, "color": "0.5", "shrinkA": 0, "shrinkB": 3}
                       if leader else None)


def label_line_ends(ax: Axes, ends: Sequence[tuple[float, float, str, str]], *, fontsize: float = 8) -> None:
    """Label lines at their right ends, ``(x, y, label, colour)`` each, moved apart vertically to not overlap.

    Labels sit right of the axes at their line's last value, spread by at least a text line; set the limits
    first (positions are offsets in points, from the figure's final layout).
    """
    figure = ax.figure
    figure.draw_without_rendering()
    spacing = fontsize * 1.45  # a text line and a little air
    heights = [ax.transData.transform((x, y))[1] * 72 / figure.dpi for x, y, _, _ in ends]
    order = sorted(range(len(ends)), key=lambda i: heights[i])
    wanted = [heights[i] for i in order]
    placed = list(wanted)
    for k in range(1, len(placed)):  # push up what sits too close above the one below it
        placed[k] = max(placed[k], placed[k - 1] + spacing)
    shift = (sum(wanted) - sum(placed)) / len(placed) if placed else 0  # then centre the block on the lines
    for k, i in enumerate(order):
        x, y, label, colour = ends[i]
        ax.annotate(label, (x, y), xytext=(6, placed[k] + shift - heights[i]), textcoords="offset points",
                    fontsize=fontsize, color=colour, va="center", ha="left", annotation_clip=False,
                    arrowprops={"arrowstyle": "-", "lw": 0.5, "color": colour, "shrinkA": 0, "shrinkB": 0,
                                "alpha": 0.6})
