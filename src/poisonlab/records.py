"""Records: the json files tables and figures are built from, and the run's own, ``metrics.json``.

A table cell averages one number over seeds; each seed's number is a key of one
json file. A record type says where those files lie (a pattern of the
configured paths and the record's fields), which fields a grid's rows,
columns and ``fixed`` may set (its axes) and their defaults, which fields a
scale replaces by a stand-in it runs, which numbers its file holds, and how
its names are checked before any job. A grid picks its type by name
(``record: run``, the default, in config/papers/<slug>.yaml); a metric
``"<file>:<key>"`` reads another file of the same record (the run's
evaluations: ``"dfr:final.test_acc_after"`` is ``dfr.json``).

A paper with records of its own registers a type from its own module, beside
the rule that writes the files (an attribution method's support, say)::

    RECORDS.register("support")(RecordType(
        pattern="{results}/attribution/{dataset}/{attributor}/{recipe}/seed{seed}/{file}.json",
        axes=("dataset", "attributor"), defaults={}, stand_ins={"dataset": "datasets"},
        default_file="support", metrics=("removal_drop", "mislabel_found"),
        check=check_support, check_file=check_support_file))

and its tables follow; the table rule, its script and rules/common.smk stay as they are.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypedDict

from poisonlab.paths import Paths
from poisonlab.registry import ConfigError, Registry

# ---------------------------------------------------------------- a run's metrics.json


class RunRecord(TypedDict):
    """``metrics.json`` of a run (DESIGN.md, "Contracts"), every field: accuracies in percent, as the papers print.

    The one definition of the record: training.run writes it, tables read its RUN_METRICS, and the launcher's
    test checks a written record has exactly these fields.
    """

    dataset: str
    poison: str
    defense: str
    arch: str
    recipe: str
    seed: int
    epochs: int
    final_test_acc: float
    peak_test_acc: float
    peak_epoch: int
    history: list[dict[str, float]]  # a row an epoch: epoch, train_loss, train_acc, test_acc, seconds
    wall_seconds: float
    device: str
    precision: str  # what autocast ran in (fp32, bf16), resolved from the recipe and the hardware
    run_key: str  # the MLflow run's tag poisonlab.run_key (tracking.mlflow_run_id finds it)
    git_commit: str
    # How the run was made, beyond the names of its path:
    recipe_config: dict[str, Any]
    defense_options: dict[str, Any]
    dataset_sha256: str
    source_checksum: str
    data_meta: dict[str, Any]  # the training set's making: subset, poison and its options, defense
    host: str
    slurm_job_id: str
    versions: dict[str, str]


RUN_FIELDS = tuple(RunRecord.__annotations__)
# The numbers of metrics.json a table can show.
RUN_METRICS = ("epochs", "final_test_acc", "peak_test_acc", "peak_epoch", "wall_seconds")


# ---------------------------------------------------------------- record types


@dataclass(frozen=True)
class Run:
    """One cell's records: a record type and the names of its fields, one file a seed.

    The fields read like attributes (``run.poison``), as a rule's wildcards do.
    """

    record: str
    fields: tuple[tuple[str, str], ...]  # the record type's axes, then recipe
    seeds: tuple[int, ...]

    def __getattr__(self, name: str) -> str:
        for field, value in self.__dict__.get("fields", ()):
            if field == name:
                return value
        raise AttributeError(f"{self.record} record has no field '{name}'")

    def files(self, paths: Paths, file: str | None = None) -> list[str]:
        """Each seed's json (``file``, or the record's own)."""
        record = RECORDS.get(self.record)
        return [record.pattern.format(data=paths.data, results=paths.results, seed=seed,
                                      file=file or record.default_file, **dict(self.fields))
                for seed in self.seeds]


@dataclass(frozen=True)
class RecordType:
    pattern: str  # {data}, {results} (the configured paths), the fields, {seed} and {file}
    axes: tuple[str, ...]  # the fields a grid sets; every type has a dataset (the tables' contract names it)
    defaults: dict[str, str]  # a field's name where a grid leaves it
    stand_ins: dict[str, str]  # field → the scale setting (datasets, archs) listing what the scale runs
    default_file: str  # the file a metric without "<file>:" reads
    metrics: tuple[str, ...]  # the numbers of that file a table may show
    check: Callable[[dict[str, Any], Run], None]  # a cell's names against the registries and the config
    check_file: Callable[[str], None]  # another file a metric may name ("dfr" of "dfr:final.test_acc_after")

    def resolve(self, fields: dict[str, str], settings: dict[str, Any]) -> dict[str, str]:
        """``fields`` with the defaults, and a dataset or arch the scale does not run replaced by its first."""
        resolved = {**self.defaults, **fields}
        for field, setting in self.stand_ins.items():
            if resolved.get(field) not in settings[setting]:
                resolved[field] = settings[setting][0]
        return resolved

    def run(self, name: str, fields: dict[str, str], settings: dict[str, Any]) -> Run:
        """The records of a cell (``fields``: what its grid set) at the scale's ``settings``."""
        resolved = {**self.resolve(fields, settings), "recipe": settings["recipe"]}
        return Run(name, tuple((field, resolved[field]) for field in (*self.axes, "recipe")),
                   tuple(settings["seeds"]))

    def file(self, metric: str) -> str:
        """The file ``metric`` is read from: its "<file>:" or the record's own."""
        return metric.rpartition(":")[0] or self.default_file

    def check_metric(self, metric: str) -> None:
        file, _, key = metric.rpartition(":")
        if file:
            self.check_file(file)
        elif key not in self.metrics:
            raise ConfigError(f"unknown metric '{metric}'; a {self.default_file}.json key "
                              f"({', '.join(self.metrics)}) or '<file>:<key>'")


