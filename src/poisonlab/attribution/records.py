"""The ssl-attribution record types the tables read (``record: support | lds | cost`` in its grid spec).

Every file lies under one attribution setting (``Paths.attribution_dir``: dataset, attributed arch,
retrain recipe, seed) and is written by a job of ``rules/attribution.smk``:

- ``support``: ``support/{attributor}/{kind}/summary.json``, the support statistics over the targets
  (``jobs.write_support_summary``); median, mean over flipped targets and % flipped within K, with
  bootstrap intervals over targets (``*_ci_low``/``*_ci_high``) and spreads (``*_sd``);
- ``lds``: ``lds/{attributor}/lds.json``, the linear datamodeling score on the held-out subset models;
- ``cost``: ``attributors/{attributor}/cost.json``, what the attribution cost (models, seconds, bytes).

The grid's dataset and arch stand in as a run's do (the paper's CIFAR-10 and ResNet-9 become the
scale's first dataset and arch: ``scales`` of config/papers/ssl-attribution.yaml).
"""

from __future__ import annotations

from typing import Any

from poisonlab.paths import Paths
from poisonlab.records import RECORDS, RecordType, Run
from poisonlab.registry import ConfigError

SETTING = Paths("{data}", "{results}").attribution_dir()
SUPPORT_METRICS = ("median", "median_ci_low", "median_ci_high", "mean_flipped", "mean_flipped_ci_low",
                   "mean_flipped_ci_high", "mean_flipped_sd", "pct_flipped", "pct_flipped_ci_low",
                   "pct_flipped_ci_high", "pct_flipped_sd", "targets", "max_k", "models_trained", "seconds")
LDS_METRICS = ("lds", "lds_se", "subsets", "targets")
COST_METRICS = ("models_trained", "seconds", "attribution_seconds", "bytes", "megabytes", "targets", "k")


def _check_setting(config: dict[str, Any], run: Run) -> None:
    from poisonlab.attribution import ATTRIBUTORS, KINDS
    from poisonlab.models import MODELS

    MODELS.get(run.arch)
    ATTRIBUTORS.get(run.attributor)
    if "kind" in dict(run.fields) and run.kind not in KINDS:
        raise ConfigError(f"unknown support kind '{run.kind}'; allowed: {', '.join(KINDS)}")
    if run.dataset not in config["datasets"]:
        raise ConfigError(f"dataset '{run.dataset}' has no entry under datasets at scale {config['scale']}")
    if run.recipe not in config["recipes"]:
        raise ConfigError(f"unknown recipe '{run.recipe}'; the config defines: {', '.join(sorted(config['recipes']))}")


def _no_other_file(record: str):
    def check(file: str) -> None:
        raise ConfigError(f"the {record} record has one file; '{file}:' names another")

    return check


def _register(name: str, folder: str, axes: tuple[str, ...], file: str, metrics: tuple[str, ...]) -> None:
    RECORDS.register(name)(RecordType(
        pattern=f"{SETTING}/{folder}/{{file}}.json", axes=("dataset", "arch", *axes), defaults={},
        stand_ins={"dataset": "datasets", "arch": "archs"}, default_file=file, metrics=metrics,
        check=_check_setting, check_file=_no_other_file(name)))


_register("support", "support/{attributor}/{kind}", ("attributor", "kind"), "summary", SUPPORT_METRICS)
_register("lds", "lds/{attributor}", ("attributor",), "lds", LDS_METRICS)
_register("cost", "attributors/{attributor}", ("attributor",), "cost", COST_METRICS)
