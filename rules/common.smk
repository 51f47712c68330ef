# The workflow's Python: config checks, path patterns, wildcard constraints and the input functions
# rules call. What computes lives in src/poisonlab; this only wires names to files.
import re
from pathlib import Path

from snakemake.exceptions import WorkflowError

from poisonlab import stale_runs, tracking
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
from poisonlab.gpus import gpus_present
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

# On one machine Snakemake gives a job no GPU id and, without `--resources gpu=N`, no limit on the jobs that
# ask for one: unless given, the limit is the GPUs present times the scale's runs_per_gpu, and each job
# claims a slot of one, spreading them over the GPUs (poisonlab.gpus). The Slurm profile gives its own
# (a packed job's GPUs).
GPUS_PRESENT = gpus_present()
if "gpu" not in workflow.global_resources and GPUS_PRESENT:
    workflow.register_resource("gpu", GPUS_PRESENT * config["runs_per_gpu"])

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
    stale_runs.close_stale_runs(results=config["paths"]["results"])
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


def get_paper_title(wildcards):
    return GRIDS[wildcards.slug]["title"]


def get_paper_outputs(slug):
    """A grid's tables (csv, md, tex, html, and their cells as DVC metrics) and figures (pdf, png)."""
    tables = [
        path
        for (table_slug, name) in PAPER_TABLES
        if table_slug == slug
        for path in [
            *(
                f"{PATHS.table(slug, name)}.{ext}"
                for ext in ("csv", "md", "tex", "html")
            ),
            PATHS.table_metrics(slug, name),
        ]
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


# ---------------------------------------------------------------- ssl-attribution's attribution stage (rules/attribution.smk)
import dataclasses

from poisonlab.attribution import ATTRIBUTORS, KINDS, SSL_METHODS
from poisonlab.attribution import dag as attribution_dag
from poisonlab.attribution.dag import PARTS, AttributionSettings

try:
    ATTRIBUTION = AttributionSettings.from_config(config)
except ConfigError as error:
    raise WorkflowError(f"config: {error}") from None
SETTING = PATHS.attribution_dir()
SSL_DIR = PATHS.ssl_dir()


wildcard_constraints:
    attributor=one_of(ATTRIBUTORS.names()),
    kind=one_of(KINDS),
    part=one_of(PARTS),
    method=one_of(SSL_METHODS.names()),
    ssl_arch=one_of(MODELS.names()),
    shard=r"\d+",
    target=r"\d+",


def get_ssl_params(wildcards):
    return {**ATTRIBUTION.ssl, "method": wildcards.method, "arch": wildcards.ssl_arch}


def get_backbone(wildcards):
    return attribution_dag.backbone(
        PATHS, wildcards.dataset, wildcards.seed, ATTRIBUTION
    )


def get_reference_models(wildcards):
    w = wildcards
    return attribution_dag.reference_models(
        PATHS, w.dataset, w.arch, w.recipe, ATTRIBUTION
    )


def get_targets_params(wildcards):
    return {
        "arch": wildcards.arch,
        "support": ATTRIBUTION.targets,
        "total": ATTRIBUTION.lds_targets,
        "seed": int(wildcards.seed),
        "precision": get_recipe(config, wildcards.recipe).precision,
        "device": config["device"],
    }


def get_retrain_params(wildcards):
    return {
        "arch": wildcards.arch,
        "recipe": get_recipe_config(wildcards),
        "device": config["device"],
    }


def get_attributor_inputs(wildcards):
    w = wildcards
    return {
        "data": PATHS.clean(w.dataset),
        "targets": f"{PATHS.attribution_dir(w.dataset, w.arch, w.recipe, w.seed)}/targets.json",
        **attribution_dag.attributor_inputs(
            PATHS, w.dataset, w.arch, w.recipe, w.seed, w.attributor, ATTRIBUTION
        ),
    }


def get_support_units(wildcards):
    w = wildcards
    return attribution_dag.support_units(
        PATHS, w.dataset, w.arch, w.recipe, w.seed, w.attributor, w.kind, ATTRIBUTION
    )


def get_heldout_shards(wildcards):
    w = wildcards
    return attribution_dag.subset_shards(
        PATHS, w.dataset, w.arch, w.recipe, w.seed, "heldout", ATTRIBUTION
    )


# ---------------------------------------------------------------- jpeg-photoguard's editing stage (rules/editing.smk)
from poisonlab.editing import AUTOENCODERS, PHOTOSETS
from poisonlab.editing.settings import CONTROL, TRAINED, EditingSettings, jpeg_quality

try:
    EDITING = EditingSettings.from_config(config)
except ConfigError as error:
    raise WorkflowError(f"config: {error}") from None
EDIT_DIR = PATHS.editing_dir()
SMALL_AE_DIR = PATHS.autoencoder_dir(TRAINED)


wildcard_constraints:
    photos=one_of(PHOTOSETS.names()),
    autoencoder=one_of(AUTOENCODERS.names()),
    immunizer=one_of([CONTROL, *EDITING.rows]),


def editing_resources(stage):
    """Threads and scheduler requests of an editing job (config editing.resources.<stage>)."""
    return EDITING.job_resources(stage)


def get_autoencoder(wildcards):
    """The in-pipeline autoencoder's weights (small-ae); the others' come from a configured folder."""
    if wildcards.autoencoder == TRAINED:
        return f"{PATHS.autoencoder_dir(TRAINED, wildcards.seed)}/model.pt"
    return []


def get_autoencoder_params(wildcards):
    options = EDITING.autoencoder_options(wildcards.autoencoder)
    if wildcards.autoencoder == TRAINED:
        options["path"] = get_autoencoder(wildcards)
    return {"name": wildcards.autoencoder, "options": options}


def get_immunized(wildcards):
    """The row's immunized photos; the control row's are the clean photos themselves."""
    if wildcards.immunizer == CONTROL:
        return []
    w = wildcards
    return PATHS.immunized(w.photos, w.autoencoder, w.immunizer, w.seed)


def sweep_records():
    """A row's records: unpurified, then each JPEG quality of editing.purifiers."""
    return {
        purifier: f"{EDIT_DIR}/{{immunizer}}/{purifier}.json"
        for purifier in [CONTROL, *EDITING.purifiers]
    }


# ---------------------------------------------------------------- robust-seg's segmentation stage (rules/segmentation.smk)
from poisonlab.segmentation import SEG_DATASETS, SEG_MODELS, SEG_PROCEDURES
from poisonlab.segmentation.settings import TASKS, SegSettings

try:
    SEGMENTATION = SegSettings.from_config(config)
except ConfigError as error:
    raise WorkflowError(f"config: {error}") from None
SEG_DIR = PATHS.segmentation_dir()


wildcard_constraints:
    segdata=one_of(SEG_DATASETS.names()),
    segarch=one_of(SEG_MODELS.names()),
    procedure=one_of(SEG_PROCEDURES.names()),
    task=one_of(TASKS),


def segmentation_resources(stage):
    """Threads and scheduler requests of a segmentation job (config segmentation.resources.<stage>)."""
    return SEGMENTATION.job_resources(stage)


def get_judges(wildcards):
    """Synthesis's judges: the main job's clean classifier (and its training set, for its normalisation) and
    the standard net of segmentation.judge_seed."""
    c = SEGMENTATION.classifier
    judge = PATHS.segmentation_dir(
        wildcards.segdata,
        wildcards.segarch,
        "standard",
        wildcards.recipe,
        SEGMENTATION.judge_seed,
    )
    classifier = PATHS.run_dir(
        c["dataset"], "clean", "none", c["arch"], config["recipe"], c["seed"]
    )
    return {
        "classifier": f"{classifier}/model.pt",
        "classifier_data": PATHS.clean(c["dataset"]),
        "judge": f"{judge}/model.pt",
        "judge_metrics": f"{judge}/metrics.json",
    }


# ---------------------------------------------------------------- autoprotonet's few-shot stage (rules/fewshot.smk)
from poisonlab.fewshot import METHODS
from poisonlab.fewshot.settings import (
    FINE_TUNED,
    PRETRAINED,
    PROTOTYPE_ROWS,
    FewShotSettings,
)

try:
    FEWSHOT = FewShotSettings.from_config(config)
except ConfigError as error:
    raise WorkflowError(f"config: {error}") from None
FS_DIR = PATHS.fewshot_dir()
FS_AP_DIR = PATHS.fewshot_dir(method=PROTOTYPE_ROWS["AP"])


wildcard_constraints:
    fsdata=one_of(FEWSHOT.datasets),
    fsmethod=one_of(METHODS.names()),
    fsrecipe=one_of(FEWSHOT.recipes),


def fewshot_resources(stage):
    """Threads and scheduler requests of a few-shot job (config fewshot.resources.<stage>)."""
    return FEWSHOT.job_resources(stage)


def get_init_weights(wildcards):
    """IAP (autoprotonet-ft) starts from the IA run of its dataset, recipe and seed; the others from scratch."""
    if wildcards.fsmethod != FINE_TUNED:
        return []
    w = wildcards
    return f"{PATHS.fewshot_dir(w.fsdata, PRETRAINED, w.fsrecipe, w.seed)}/model.pt"


def get_prototype_runs(wildcards):
    """The metrics.json of each row of the decoded-prototype figure (IA, IAP, AP), one seed."""
    w = wildcards
    return {
        label: f"{PATHS.fewshot_dir(w.fsdata, method, w.fsrecipe, w.seed)}/metrics.json"
        for label, method in PROTOTYPE_ROWS.items()
    }
