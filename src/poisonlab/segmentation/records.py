"""robust-seg's record type (``record: seg`` in its grid spec): one segmentation run's json files.

``{results}/segmentation/{dataset}/{arch}/{procedure}/{recipe}/seed{seed}/{file}.json``: ``metrics``
(the training run's, ``train_segmentation``), ``robustness`` (``robustness_run``: ``results.<column>.miou``
and ``.pixel_acc`` per column of ``segmentation.robustness.attacks``), ``inpaint`` and ``generate``
(``synthesis_run``: ``metrics.<key>``). A table's metric names the file: ``robustness:results.pgd.miou``.

The grid's ``dataset`` and ``arch`` are the scale's own (``scales`` of config/papers/robust-seg.yaml),
as a run's stand in; its ``procedure`` is a row.
"""

from __future__ import annotations

from typing import Any

from poisonlab.paths import Paths
from poisonlab.records import RECORDS, RecordType, Run
from poisonlab.registry import ConfigError

FILES = ("robustness", "inpaint", "generate")  # the evaluations' files beside the run's metrics.json


def _check_cell(config: dict[str, Any], run: Run) -> None:
    from poisonlab.segmentation.settings import SegSettings

    settings = SegSettings.from_config(config)
    settings.dataset_options(run.dataset)
    settings.model_options(run.arch)
    settings.procedure_options(run.procedure)
    if run.recipe not in config["recipes"]:
        raise ConfigError(f"unknown recipe '{run.recipe}'; the config defines: {', '.join(sorted(config['recipes']))}")


def _check_file(file: str) -> None:
    if file not in FILES:
        raise ConfigError(f"a seg record's files are metrics and {', '.join(FILES)}; got '{file}:'")


RECORDS.register("seg")(RecordType(
    pattern=Paths("{data}", "{results}").segmentation_dir("{dataset}", "{arch}", "{procedure}", "{recipe}", "{seed}")
    + "/{file}.json",
    axes=("dataset", "arch", "procedure"),
    defaults={"procedure": "standard"},
    stand_ins={"dataset": "datasets", "arch": "archs"},
    default_file="metrics",
    metrics=("final_test_miou", "final_test_acc", "peak_test_acc", "wall_seconds"),
    check=_check_cell,
    check_file=_check_file,
))
