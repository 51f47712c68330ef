"""Snakemake adapter: any grid's table from its cells (the fields of reporting.Cell, records included) → csv, md, tex."""

from poisonlab.job import start_job

start_job(snakemake.log[0])

from poisonlab.reporting import Cell, build_table, write_table

cells = [Cell(**{**cell, "runs": tuple(cell["runs"])}) for cell in snakemake.params.cells]
write_table(build_table(cells), csv=snakemake.output.csv, md=snakemake.output.md, tex=snakemake.output.tex,
            metrics=snakemake.output.metrics,
            title=snakemake.params.title)
