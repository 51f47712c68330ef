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
from poisonlab.papers import (
    add_paper_recipes,
    check_papers,
    load_papers,
    load_reported,
    paper_figures,
    paper_tables,
)
from poisonlab.poisons import POISONS
from poisonlab.registry import ConfigError
from poisonlab.reporting.figures import FIGURES

# ---------------------------------------------------------------- config: scale, schema, names


def resolve_config():
    """Merge the scale over the default, validate the schema, then check every name and recipe.

    Returns the papers' configs (config/papers/<slug>.yaml of each name in ``papers``), checked too.
    """
    config_dir = Path(workflow.basedir) / "config"
    try:
        resolved = apply_scale(
            config, config_dir / "scales", workflow.config_settings.overwrite_config
        )
        papers = load_papers(config_dir / "papers", resolved.get("papers", []))
        resolved["recipes"] = add_paper_recipes(resolved, papers)
        config.clear()
        config.update(resolved)
        validate(config, "../config/schema.yaml")
        check_config(config)
        check_papers(papers, config, FIGURES.names())
        return papers
    except ConfigError as error:
        raise WorkflowError(f"config: {error}") from None
    except WorkflowError as error:
        # A schema violation: say the field and the rule broken, not the whole schema.
        cause = error.__context__
        if not isinstance(cause, jsonschema.ValidationError):
            raise
        field = ".".join(map(str, cause.absolute_path)) or "(top level)"
        raise WorkflowError(f"config: {field}: {cause.message}") from None


PAPERS = resolve_config()

