"""jpeg-photoguard's settings (config key ``editing``) and what each of its DAG jobs is given.

``rules/editing.smk`` only wires these to rules. The photo set and the autoencoder a cell uses are
the grid's ``dataset`` and ``arch`` (config/papers/jpeg-photoguard.yaml, per scale); this holds
their options, the immunizer rows, the JPEG qualities and the editor:

- ``photos``: per photo set, its loader's options (``skimage-photos``: count, size; ``folder``: path, size);
- ``autoencoders``: per autoencoder, its options (``taef2``, ``sd-vae``: path); ``small-ae`` is trained
  by the pipeline with ``small_ae``'s options, and its ``model.pt`` is its path;
- ``rows`` (the tables' rows, in order) and ``immunizers``: row → registered immunizer, its options,
  and for the diffusion attack the Stable Diffusion folder it attacks (``sd: {path, kind}``);
- ``purifiers``: the JPEG sweep as the project's sanitizer names (``jpeg-<q>``), the tables' columns;
- ``editor``: the edit every input gets (``roundtrip`` through the cell's autoencoder, or an SD editor).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from poisonlab.checks import job_resources, section_entry
from poisonlab.registry import ConfigError

CONTROL = "none"  # the clean photos: the control row, always computed
TRAINED = "small-ae"  # the autoencoder the pipeline trains itself
_JPEG = re.compile(r"jpeg-(\d+)")


def jpeg_quality(purifier: str) -> int | None:
    """The quality of ``jpeg-<q>``; None for ``none`` (the unpurified input)."""
    if purifier == CONTROL:
        return None
    match = _JPEG.fullmatch(purifier)
    if match is None or not 1 <= int(match[1]) <= 100:
        raise ConfigError(f"editing: purifier '{purifier}' must be jpeg-<q> with q in 1..100 (the jpeg-<q> sanitizer)")
    return int(match[1])


@dataclass(frozen=True)
class EditingSettings:
    photos: dict[str, dict[str, Any]] = field(default_factory=dict)
    autoencoders: dict[str, dict[str, Any]] = field(default_factory=dict)
    small_ae: dict[str, Any] = field(default_factory=dict)
    rows: tuple[str, ...] = ()
    immunizers: dict[str, dict[str, Any]] = field(default_factory=dict)
    purifiers: tuple[str, ...] = ()
    editor: dict[str, Any] = field(default_factory=lambda: {"name": "roundtrip"})
    resources: dict[str, dict[str, int]] = field(default_factory=dict)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> EditingSettings:
        values = dict(config.get("editing") or {})
        settings = cls(**{**values, "rows": tuple(values.get("rows", ())),
                          "purifiers": tuple(values.get("purifiers", ()))})
        settings.check()
        return settings

    def check(self) -> None:
        from poisonlab.editing import EDITORS, build_immunizer

        for purifier in self.purifiers:
            if jpeg_quality(purifier) is None:
                raise ConfigError("editing: purifiers lists the JPEG qualities; 'none' (no JPEG) is always a column")
        for row in self.rows:
            if row == CONTROL:
                raise ConfigError(f"editing: rows: '{CONTROL}' is the clean control, always computed; list the attacks")
            self.immunizer(row)
        EDITORS.get(self.editor.get("name", ""))
        for row, spec in self.immunizers.items():
            unknown = sorted(set(spec) - {"immunizer", "options", "sd"})
            if unknown or "immunizer" not in spec:
                raise ConfigError(f"editing: immunizers: {row} needs 'immunizer' and may have 'options', 'sd'; "
                                  f"got {', '.join(sorted(spec))}")
            build_immunizer(spec["immunizer"], **spec.get("options", {}))  # raises on a bad option

    def immunizer(self, row: str) -> dict[str, Any]:
        """Row → {immunizer, options, sd}; the control row is the ``none`` immunizer."""
        if row == CONTROL:
            return {"immunizer": "none", "options": {}}
        return {"options": {}, **section_entry("editing", "immunizers", "row", row, self.immunizers)}

    def photo_options(self, photos: str) -> dict[str, Any]:
        return section_entry("editing", "photos", "photo set", photos, self.photos)

    def autoencoder_options(self, autoencoder: str) -> dict[str, Any]:
        if autoencoder == TRAINED:
            return {}
        return section_entry("editing", "autoencoders", "autoencoder", autoencoder, self.autoencoders,
                             hint="a path to its weights; ")

    def job_resources(self, stage: str) -> dict[str, int]:
        return job_resources(self.resources, stage)
