# Stage: few-shot (autoprotonet). A clean container → one episodic training job a (method, seed), resumable, with its
# MLflow run (IAP starts from IA's weights) → one evaluation job a run (5-way 1- and 5-shot on the meta-test
# classes) → in the AutoProtoNet run's folder the refinement case study and the decoded prototypes of IA, IAP and
# AP → tables and figures (rules/tables.smk, rules/figures.smk). Settings: config `fewshot`
# (poisonlab.fewshot.settings).
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
        f"logs/fewshot/{FS_DIR}/train.benchmark.tsv",
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
        f"logs/fewshot/{FS_DIR}/evaluation.benchmark.tsv",
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
        f"logs/fewshot/{FS_DIR}/refinement.benchmark.tsv",
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
        f"logs/fewshot/{FS_AP_DIR}/prototypes.benchmark.tsv",
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
