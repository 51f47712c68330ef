"""Snakemake adapter: figure ``params.figure`` from the keyword arguments ``params.arguments``, as pdf and png,
attached to the paper's MLflow run.

The scale being run goes into every figure's caption line.
"""

from poisonlab.job import start_job

start_job(snakemake.log[0])

from poisonlab import tracking
from poisonlab.reporting.figures import FIGURES, save_figure

figure = FIGURES.build(snakemake.params.figure, scale=snakemake.config["scale"], **snakemake.params.arguments)
save_figure(figure, pdf=snakemake.output.pdf, png=snakemake.output.png)
tracking.log_paper_outputs(snakemake.wildcards.slug, snakemake.config["scale"], snakemake.params.paper, "figures",
                           [snakemake.output.pdf, snakemake.output.png])
