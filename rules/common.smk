# The workflow's Python: config resolution and checks, path patterns, wildcard constraints and the
# input functions rules call. What computes lives in src/poisonlab; this only wires names to files.
import re
from pathlib import Path

import jsonschema
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from poisonlab import tracking
from poisonlab.config import (
    apply_scale,
    check_config,
    get_dataset_options,
    get_defense_options,
    get_evaluation_options,
    get_poison_options,
    get_recipe,
)
from poisonlab.data import DATASETS
from poisonlab.defenses import DEFENSES, NUMBERED, is_sanitizer
from poisonlab.evaluation import EVALUATIONS
from poisonlab.models import MODELS
from poisonlab.poisons import POISONS
from poisonlab.registry import ConfigError

# ---------------------------------------------------------------- config: scale, schema, names


def resolve_config():
    """Merge the scale over the default, validate the schema, then check every name and recipe."""
    scales_dir = Path(workflow.basedir) / "config" / "scales"
    try:
        resolved = apply_scale(
            config, scales_dir, workflow.config_settings.overwrite_config
        )
        config.clear()
        config.update(resolved)
        validate(config, "../config/schema.yaml")
        check_config(config)
    except ConfigError as error:
        raise WorkflowError(f"config: {error}") from None
    except WorkflowError as error:
        # A schema violation: say the field and the rule broken, not the whole schema.
        cause = error.__context__
        if not isinstance(cause, jsonschema.ValidationError):
            raise
        field = ".".join(map(str, cause.absolute_path)) or "(top level)"
        raise WorkflowError(f"config: {field}: {cause.message}") from None


resolve_config()

DATA = config["paths"]["data"]
RESULTS = config["paths"]["results"]
POISONED = DATA + "/poisoned/{dataset}/{poison}.npz"
SANITIZED = DATA + "/sanitized/{dataset}/{poison}/{defense}.npz"
RUN_DIR = RESULTS + "/runs/{dataset}/{poison}/{defense}/{arch}/seed{seed}"
# Each table's files, without extension: paper/<slug>/tables/<table>.
TABLES = {
    name: f"paper/baselines/tables/{name}"
    for name in ("baselines", "poisons", "defenses", "defenses-peak", "evaluations")
}


def one_of(names):
    return "|".join(re.escape(name) for name in names)


wildcard_constraints:
    dataset=one_of(DATASETS.names()),
    arch=one_of(MODELS.names()),
    poison=one_of(POISONS.names()),
    defense="|".join(
        [one_of(DEFENSES.names()), *(rf"{re.escape(name)}-\d+" for name in NUMBERED)]
    ),
    evaluation=one_of(EVALUATIONS.names()),
    seed=r"\d+",


# ---------------------------------------------------------------- tracking


onstart:
    # Create the MLflow store once, before any job: concurrent first writers race on its migrations.
    tracking.init_store(
        experiments=[tracking.experiment_name(d) for d in config["datasets"]]
    )


# ---------------------------------------------------------------- input functions


def get_dataset_params(wildcards):
    options, subset = get_dataset_options(config, wildcards.dataset)
    return {"options": options, "subset": subset}


def get_poison_params(wildcards):
    return {
        "options": get_poison_options(config, wildcards.poison, wildcards.dataset),
        "seed": config["poison_seed"],
    }


def poison_resources(wildcards):
    """Poisons that train a surrogate model (EM, TAP, REM) get the GPU resources of the scale."""
    uses_surrogate = "surrogate" in POISONS.options(wildcards.poison)
    return config["resources"]["poison_surrogate" if uses_surrogate else "poison"]


def get_poisoned_data(wildcards):
    """The training set as poisoned (the clean container itself for poison=clean)."""
    if wildcards.poison == "clean":
        return f"{DATA}/clean/{wildcards.dataset}.npz"
    return POISONED.format(dataset=wildcards.dataset, poison=wildcards.poison)


