# Stage 5: evaluations of a finished run (peak, dfr, linsep) → {evaluation}.json beside its metrics.json.
# dfr reads the run's kept weights (epochs/) and the clean training set; linsep the clean and trained-on sets.


rule evaluate:
    input:
        metrics=f"{RUN_DIR}/metrics.json",
        epochs=f"{RUN_DIR}/epochs",
        training_data=get_training_data,
        clean_data=PATHS.clean(),
    output:
        f"{RUN_DIR}/{{evaluation}}.json",
    log:
        f"logs/evaluate/{RUN_DIR}/{{evaluation}}.log",
    benchmark:
        f"logs/evaluate/{RUN_DIR}/{{evaluation}}.benchmark.tsv"
    group:
        config["run_group"]
    threads: config["resources"]["evaluate"].get("cpus", 1)
    resources:
        gpu=config["resources"]["evaluate"]["gpu"],
        runtime=config["resources"]["evaluate"]["runtime"],
        mem_mb=config["resources"]["evaluate"]["mem_mb"],
    params:
        options=get_evaluation_params,
        device=config["device"],
    script:
        "../workflow/scripts/evaluate.py"
