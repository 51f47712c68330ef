"""The JPEG sweep of one photo set: every immunizer × every quality, each cell beside its clean control.

``jpeg_sweep`` is the whole experiment of the embedded and ``photos`` scales in one call (what a
single DAG job runs, and what the timings in ``paper/jpeg-photoguard/README.md`` measure); the DAG
may equally run its stages one a job — ``immunize.immunize_photos``, ``purify.jpeg_photos``,
``metrics.cell_metrics`` — which is all this does. ``none`` (the clean photos) is always immunized
too: its JPEG copies are the controls.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from poisonlab.editing.autoencoders import LatentAutoencoder
from poisonlab.editing.edits import Editor
from poisonlab.editing.immunize import immunize_photos, next_photos, target_photos
from poisonlab.editing.metrics import cell_metrics, control_metrics, summarize
from poisonlab.editing.photos import PhotoSet
from poisonlab.editing.purify import QUALITIES, jpeg_photos

NO_JPEG = "none"  # the quality column of the unpurified immunized photos


def jpeg_sweep(photos: PhotoSet, model: LatentAutoencoder, editor: Editor,
               immunizers: dict[str, tuple[str, dict[str, Any]]], *, qualities: tuple[int, ...] = QUALITIES,
               seed: int = 0, attacked=None) -> tuple[list[dict[str, Any]], dict]:
    """Every row of ``immunizers`` (table row → (registered immunizer, its options), e.g.
    ``{"encoder-eps8": ("encoder", {"epsilon": 8 / 255, ...})}``) at every quality. ``model`` is the
    autoencoder progress is measured in; ``attacked`` what the immunizers attack, when not ``model``
    (the diffusion attack's ``SDModel``, whose VAE is ``model``).

    Returns the records (one a cell: row, immunizer, quality, per-photo values, means ± std) and the
    image sets (``{(row, quality): PhotoSet}``, quality ``"none"`` before JPEG; row ``"none"`` the
    clean photos) for the figure.
    """
    sets: dict[tuple[str, Any], PhotoSet] = {}
    seconds: dict[str, float] = {}
    for row, (name, options) in {"none": ("none", {}), **immunizers}.items():
        started = time.perf_counter()
        sets[row, NO_JPEG] = immunize_photos(photos, name, attacked or model, options=options, seed=seed)
        seconds[row] = time.perf_counter() - started
        for quality in qualities:
            sets[row, quality] = jpeg_photos(sets[row, NO_JPEG], quality)

    records = []
    for row in immunizers:
        for record in row_records(photos, sets[row, NO_JPEG], model, editor, row=row, qualities=qualities):
            records.append({**record, "immunize_seconds": seconds[row]})
    return records, sets


def row_records(photos: PhotoSet, immunized: PhotoSet | None, model: LatentAutoencoder, editor: Editor, *, row: str,
                qualities: tuple[int, ...] = QUALITIES, device: str | torch.device = "cpu") -> list[dict[str, Any]]:
    """The records of one row (one DAG job): unpurified, then JPEG at each quality, in that order.

    ``immunized``: the row's set from ``immunize_photos``; None for the control row (the clean photos,
    numbers from ``metrics.control_metrics``, progress towards the targeted rows' goal, the next photo).
    Each record: row, immunizer and its options, ``purifier`` (``none`` or ``jpeg-<q>``) and its quality,
    autoencoder, editor, seed, photos, means ± std over photos and every photo's number (``per_photo``).
    ``device``: where ``model`` is and the metrics are computed (JPEG runs on the CPU, as the sanitizer does).
    """
    clean, masks = photos.tensor(device), photos.mask_tensor(device)
    prompts = None if photos.prompts is None else list(photos.prompts)
    meta = {} if immunized is None else immunized.meta
    targets = next_photos(clean) if immunized is None else target_photos(photos, immunized)
    targets = None if targets is None else targets.to(device)
    records = []
    for quality in (NO_JPEG, *qualities):
        purified_clean = clean if quality == NO_JPEG else jpeg_photos(photos, quality).tensor(device)
        if immunized is None:
            per_photo = control_metrics(model, editor, clean=clean, purified_clean=purified_clean, targets=targets,
                                        masks=masks, prompts=prompts)
        else:
            purified = immunized if quality == NO_JPEG else jpeg_photos(immunized, quality)
            per_photo = cell_metrics(model, editor, clean=clean, immunized=immunized.tensor(device),
                                     purified=purified.tensor(device), purified_clean=purified_clean, targets=targets,
                                     masks=masks, prompts=prompts)
        records.append({"row": row, "immunizer": meta.get("immunizer", "none"),
                        "immunizer_options": meta.get("immunizer_options", {}),
                        "purifier": NO_JPEG if quality == NO_JPEG else f"jpeg-{quality}", "jpeg_quality": quality,
                        "autoencoder": model.name, "editor": editor.name, "seed": meta.get("immunizer_seed"),
                        "photos": list(photos.names), **summarize(per_photo), "per_photo": per_photo})
    return records
