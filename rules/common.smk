# The workflow's Python: config checks, path patterns, wildcard constraints and the input functions
# rules call. What computes lives in src/poisonlab; this only wires names to files.
import re
from pathlib import Path

from snakemake.exceptions import WorkflowError

from poisonlab import tracking
from poisonlab.config import (
    get_dataset_options,
    get_defense_options,
    get_evaluation_options,
    get_poison_options,
    get_recipe,
    resolve,
)
from poisonlab.data import DATASETS
from poisonlab.defenses import DEFENSES
from poisonlab.evaluation import EVALUATIONS
from poisonlab.models import MODELS
from poisonlab.papers import (
    load_reported,
    paper_figures,
    paper_tables,
    table_cells,
    table_files,
)
from poisonlab.paths import Paths, training_data
from poisonlab.poisons import POISONS
from poisonlab.registry import ConfigError

# ---------------------------------------------------------------- config: schema, names


def resolve_config():
    """The config (the Snakefile merged the scale's file into it) checked before any job: schema (its name
    enums from the registries), every name, option value and recipe (poisonlab.config.resolve).

    Returns the grid specs all_tables builds (config/papers/<slug>.yaml: baselines with the tables
    ``tables`` names, then each of ``papers``), checked too.
    """
    try:
        return resolve(config, workflow.basedir)
    except ConfigError as error:
        raise WorkflowError(f"config: {error}") from None


GRIDS = resolve_config()

PATHS = Paths.from_config(config)
RUN_DIR = PATHS.run_dir()
# Each grid's tables and figures at this scale, by (slug, name).
PAPER_TABLES = {
    (slug, table.name): table
    for slug, grid in GRIDS.items()
    for table in paper_tables(slug, grid, config)
}
PAPER_FIGURES = {
    (slug, figure.name): figure
    for slug, grid in GRIDS.items()
    for figure in paper_figures(slug, grid, config)
}


def one_of(names):
    return "|".join(re.escape(name) for name in names)


wildcard_constraints:
    dataset=one_of(DATASETS.names()),
    arch=one_of(MODELS.names()),
    poison=one_of(POISONS.names()),
    defense=DEFENSES.pattern(),
    evaluation=one_of(EVALUATIONS.names()),
    recipe=one_of(config["recipes"]),
    slug=one_of(GRIDS),
    seed=r"\d+",


# ---------------------------------------------------------------- tracking


# Jobs write MLflow journals (no MLflow import in a job: poisonlab.tracking); this process replays them
# into the store at the start, every few seconds while jobs run, and at the end.
onstart:
    tracking.init_store(
        experiments=[tracking.experiment_name(d) for d in config["datasets"]]
    )
    tracking.sync()  # what an earlier, killed DAG left unreplayed
    # Runs of jobs killed in an earlier DAG are closed as KILLED (a rerun resumes into its own run).
    tracking.close_stale_runs(results=config["paths"]["results"])
    tracking.sync_in_background()


onsuccess:
    tracking.sync()


onerror:
    tracking.sync()


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
    """Poisons registered as needing a GPU (they train a surrogate: EM, TAP, REM) get the scale's GPU resources."""
    needs_gpu = POISONS.facts(wildcards.poison)["gpu"]
    return config["resources"]["poison_surrogate" if needs_gpu else "poison"]


def get_poisoned_data(wildcards):
    """The training set as poisoned (the clean container itself for poison=clean)."""
    return PATHS.poisoned_or_clean(wildcards.dataset, wildcards.poison)


def get_defense_params(wildcards):
    return {
        "options": get_defense_options(config, wildcards.defense, wildcards.dataset),
        "seed": config["defense_seed"],
    }


def get_training_data(wildcards):
    """What a run trains on: the sanitized set for a data-level defense, else the poisoned one."""
    return training_data(config, wildcards.dataset, wildcards.poison, wildcards.defense)


def get_evaluation_params(wildcards):
    return get_evaluation_options(config, wildcards.evaluation, wildcards.dataset)


def get_recipe_config(wildcards):
    return get_recipe(config, wildcards.recipe).to_dict()


# ---------------------------------------------------------------- tables and figures of every grid


def reported_csv(slug):
    return f"paper/{slug}/reported.csv"


def get_table_inputs(wildcards):
    """Every record the table reads, and the paper's reported numbers where it has them."""
    table = PAPER_TABLES[(wildcards.slug, wildcards.table)]
    reported = reported_csv(wildcards.slug)
    return [
        *table_files(table, PATHS),
        *([reported] if Path(reported).exists() else []),
    ]


def get_table_cells(wildcards):
    table = PAPER_TABLES[(wildcards.slug, wildcards.table)]
    reported = load_reported(reported_csv(wildcards.slug))
    return table_cells(table, PATHS, config["scale"], reported)


def get_figure_arguments(wildcards):
    """The figure function's keyword arguments: label → run files, or the clean and poisoned containers."""
    figure = PAPER_FIGURES[(wildcards.slug, wildcards.figure)]
    if figure.runs is not None:
        files = {
            label: run.files(PATHS, figure.file) for label, run in figure.runs.items()
        }
        return {"runs": files, **figure.options}
    data = figure.data
    return {
        "clean": PATHS.clean(data.dataset),
        "poisoned": PATHS.poisoned_or_clean(data.dataset, data.poison),
        **figure.options,
    }


def get_figure_inputs(wildcards):
    arguments = get_figure_arguments(wildcards)
    if "runs" in arguments:
        return [path for paths in arguments["runs"].values() for path in paths]
    return [arguments["clean"], arguments["poisoned"]]


def get_paper_outputs(slug):
    """A grid's tables (csv, md, tex) and figures (pdf, png)."""
    tables = [
        f"{PATHS.table(slug, name)}.{ext}"
        for (table_slug, name) in PAPER_TABLES
        if table_slug == slug
        for ext in ("csv", "md", "tex")
    ]
    figures = [
        f"{PATHS.figure(slug, name)}.{ext}"
        for (figure_slug, name) in PAPER_FIGURES
        if figure_slug == slug
        for ext in ("pdf", "png")
    ]
    return tables + figures


def get_all_tables():
    """The baselines tables asked for in ``tables``, then every paper's tables and figures."""
    return [path for slug in GRIDS for path in get_paper_outputs(slug)]
