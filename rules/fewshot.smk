# Stage: few-shot (autoprotonet). A clean container → one episodic training job a (method, seed), resumable, with its
# MLflow run (IAP starts from IA's weights) → one evaluation job a run (5-way 1- and 5-shot on the meta-test
# classes) → in the AutoProtoNet run's folder the refinement case study and the decoded prototypes of IA, IAP and
# AP → tables and figures (rules/tables.smk, rules/figures.smk). Settings: config `fewshot`
# (poisonlab.fewshot.settings).


rule fewshot_train:
    input:
        data=PATHS.clean("{fsdata}"),
        init=get_init_weights,
    output:
        model=f"{FS_DIR}/model.pt",
        metrics=f"{FS_DIR}/metrics.json",
    log:
        f"logs/fewshot/{FS_DIR}/train.log",
    benchmark:
        f"logs/fewshot/{FS_DIR}/train.benchmark.tsv"
    threads: fewshot_resources("train")["cpus"]
    resources:
        gpu=fewshot_resources("train")["gpu"],
        runtime=fewshot_resources("train")["runtime"],
        mem_mb=fewshot_resources("train")["mem_mb"],
    params:
        recipe_config=lambda wildcards: FEWSHOT.recipe(
            wildcards.fsrecipe, wildcards.fsmethod
        ),
        dataset_options=lambda wildcards: FEWSHOT.dataset_options(wildcards.fsdata),
        method_options=lambda wildcards: FEWSHOT.method_options(wildcards.fsmethod),
        device=config["device"],
    script:
        "../workflow/scripts/fewshot_train.py"


rule fewshot_evaluate:
    input:
        model=f"{FS_DIR}/model.pt",
        metrics=f"{FS_DIR}/metrics.json",
        data=PATHS.clean("{fsdata}"),
    output:
        record=f"{FS_DIR}/evaluation.json",
    log:
        f"logs/fewshot/{FS_DIR}/evaluation.log",
    benchmark:
        f"logs/fewshot/{FS_DIR}/evaluation.benchmark.tsv"
    threads: fewshot_resources("evaluate")["cpus"]
    resources:
        gpu=fewshot_resources("evaluate")["gpu"],
        runtime=fewshot_resources("evaluate")["runtime"],
        mem_mb=fewshot_resources("evaluate")["mem_mb"],
    params:
        options=FEWSHOT.evaluation,
        device=config["device"],
    script:
        "../workflow/scripts/fewshot_evaluate.py"


rule fewshot_refinement:
    input:
        model=f"{FS_DIR}/model.pt",
        metrics=f"{FS_DIR}/metrics.json",
        data=PATHS.clean("{fsdata}"),
    output:
        record=f"{FS_DIR}/refinement.json",
        arrays=f"{FS_DIR}/refinement.npz",
    log:
        f"logs/fewshot/{FS_DIR}/refinement.log",
    benchmark:
        f"logs/fewshot/{FS_DIR}/refinement.benchmark.tsv"
    threads: fewshot_resources("study")["cpus"]
    resources:
        gpu=fewshot_resources("study")["gpu"],
        runtime=fewshot_resources("study")["runtime"],
        mem_mb=fewshot_resources("study")["mem_mb"],
    params:
        options=FEWSHOT.refinement,
        device=config["device"],
    script:
        "../workflow/scripts/fewshot_refinement.py"


rule fewshot_prototypes:
    input:
        unpack(get_prototype_runs),
        data=PATHS.clean("{fsdata}"),
    output:
        record=f"{FS_AP_DIR}/prototypes.json",
        arrays=f"{FS_AP_DIR}/prototypes.npz",
    log:
        f"logs/fewshot/{FS_AP_DIR}/prototypes.log",
    benchmark:
        f"logs/fewshot/{FS_AP_DIR}/prototypes.benchmark.tsv"
    threads: fewshot_resources("study")["cpus"]
    resources:
        gpu=fewshot_resources("study")["gpu"],
        runtime=fewshot_resources("study")["runtime"],
        mem_mb=fewshot_resources("study")["mem_mb"],
    params:
        rows=list(PROTOTYPE_ROWS),
        options=FEWSHOT.prototypes,
        device=config["device"],
    script:
        "../workflow/scripts/fewshot_prototypes.py"
