# Stage 7: tables in the contract (csv, md, tex) from their records, one rule for every grid of
# config/papers/<slug>.yaml: poisonlab's baselines (paper/baselines/tables/) and each paper's. The HTML
# rendering is what `snakemake --report` shows, one category a paper.


rule table:
    input:
        get_table_inputs,
    output:
        csv=f"{PATHS.table()}.csv",
        md=f"{PATHS.table()}.md",
        tex=f"{PATHS.table()}.tex",
        html=report(
            f"{PATHS.table()}.html",
            caption="../workflow/report/table.rst",
            category="{slug}",
            subcategory="tables",
            labels={"table": "{table}"},
        ),
        metrics=PATHS.table_metrics(),
    log:
        "logs/tables/{slug}/{table}.log",
    benchmark:
        "logs/tables/{slug}/{table}.benchmark.tsv"
    params:
        cells=get_table_cells,
        title=lambda wildcards: PAPER_TABLES[(wildcards.slug, wildcards.table)].title,
        paper=get_paper_title,
    script:
        "../workflow/scripts/table.py"
