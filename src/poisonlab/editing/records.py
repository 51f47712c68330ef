"""jpeg-photoguard's record type (``record: edit`` in its grid spec): one (row, purifier) cell's json.

``{results}/editing/{photos}/{autoencoder}/seed{seed}/{row}/{purifier}.json``, written by the
``editing_sweep`` job of its row (``sweep.row_records``): the row is an immunizer row of
``editing.rows`` or ``none`` (the clean control), the purifier ``none`` or ``jpeg-<q>``. Each holds
the means over photos and, under ``per_photo``, every photo's number; a table's metric
``per_photo.<key>`` makes its cell the mean ± std over photos (``reporting.tables``).

The grid's ``dataset`` is the photo set and its ``arch`` the autoencoder the attack targets and
progress is measured in: the scale's own (``scales`` of config/papers/jpeg-photoguard.yaml), as a
run's dataset and arch stand in.
"""

from __future__ import annotations

from typing import Any

from poisonlab.paths import Paths
from poisonlab.records import RECORDS, RecordType, Run
from poisonlab.registry import ConfigError

# The numbers of a record: the library's per-photo keys (metrics.cell_metrics, metrics.control_metrics).
EDIT_METRICS = tuple(f"{prefix}{key}" for prefix in ("", "per_photo.") for key in (
    "progress", "progress_immunized", "progress_control", "retained", "retained_net", "latent_shift",
    "latent_shift_control", "input_psnr", "input_psnr_control", "input_ssim", "input_ssim_control", "edit_psnr",
    "edit_psnr_control", "edit_ssim", "edit_ssim_control"))


def _check_cell(config: dict[str, Any], run: Run) -> None:
    from poisonlab.editing import AUTOENCODERS, PHOTOSETS
    from poisonlab.editing.settings import EditingSettings, jpeg_quality

    PHOTOSETS.get(run.dataset)
    AUTOENCODERS.get(run.arch)
    settings = EditingSettings.from_config(config)
    settings.photo_options(run.dataset)
    settings.autoencoder_options(run.arch)
    settings.immunizer(run.immunizer)
    if run.immunizer != "none" and run.immunizer not in settings.rows:
        raise ConfigError(f"row '{run.immunizer}' is not in editing.rows ({', '.join(settings.rows)})")
    if run.purifier != "none" and run.purifier not in settings.purifiers:
        jpeg_quality(run.purifier)
        raise ConfigError(f"purifier '{run.purifier}' is not in editing.purifiers ({', '.join(settings.purifiers)})")


def _one_file(file: str) -> None:
    raise ConfigError(f"the edit record has one file; '{file}:' names another")


RECORDS.register("edit")(RecordType(
    pattern=Paths("{data}", "{results}").editing_dir("{dataset}", "{arch}", "{seed}") + "/{immunizer}/{purifier}.json",
    axes=("dataset", "arch", "immunizer", "purifier"),
    defaults={},
    stand_ins={"dataset": "datasets", "arch": "archs"},
    default_file="record",
    metrics=EDIT_METRICS,
    check=_check_cell,
    check_file=_one_file,
))
