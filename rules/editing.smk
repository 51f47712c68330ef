# Stage: editing (jpeg-photoguard). Photos → (small-ae training) → immunize, one job a row → the row's JPEG sweep
# (the jpeg-<q> sanitizer at every quality, the edit, the metrics), one job a row and the clean control → tables
# and the figure (rules/tables.smk, rules/figures.smk). Settings: config `editing` (poisonlab.editing.settings).
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


rule editing_photos:
    output:
        photos=PATHS.photos(),
    log:
        f"logs/editing/{PATHS.photos()}.log",
    benchmark:
        f"logs/editing/{PATHS.photos()}.benchmark.tsv",
    params:
        options=lambda wildcards: EDITING.photo_options(wildcards.photos),
    script:
        "../workflow/scripts/editing_photos.py"


rule editing_small_ae:
    output:
        model=f"{SMALL_AE_DIR}/model.pt",
        metrics=f"{SMALL_AE_DIR}/metrics.json",
    log:
        f"logs/editing/{SMALL_AE_DIR}.log",
    benchmark:
        f"logs/editing/{SMALL_AE_DIR}.benchmark.tsv",
    threads: editing_resources("train")["cpus"]
    resources:
        gpu=editing_resources("train")["gpu"],
        runtime=editing_resources("train")["runtime"],
        mem_mb=editing_resources("train")["mem_mb"],
    params:
        options=EDITING.small_ae,
        device=config["device"],
    script:
        "../workflow/scripts/editing_small_ae.py"


rule editing_immunize:
    input:
        photos=PATHS.photos(),
        model=get_autoencoder,
    output:
        immunized=PATHS.immunized(),
    log:
        f"logs/editing/{PATHS.immunized()}.log",
    benchmark:
        f"logs/editing/{PATHS.immunized()}.benchmark.tsv",
    threads: editing_resources("immunize")["cpus"]
    resources:
        gpu=editing_resources("immunize")["gpu"],
        runtime=editing_resources("immunize")["runtime"],
        mem_mb=editing_resources("immunize")["mem_mb"],
    params:
        row=lambda wildcards: EDITING.immunizer(wildcards.immunizer),
        autoencoder=get_autoencoder_params,
        device=config["device"],
    script:
        "../workflow/scripts/editing_immunize.py"


rule editing_sweep:
    input:
        photos=PATHS.photos(),
        immunized=get_immunized,
        model=get_autoencoder,
    output:
        **sweep_records(),
    log:
        f"logs/editing/{EDIT_DIR}/{{immunizer}}.log",
    benchmark:
        f"logs/editing/{EDIT_DIR}/{{immunizer}}.benchmark.tsv",
    threads: editing_resources("sweep")["cpus"]
    resources:
        gpu=editing_resources("sweep")["gpu"],
        runtime=editing_resources("sweep")["runtime"],
        mem_mb=editing_resources("sweep")["mem_mb"],
    params:
        qualities=[jpeg_quality(purifier) for purifier in EDITING.purifiers],
        autoencoder=get_autoencoder_params,
        editor=EDITING.editor,
        device=config["device"],
    script:
        "../workflow/scripts/editing_sweep.py"
