# Stage: data attribution (ssl-attribution). SSL backbone → features → attributors; reference runs (the train
# rule) → targets; subset-trained models → datamodels and LDS; one job per (attributor, kind, target) support
# search. Settings: config `attribution`; which file a job reads: poisonlab.attribution.dag.


rule attribution_ssl:
    input:
        data=PATHS.clean(),
    output:
        backbone=f"{SSL_DIR}/backbone.pt",
        metrics=f"{SSL_DIR}/metrics.json",
    log:
        f"logs/attribution/{SSL_DIR}.log",
    benchmark:
        f"logs/attribution/{SSL_DIR}.benchmark.tsv"
    threads: ATTRIBUTION.job_resources("ssl")["cpus"]
    resources:
        gpu=ATTRIBUTION.job_resources("ssl")["gpu"],
        runtime=ATTRIBUTION.job_resources("ssl")["runtime"],
        mem_mb=ATTRIBUTION.job_resources("ssl")["mem_mb"],
    params:
        ssl=get_ssl_params,
        device=config["device"],
    script:
        "../workflow/scripts/ssl_pretrain.py"


rule attribution_features:
    input:
        data=PATHS.clean(),
        backbone=get_backbone,
    output:
        features=f"{SETTING}/features.npz",
    log:
        f"logs/attribution/{SETTING}/features.log",
    benchmark:
        f"logs/attribution/{SETTING}/features.benchmark.tsv"
    threads: ATTRIBUTION.job_resources("attribute")["cpus"]
    resources:
        gpu=ATTRIBUTION.job_resources("attribute")["gpu"],
        runtime=ATTRIBUTION.job_resources("attribute")["runtime"],
        mem_mb=ATTRIBUTION.job_resources("attribute")["mem_mb"],
    params:
        # The arch of a user's plain state dict; save_backbone's files say their own.
        arch=ATTRIBUTION.ssl.get("arch"),
        device=config["device"],
    script:
        "../workflow/scripts/attribution_features.py"


rule attribution_targets:
    input:
        data=PATHS.clean(),
        references=get_reference_models,
    output:
        targets=f"{SETTING}/targets.json",
    log:
        f"logs/attribution/{SETTING}/targets.log",
    benchmark:
        f"logs/attribution/{SETTING}/targets.benchmark.tsv"
    threads: ATTRIBUTION.job_resources("attribute")["cpus"]
    resources:
        gpu=ATTRIBUTION.job_resources("attribute")["gpu"],
        runtime=ATTRIBUTION.job_resources("attribute")["runtime"],
        mem_mb=ATTRIBUTION.job_resources("attribute")["mem_mb"],
    params:
        options=get_targets_params,
    script:
        "../workflow/scripts/attribution_targets.py"


rule attribution_subsets:
    input:
        data=PATHS.clean(),
        targets=f"{SETTING}/targets.json",
    output:
        shard=f"{SETTING}/subsets/{{part}}/shard{{shard}}.npz",
    log:
        f"logs/attribution/{SETTING}/subsets/{{part}}/shard{{shard}}.log",
    benchmark:
        f"logs/attribution/{SETTING}/subsets/{{part}}/shard{{shard}}.benchmark.tsv"
    threads: ATTRIBUTION.job_resources("retrain")["cpus"]
    resources:
        gpu=ATTRIBUTION.job_resources("retrain")["gpu"],
        runtime=ATTRIBUTION.job_resources("retrain")["runtime"],
        mem_mb=ATTRIBUTION.job_resources("retrain")["mem_mb"],
    params:
        retrain=get_retrain_params,
        pool=dataclasses.asdict(ATTRIBUTION.subsets),
    script:
        "../workflow/scripts/attribution_subsets.py"


rule attribution_attribute:
    input:
        unpack(get_attributor_inputs),
    output:
        topk=f"{SETTING}/attributors/{{attributor}}/topk.npz",
        cost=f"{SETTING}/attributors/{{attributor}}/cost.json",
        neighbours=f"{SETTING}/attributors/{{attributor}}/neighbours.json",
    log:
        f"logs/attribution/{SETTING}/attributors/{{attributor}}.log",
    benchmark:
        f"logs/attribution/{SETTING}/attributors/{{attributor}}.benchmark.tsv"
    threads: ATTRIBUTION.job_resources("attribute")["cpus"]
    resources:
        gpu=ATTRIBUTION.job_resources("attribute")["gpu"],
        runtime=ATTRIBUTION.job_resources("attribute")["runtime"],
        mem_mb=ATTRIBUTION.job_resources("attribute")["mem_mb"],
    params:
        options=lambda wildcards: ATTRIBUTION.options(wildcards.attributor),
        device=config["device"],
    script:
        "../workflow/scripts/attribute.py"


# A killed unit keeps target{t}.state.json (not an output, so Snakemake leaves it): the rerun resumes.
rule attribution_support:
    input:
        data=PATHS.clean(),
        targets=f"{SETTING}/targets.json",
        topk=f"{SETTING}/attributors/{{attributor}}/topk.npz",
    output:
        unit=f"{SETTING}/support/{{attributor}}/{{kind}}/target{{target}}.json",
    log:
        f"logs/attribution/{SETTING}/support/{{attributor}}/{{kind}}/target{{target}}.log",
    benchmark:
        f"logs/attribution/{SETTING}/support/{{attributor}}/{{kind}}/target{{target}}.benchmark.tsv"
    threads: ATTRIBUTION.job_resources("retrain")["cpus"]
    resources:
        gpu=ATTRIBUTION.job_resources("retrain")["gpu"],
        runtime=ATTRIBUTION.job_resources("retrain")["runtime"],
        mem_mb=ATTRIBUTION.job_resources("retrain")["mem_mb"],
    params:
        retrain=get_retrain_params,
        search={
            "grid": list(ATTRIBUTION.grid),
            "retrains": ATTRIBUTION.retrains,
            "budget": ATTRIBUTION.budget,
        },
    script:
        "../workflow/scripts/attribution_support.py"


rule attribution_support_summary:
    input:
        units=get_support_units,
    output:
        summary=f"{SETTING}/support/{{attributor}}/{{kind}}/summary.json",
    log:
        f"logs/attribution/{SETTING}/support/{{attributor}}/{{kind}}/summary.log",
    benchmark:
        f"logs/attribution/{SETTING}/support/{{attributor}}/{{kind}}/summary.benchmark.tsv"
    script:
        "../workflow/scripts/attribution_summary.py"


rule attribution_lds:
    input:
        data=PATHS.clean(),
        targets=f"{SETTING}/targets.json",
        topk=f"{SETTING}/attributors/{{attributor}}/topk.npz",
        heldout=get_heldout_shards,
    output:
        lds=f"{SETTING}/lds/{{attributor}}/lds.json",
    log:
        f"logs/attribution/{SETTING}/lds/{{attributor}}.log",
    benchmark:
        f"logs/attribution/{SETTING}/lds/{{attributor}}.benchmark.tsv"
    script:
        "../workflow/scripts/attribution_lds.py"
