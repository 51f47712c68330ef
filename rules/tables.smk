# Stage 7: tables in the contract (csv, md, tex) from their records, one rule for every grid of
# config/papers/<slug>.yaml: poisonlab's baselines (paper/baselines/tables/) and each paper's.


rule table:
    input:
        get_table_inputs,
    output:
        csv=f"{PATHS.table()}.csv",
        md=f"{PATHS.table()}.md",
        tex=f"{PATHS.table()}.tex",
        metrics=PATHS.table_metrics(),
    log:
        "logs/tables/{slug}/{table}.log",
    benchmark:
        "logs/tables/{slug}/{table}.benchmark.tsv"
    params:
        cells=get_table_cells,
        title=lambda wildcards: PAPER_TABLES[(wildcards.slug, wildcards.table)].title,
    script:
        "../workflow/scripts/table.py"
