"""Snakemake adapter: any grid's table from its cells (the fields of reporting.Cell, records included) → csv, md,
tex, html, the cells as DVC metrics; the files are attached to the paper's MLflow run, each cell with its runs."""

from poisonlab.job import start_job

start_job(snakemake.log[0])

from pathlib import Path

from poisonlab import tracking
from poisonlab.reporting import Cell, build_table, write_table

cells = [Cell(**{**cell, "runs": tuple(cell["runs"])}) for cell in snakemake.params.cells]
out = snakemake.output
write_table(build_table(cells), csv=out.csv, md=out.md, tex=out.tex, html=out.html, metrics=out.metrics,
            title=snakemake.params.title)
tracking.log_paper_outputs(
    snakemake.wildcards.slug, snakemake.config["scale"], snakemake.params.paper, "tables",
    [out.csv, out.md, out.tex, out.html],
    cells={f"{cell.row} | {cell.column}": sorted({str(Path(run).parent) for run in cell.runs}) for cell in cells})