DATA = config["paths"]["data"]
RESULTS = config["paths"]["results"]
POISONED = DATA + "/poisoned/{dataset}/{poison}.npz"
SANITIZED = DATA + "/sanitized/{dataset}/{poison}/{defense}.npz"
# The recipe is part of a run's name: the papers train the same cell with different recipes.
RUN_DIR = RESULTS + "/runs/{dataset}/{poison}/{defense}/{arch}/{recipe}/seed{seed}"
# Each table's files, without extension: paper/<slug>/tables/<table>.
TABLES = {
    name: f"paper/baselines/tables/{name}"
    for name in ("baselines", "poisons", "defenses", "defenses-peak", "evaluations")
}
# Each paper's tables and figures at this scale, by (slug, name).
PAPER_TABLES = {
    (slug, table.name): table
    for slug, paper in PAPERS.items()
    for table in paper_tables(slug, paper, config)
}
PAPER_FIGURES = {
    (slug, figure.name): figure
    for slug, paper in PAPERS.items()
    for figure in paper_figures(slug, paper, config)
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
    recipe=one_of(config["recipes"]),
    slug=one_of(PAPERS),
    seed=r"\d+",


# ---------------------------------------------------------------- tracking


onstart:
    # Create the MLflow store once, before any job: concurrent first writers race on its migrations.
    tracking.init_store(
        experiments=[tracking.experiment_name(d) for d in config["datasets"]]
    )
    # Runs of jobs killed in an earlier DAG are closed as KILLED (a rerun resumes into its own run).
    tracking.close_stale_runs(results=config["paths"]["results"])


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
    return get_recipe(config, wildcards.recipe).to_dict()


def get_run_metrics(
    *,
    dataset,
    archs,
    seeds,
    poison="clean",
    defense="none",
    recipe=None,
    file="metrics.json",
):
    """A run's ``file`` (metrics.json, or an evaluation's json) for every arch and seed."""
    return expand(
        f"{RUN_DIR}/{file}",
        dataset=dataset,
        poison=poison,
        defense=defense,
        arch=archs,
        recipe=recipe or config["recipe"],
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
        table_cell(wildcards.table, poison, defense, metric, runs)
        for (poison, defense), runs in get_defense_runs(wildcards).items()
    ]


# The evaluations table's columns: (evaluation, column title, key in the evaluation's json).
EVALUATION_COLUMNS = {
    "peak": [
        ("peak epoch", "peak:peak_epoch"),
        ("epochs to loss threshold", "peak:epochs_to_loss_threshold"),
    ],
    "dfr": [
        ("DFR before", "dfr:final.test_acc_before"),
        ("DFR after", "dfr:final.test_acc_after"),
        ("DFR best after", "dfr:best_after.test_acc_after"),
    ],
    "linsep": [("linear separability", "linsep:train_acc")],
}


def get_evaluation_grid(wildcards):
    return [
        table_cell("evaluations", poison, title, metric, runs)
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


def table_cell(table, row, column, metric, runs, dataset=None, reported=None):
    """A table cell as the table script takes it: the fields of poisonlab.reporting.Cell."""
    return {
        "table": table,
        "row": row,
        "column": column,
        "dataset": dataset or config["dataset"],
        "scale": config["scale"],
        "metric": metric,
        "runs": runs,
        "reported": reported,
    }


# ---------------------------------------------------------------- the papers' tables and figures


def run_files(run, file="metrics.json"):
    """A paper cell's run (poisonlab.papers.Run): its ``file`` for every seed."""
    return get_run_metrics(
        dataset=run.dataset,
        archs=[run.arch],
        seeds=run.seeds,
        poison=run.poison,
        defense=run.defense,
        recipe=run.recipe,
        file=file,
    )


def reported_csv(slug):
    return f"paper/{slug}/reported.csv"


def get_paper_table_inputs(wildcards):
    table = PAPER_TABLES[(wildcards.slug, wildcards.table)]
    runs = [path for cell in table.cells for path in run_files(cell.run, cell.file)]
    reported = reported_csv(wildcards.slug)
    return [*dict.fromkeys(runs), *([reported] if Path(reported).exists() else [])]


def get_paper_table_cells(wildcards):
    table = PAPER_TABLES[(wildcards.slug, wildcards.table)]
    reported = load_reported(reported_csv(wildcards.slug))
    return [
        table_cell(
            table.name,
            cell.row,
            cell.column,
            cell.metric,
            run_files(cell.run, cell.file),
            dataset=cell.run.dataset,
            reported=reported.get((table.name, cell.row, cell.column)),
        )
        for cell in table.cells
    ]


def get_figure_arguments(wildcards):
    """The figure function's keyword arguments: label → run files, or the clean and poisoned containers."""
    figure = PAPER_FIGURES[(wildcards.slug, wildcards.figure)]
    if figure.runs is not None:
        files = {
            label: run_files(run, figure.file) for label, run in figure.runs.items()
        }
        return {"runs": files, **figure.options}
    data = figure.data
    return {
        "clean": f"{DATA}/clean/{data.dataset}.npz",
        "poisoned": get_poisoned_data(data),
        **figure.options,
    }


def get_figure_inputs(wildcards):
    arguments = get_figure_arguments(wildcards)
    if "runs" in arguments:
        return [path for paths in arguments["runs"].values() for path in paths]
    return [arguments["clean"], arguments["poisoned"]]


def get_paper_outputs(slug):
    tables = [
        f"paper/{slug}/tables/{name}.{ext}"
        for (table_slug, name) in PAPER_TABLES
        if table_slug == slug
        for ext in ("csv", "md", "tex")
    ]
    figures = [
        f"paper/{slug}/figures/{name}.{ext}"
        for (figure_slug, name) in PAPER_FIGURES
        if figure_slug == slug
        for ext in ("pdf", "png")
    ]
    return tables + figures


def get_table_files(table):
    return [f"{TABLES[table]}.{ext}" for ext in ("csv", "md", "tex")]


def get_all_tables():
    """The baselines tables asked for in ``tables``, then every paper's tables and figures."""
    baselines = [path for table in config["tables"] for path in get_table_files(table)]
    return baselines + [path for slug in PAPERS for path in get_paper_outputs(slug)]
