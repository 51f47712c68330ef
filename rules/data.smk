# Stage 1: datasets → the clean container of the contract, data/clean/{dataset}.npz.


rule clean_dataset:
    output:
        PATHS.clean(),
    log:
        f"logs/data/{PATHS.data}/{{dataset}}.log",
    benchmark:
        f"logs/data/{PATHS.data}/{{dataset}}.benchmark.tsv"
    threads: config["resources"]["data"].get("cpus", 1)
    resources:
        runtime=config["resources"]["data"]["runtime"],
        mem_mb=config["resources"]["data"]["mem_mb"],
    params:
        dataset=get_dataset_params,
    script:
        "../workflow/scripts/clean_dataset.py"