RECORDS: Registry[Any] = Registry("record type")


# ---------------------------------------------------------------- the run: metrics.json and its evaluations


def _check_run(config: dict[str, Any], run: Run) -> None:
    from poisonlab.config import get_defense_options
    from poisonlab.data import DATASETS
    from poisonlab.defenses import build_defense
    from poisonlab.models import MODELS
    from poisonlab.poisons import POISONS

    for registry, name in ((DATASETS, run.dataset), (MODELS, run.arch), (POISONS, run.poison)):
        registry.get(name)
    if run.dataset not in config["datasets"]:
        raise ConfigError(f"dataset '{run.dataset}' has no entry under datasets at scale {config['scale']} "
                          f"(defined: {', '.join(sorted(config['datasets']))})")
    if run.recipe not in config["recipes"]:
        raise ConfigError(f"unknown recipe '{run.recipe}'; the config defines: {', '.join(sorted(config['recipes']))}")
    build_defense(run.defense, get_defense_options(config, run.defense, run.dataset))  # raises on bad input


def _check_evaluation(name: str) -> None:
    from poisonlab.evaluation import EVALUATIONS

    EVALUATIONS.get(name)


RECORDS.register("run")(RecordType(
    pattern=Paths("{data}", "{results}").run_dir() + "/{file}.json",
    axes=("dataset", "arch", "poison", "defense"),
    defaults={"poison": "clean", "defense": "none"},
    stand_ins={"dataset": "datasets", "arch": "archs"},
    default_file="metrics",
    metrics=RUN_METRICS,
    check=_check_run,
    check_file=_check_evaluation,
))


# ---------------------------------------------------------------- the papers' own record types

# Imported last, for their RECORDS.register side effects (they import this module's RECORDS and RecordType).
import poisonlab.attribution.records  # noqa: E402,F401
import poisonlab.editing.records  # noqa: E402,F401
import poisonlab.fewshot.records  # noqa: E402,F401
import poisonlab.segmentation.records  # noqa: E402,F401
