# Stage 2: poison the clean training set → data/poisoned/{dataset}/{poison}.npz (test set untouched),
# with each image's perturbation norms. Options per poison and dataset from config `poison_options`.


rule poison:
    input:
        PATHS.clean(),
    output:
        PATHS.poisoned(),
    log:
        f"logs/poisons/{PATHS.data}/{{dataset}}/{{poison}}.log",
    benchmark:
        f"logs/poisons/{PATHS.data}/{{dataset}}/{{poison}}.benchmark.tsv"
    threads: config["resources"]["poison"].get("cpus", 1)
    resources:
        gpu=lambda wildcards: poison_resources(wildcards).get("gpu", 0),
        runtime=lambda wildcards: poison_resources(wildcards)["runtime"],
        mem_mb=lambda wildcards: poison_resources(wildcards)["mem_mb"],
    params:
        poison=get_poison_params,
        device=config["device"],
    script:
        "../workflow/scripts/poison.py"