def get_defense_params(wildcards):
    return {
        "options": get_defense_options(config, wildcards.defense, wildcards.dataset),
        "seed": config["defense_seed"],
    }


def get_training_data(wildcards):
    """What a run trains on: the sanitized set for a data-level defense, else the poisoned one."""
    options = get_defense_options(config, wildcards.defense, wildcards.dataset)
    if is_sanitizer(wildcards.defense, options):
        return SANITIZED.format(**wildcards)
    return get_poisoned_data(wildcards)


def get_evaluation_params(wildcards):
    return get_evaluation_options(config, wildcards.evaluation, wildcards.dataset)


def get_recipe_config(wildcards):
    return get_recipe(config, config["recipe"]).to_dict()


def get_run_metrics(
    *, dataset, archs, seeds, poison="clean", defense="none", file="metrics.json"
):
    """A run's ``file`` (metrics.json, or an evaluation's json) for every arch and seed."""
    return expand(
        f"{RUN_DIR}/{file}",
        dataset=dataset,
        poison=poison,
        defense=defense,
        arch=archs,
        seed=seeds,
    )


def get_baseline_runs(wildcards):
    return {
        arch: get_run_metrics(
            dataset=config["dataset"], archs=[arch], seeds=config["seeds"]
        )
        for arch in config["archs"]
    }


def get_poison_runs(wildcards):
    """The poisons table: every configured poison (clean first) on the scale's first arch."""
    return {
        poison: get_run_metrics(
            dataset=config["dataset"],
            archs=config["archs"][:1],
            seeds=config["seeds"],
            poison=poison,
        )
        for poison in ["clean", *config["poisons"]]
    }


def get_defense_runs(wildcards):
    """(poison, defense) → that run's metrics.json on the scale's first arch, every seed."""
    return {
        (poison, defense): get_run_metrics(
            dataset=config["dataset"],
            archs=config["archs"][:1],
            seeds=config["seeds"],
            poison=poison,
            defense=defense,
        )
        for poison in ["clean", *config["poisons"]]
        for defense in config["defenses"]
    }


def get_defense_grid(wildcards):
    """defenses: final test accuracy of each (poison, defense); defenses-peak: the peak."""
    metric = {"defenses": "final_test_acc", "defenses-peak": "peak_test_acc"}[
        wildcards.table
    ]
    return [
        {"row": poison, "column": defense, "metric": metric, "runs": runs}
        for (poison, defense), runs in get_defense_runs(wildcards).items()
    ]


# The evaluations table's columns: (evaluation, column title, key in the evaluation's json).
EVALUATION_COLUMNS = {
    "peak": [
        ("peak epoch", "peak_epoch"),
        ("epochs to loss threshold", "epochs_to_loss_threshold"),
    ],
    "dfr": [
        ("DFR before", "final.test_acc_before"),
        ("DFR after", "final.test_acc_after"),
        ("DFR best after", "best_after.test_acc_after"),
    ],
    "linsep": [("linear separability", "train_acc")],
}


def get_evaluation_grid(wildcards):
    return [
        {"row": poison, "column": title, "metric": metric, "runs": runs}
        for (poison, evaluation), runs in get_evaluation_runs(wildcards).items()
        for title, metric in EVALUATION_COLUMNS[evaluation]
    ]


def get_evaluation_runs(wildcards):
    """(poison, evaluation) → the evaluation's json of the undefended run, every seed."""
    return {
        (poison, evaluation): get_run_metrics(
            dataset=config["dataset"],
            archs=config["archs"][:1],
            seeds=config["seeds"],
            poison=poison,
            file=f"{evaluation}.json",
        )
        for poison in ["clean", *config["poisons"]]
        for evaluation in config["evaluations"]
    }


def get_table_files(table):
    return [f"{TABLES[table]}.{ext}" for ext in ("csv", "md", "tex")]


def get_all_tables():
    return [path for table in config["tables"] for path in get_table_files(table)]
