"""Snakemake adapter: a table with a row per named input (an arch, a poison), final and peak accuracy."""

from poisonlab.job import start_job

start_job(snakemake.log[0])

from poisonlab.reporting import accuracy_cells, build_table, write_table

runs = {row: list(snakemake.input[row]) for row in snakemake.input.keys()}
cells = accuracy_cells(snakemake.params.table, runs, dataset=snakemake.params.dataset, scale=snakemake.params.scale)
write_table(build_table(cells), csv=snakemake.output.csv, md=snakemake.output.md, tex=snakemake.output.tex)
