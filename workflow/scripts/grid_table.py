"""Snakemake adapter: a table from a grid of cells, each a (row, column, metric, runs) from the rule's params."""

import sys

sys.stderr = open(snakemake.log[0], "w")

from poisonlab.reporting import build_table, grid_cells, write_table

grid = {(cell["row"], cell["column"]): (cell["metric"], cell["runs"]) for cell in snakemake.params.grid}
cells = grid_cells(snakemake.params.table, grid, dataset=snakemake.params.dataset, scale=snakemake.params.scale)
write_table(build_table(cells), csv=snakemake.output.csv, md=snakemake.output.md, tex=snakemake.output.tex)
