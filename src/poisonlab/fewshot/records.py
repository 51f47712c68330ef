"""autoprotonet's record type (``record: fewshot`` in its grid spec): one few-shot run's json files.

``{results}/fewshot/{dataset}/{method}/{recipe}/seed{seed}/{file}.json``: ``metrics`` (``train_fewshot_run``),
``evaluation`` (``evaluate_fewshot_run``: ``results.<shot>-shot.acc`` and ``.ci95``), and in the AutoProtoNet
run's folder ``refinement`` (``refinement_run``: ``before.acc``, ``after.acc``, ``per_i.<i>.acc``) and
``prototypes`` (the decoded prototypes of IA, IAP and AP). A table's metric names the file:
``evaluation:results.1-shot.acc``.

The grid's ``dataset`` is the scale's own (``scales`` of config/papers/autoprotonet.yaml, as a run's stand-in),
its ``method`` a row; the recipe is the scale's, a name of config ``fewshot.recipes``.
"""

from __future__ import annotations

from typing import Any

from poisonlab.paths import Paths
from poisonlab.records import RECORDS, RecordType, Run
from poisonlab.registry import ConfigError

FILES = ("evaluation", "refinement", "prototypes")  # the files beside a run's metrics.json


def _check_cell(config: dict[str, Any], run: Run) -> None:
    from poisonlab.fewshot.settings import FewShotSettings

    settings = FewShotSettings.from_config(config)
    settings.dataset_options(run.dataset)
    settings.recipe(run.recipe, run.method)


def _check_file(file: str) -> None:
    if file not in FILES:
        raise ConfigError(f"a fewshot record's files are metrics and {', '.join(FILES)}; got '{file}:'")


RECORDS.register("fewshot")(RecordType(
    pattern=Paths("{data}", "{results}").fewshot_dir("{dataset}", "{method}", "{recipe}", "{seed}") + "/{file}.json",
    axes=("dataset", "method"),
    defaults={"method": "autoprotonet"},
    stand_ins={"dataset": "datasets"},
    default_file="metrics",
    metrics=("final_train_loss", "selected_epoch", "wall_seconds"),
    check=_check_cell,
    check_file=_check_file,
))
