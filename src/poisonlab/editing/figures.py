"""The paper's figure: source | immunized | JPEG at each quality, and under each input its edited output.

The paper (arXiv 2304.02234) shows an immunized photo saved at falling JPEG qualities and what the
editor makes of each; here every photo takes two rows — the inputs, then the editor's output of each
input (the autoencoder round trip at the embedded scale, an SD edit at the paper scale) — and each
panel's title carries its input PSNR against the source (top) or the latent progress towards the
target (bottom), so the figure is read against the tables. The look (caption) is the shared
``reporting.style``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from poisonlab.editing.autoencoders import build_autoencoder
from poisonlab.editing.edits import Editor, build_editor
from poisonlab.editing.immunize import target_photos
from poisonlab.editing.metrics import encode, progress
from poisonlab.editing.photos import PhotoSet
from poisonlab.editing.purify import jpeg_photos
from poisonlab.image_quality import psnr
from poisonlab.reporting import style
from poisonlab.reporting.figures import FIGURES


def examples_figure(source: PhotoSet, immunized: PhotoSet, purified: dict[int, PhotoSet], editor: Editor, *,
                    model=None, targets: torch.Tensor | None = None, photos: Sequence[int] = (0,),
                    caption: str = "") -> Figure:
    """Two rows a photo of ``photos`` (indices): inputs and edited outputs; ``purified``: quality → JPEG'd
    immunized set. With ``model``, the bottom titles give the latent progress towards ``targets`` (None:
    the zero latent)."""
    qualities = sorted(purified, reverse=True)
    columns = [("source", source), ("immunized", immunized), *((f"JPEG q{q}", purified[q]) for q in qualities)]
    figure = Figure(figsize=(1.3 * len(columns), 2.7 * len(photos)), layout="constrained")
    axes = figure.subplots(2 * len(photos), len(columns), squeeze=False)
    clean = source.tensor()[list(photos)]
    masks = None if source.masks is None else source.mask_tensor()[list(photos)]
    prompts = None if source.prompts is None else [source.prompts[i] for i in photos]
    goal = None
    if model is not None:
        z_clean = encode(model, clean)
        goal = encode(model, targets[list(photos)]) if targets is not None else torch.zeros_like(z_clean)
    for column, (title, images) in enumerate(columns):
        inputs = images.tensor()[list(photos)]
        edited = editor.apply(inputs, masks=masks, prompts=prompts)
        input_psnr = psnr(inputs, clean)
        moved = progress(encode(model, inputs), z_clean, goal) if model is not None else None
        for row, photo in enumerate(photos):
            top, bottom = axes[2 * row, column], axes[2 * row + 1, column]
            for ax, picture in ((top, inputs[row]), (bottom, edited[row])):
                ax.imshow(np.asarray(picture.permute(1, 2, 0).clamp(0, 1)), interpolation="nearest")
                ax.set_xticks([]), ax.set_yticks([])
            top.set_title(title if column == 0 else f"{title}\n{min(float(input_psnr[row]), 99):.1f} dB", fontsize=7)
            bottom.set_title(f"{editor.name}" + ("" if moved is None else f"\np {float(moved[row]):.2f}"), fontsize=7)
            if column == 0:
                top.set_ylabel(str(source.names[photo]), fontsize=7)
    if caption:
        style.add_caption(figure, caption)
    return figure


@FIGURES.register("editing-examples")
def editing_examples(*, runs: dict[str, list[str]], scale: str, photos: Sequence[int] = (0,)) -> Figure:
    """``examples_figure`` of one immunizer row from its sweep records (``runs``: purifier → its record, one a
    seed; the first seed's is drawn). A record names its inputs (photo sets, autoencoder); the JPEG'd sets are
    made again (the sanitizer is deterministic) and the edit is the autoencoder's round trip at every scale."""
    records = [json.loads(Path(paths[0]).read_text()) for paths in runs.values()]
    first = records[0]
    inputs = first["inputs"]
    source, immunized = PhotoSet.load(inputs["photos"]), PhotoSet.load(inputs["immunized"])
    model = build_autoencoder(inputs["autoencoder"]["name"], **inputs["autoencoder"]["options"])
    purified = {r["jpeg_quality"]: jpeg_photos(immunized, r["jpeg_quality"]) for r in records
                if r["jpeg_quality"] != "none"}
    caption = (f"{scale} scale · row {first['row']} ({first['immunizer']}) against {first['autoencoder']} · "
               f"bottom: its round trip, p = progress towards the target latent")
    return examples_figure(source, immunized, purified, build_editor("roundtrip", model), model=model,
                           targets=target_photos(source, immunized), photos=tuple(photos), caption=caption)
