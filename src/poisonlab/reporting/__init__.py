"""Tables from runs: tidy cells (the csv contract) and their wide markdown, LaTeX and HTML renderings."""

from poisonlab.reporting.tables import (
    TABLE_COLUMNS, Cell, build_table, load_metrics, render_html, render_latex, render_markdown, write_table,
)

__all__ = ["TABLE_COLUMNS", "Cell", "build_table", "load_metrics", "render_html", "render_latex", "render_markdown", "write_table"]
