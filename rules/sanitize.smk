# Stage 3: data-level defenses (jpeg-<q>, grayscale, bdr, blur, ortho) run once on a poisoned training
# set → data/sanitized/{dataset}/{poison}/{defense}.npz. Training-time defenses have no rule here:
# they act inside the train rule.


rule sanitize:
    input:
        get_poisoned_data,
    output:
        PATHS.sanitized(),
    log:
        f"logs/sanitize/{PATHS.data}/{{dataset}}/{{poison}}/{{defense}}.log",
    benchmark:
        f"logs/sanitize/{PATHS.data}/{{dataset}}/{{poison}}/{{defense}}.benchmark.tsv"
    threads: config["resources"]["sanitize"].get("cpus", 1)
    resources:
        gpu=config["resources"]["sanitize"]["gpu"],
        runtime=config["resources"]["sanitize"]["runtime"],
        mem_mb=config["resources"]["sanitize"]["mem_mb"],
    params:
        defense=get_defense_params,
        device=config["device"],
    script:
        "../workflow/scripts/sanitize.py"
