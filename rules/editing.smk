# Stage: editing (jpeg-photoguard). Photos → (small-ae training) → immunize, one job a row → the row's JPEG sweep
# (the jpeg-<q> sanitizer at every quality, the edit, the metrics), one job a row and the clean control → tables
# and the figure (rules/tables.smk, rules/figures.smk). Settings: config `editing` (poisonlab.editing.settings).


rule editing_photos:
    output:
        photos=PATHS.photos(),
    log:
        f"logs/editing/{PATHS.photos()}.log",
    benchmark:
        f"logs/editing/{PATHS.photos()}.benchmark.tsv"
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
        f"logs/editing/{SMALL_AE_DIR}.benchmark.tsv"
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
        f"logs/editing/{PATHS.immunized()}.benchmark.tsv"
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
        f"logs/editing/{EDIT_DIR}/{{immunizer}}.benchmark.tsv"
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
