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

from poisonlab.editing.autoencoders import LatentAutoencoder
from poisonlab.editing.edits import Editor
from poisonlab.editing.immunize import immunize_photos, target_photos
from poisonlab.editing.metrics import cell_metrics, summarize
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

    clean, masks = photos.tensor(), photos.mask_tensor()
    prompts = None if photos.prompts is None else list(photos.prompts)
    records = []
    for row, (name, options) in immunizers.items():
        targets = target_photos(photos, sets[row, NO_JPEG])
        for quality in (NO_JPEG, *qualities):
            per_photo = cell_metrics(model, editor, clean=clean, immunized=sets[row, NO_JPEG].tensor(),
                                     purified=sets[row, quality].tensor(),
                                     purified_clean=sets["none", quality].tensor(),
                                     targets=targets, masks=masks, prompts=prompts)
            records.append({"row": row, "immunizer": name, "immunizer_options": options, "jpeg_quality": quality,
                            "autoencoder": model.name, "editor": editor.name, "seed": seed,
                            "photos": list(photos.names), "immunize_seconds": seconds[row],
                            **summarize(per_photo), "per_photo": per_photo})
    return records, sets
