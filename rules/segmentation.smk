# Stage: segmentation (robust-seg). Canvases (or a user's VOC / Cityscapes) → one training job a (procedure, seed),
# resumable, with its MLflow run → one robustness job a net (clean, BIM-k, PGD) and one synthesis job a (net, task)
# (inpaint, generate; judged by the main job's classifier and a standard net of another seed) → tables and figures
# (rules/tables.smk, rules/figures.smk). Settings: config `segmentation` (poisonlab.segmentation.settings).


rule segmentation_canvases:
    output:
        data=PATHS.segmentation_data(),
    log:
        f"logs/segmentation/{PATHS.segmentation_data()}.log",
    benchmark:
        f"logs/segmentation/{PATHS.segmentation_data()}.benchmark.tsv"
    threads: segmentation_resources("canvases")["cpus"]
    resources:
        gpu=segmentation_resources("canvases")["gpu"],
        runtime=segmentation_resources("canvases")["runtime"],
        mem_mb=segmentation_resources("canvases")["mem_mb"],
    params:
        options=lambda wildcards: SEGMENTATION.dataset_options(wildcards.segdata),
    script:
        "../workflow/scripts/segmentation_canvases.py"


rule segmentation_train:
    input:
        data=PATHS.segmentation_data(),
    output:
        model=f"{SEG_DIR}/model.pt",
        metrics=f"{SEG_DIR}/metrics.json",
    log:
        f"logs/segmentation/{SEG_DIR}/train.log",
    benchmark:
        f"logs/segmentation/{SEG_DIR}/train.benchmark.tsv"
    threads: segmentation_resources("train")["cpus"]
    resources:
        gpu=segmentation_resources("train")["gpu"],
        runtime=segmentation_resources("train")["runtime"],
        mem_mb=segmentation_resources("train")["mem_mb"],
    params:
        recipe_config=get_recipe_config,
        procedure_options=lambda wildcards: SEGMENTATION.procedure_options(
            wildcards.procedure
        ),
        model_options=lambda wildcards: SEGMENTATION.model_options(wildcards.segarch),
        device=config["device"],
    script:
        "../workflow/scripts/segmentation_train.py"


rule segmentation_robustness:
    input:
        model=f"{SEG_DIR}/model.pt",
        metrics=f"{SEG_DIR}/metrics.json",
        data=PATHS.segmentation_data(),
    output:
        record=f"{SEG_DIR}/robustness.json",
        examples=f"{SEG_DIR}/robustness.npz",
    log:
        f"logs/segmentation/{SEG_DIR}/robustness.log",
    benchmark:
        f"logs/segmentation/{SEG_DIR}/robustness.benchmark.tsv"
    threads: segmentation_resources("robustness")["cpus"]
    resources:
        gpu=segmentation_resources("robustness")["gpu"],
        runtime=segmentation_resources("robustness")["runtime"],
        mem_mb=segmentation_resources("robustness")["mem_mb"],
    params:
        options=SEGMENTATION.robustness,
        device=config["device"],
    script:
        "../workflow/scripts/segmentation_robustness.py"


rule segmentation_synthesis:
    input:
        unpack(get_judges),
        model=f"{SEG_DIR}/model.pt",
        metrics=f"{SEG_DIR}/metrics.json",
        data=PATHS.segmentation_data(),
    output:
        record=f"{SEG_DIR}/{{task}}.json",
        arrays=f"{SEG_DIR}/{{task}}.npz",
    log:
        f"logs/segmentation/{SEG_DIR}/{{task}}.log",
    benchmark:
        f"logs/segmentation/{SEG_DIR}/{{task}}.benchmark.tsv"
    threads: segmentation_resources("synthesis")["cpus"]
    resources:
        gpu=segmentation_resources("synthesis")["gpu"],
        runtime=segmentation_resources("synthesis")["runtime"],
        mem_mb=segmentation_resources("synthesis")["mem_mb"],
    params:
        options=lambda wildcards: SEGMENTATION.task_options(wildcards.task),
        device=config["device"],
    script:
        "../workflow/scripts/segmentation_synthesis.py"
