# Stage 8: each paper's figures (seaborn, PDF and PNG) from its runs' json files or its containers.


rule paper_figure:
    input:
        get_figure_inputs,
    output:
        pdf=f"{PATHS.figure()}.pdf",
        png=report(
            f"{PATHS.figure()}.png",
            caption="../workflow/report/figure.rst",
            category="{slug}",
            subcategory="figures",
            labels={"figure": "{figure}"},
        ),
    log:
        "logs/figures/{slug}/{figure}.log",
    benchmark:
        "logs/figures/{slug}/{figure}.benchmark.tsv"
    params:
        figure=lambda wildcards: PAPER_FIGURES[
            (wildcards.slug, wildcards.figure)
        ].figure,
        arguments=get_figure_arguments,
        paper=get_paper_title,
    script:
        "../workflow/scripts/figure.py"
