# Stage 4: train one run on its (clean, poisoned or sanitized) container → metrics.json, model.pt, an MLflow run.
# A killed job keeps its checkpoint.pt and epochs.partial/ (not outputs, so Snakemake leaves them) and the
# rerun resumes; the kept weights become epochs/ when the run has finished.


rule train:
    input:
        data=get_training_data,
    output:
        metrics=f"{RUN_DIR}/metrics.json",
        model=f"{RUN_DIR}/model.pt",
        epochs=directory(f"{RUN_DIR}/epochs"),
    log:
        f"logs/train/{RUN_DIR}.log",
    benchmark:
        f"logs/train/{RUN_DIR}.benchmark.tsv"
    group:
        config["run_group"]
    threads: config["resources"]["train"].get("cpus", 1)
    resources:
        gpu=config["resources"]["train"]["gpu"],
        runtime=config["resources"]["train"]["runtime"],
        mem_mb=config["resources"]["train"]["mem_mb"],
    params:
        recipe=lambda wildcards: wildcards.recipe,
        recipe_config=get_recipe_config,
        defense_options=lambda wildcards: get_defense_options(
            config, wildcards.defense, wildcards.dataset
        ),
        keep_weights_every=config["keep_weights_every"],
        device=config["device"],
    script:
        "../workflow/scripts/train.py"
