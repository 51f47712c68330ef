"""Tables in the contract of DESIGN.md, built from ``metrics.json`` files only (never from MLflow).

A table is a list of cells; a cell is one (row, column) of the paper's layout,
one metric, and the runs — one per seed — it averages. The tidy csv has a row
a cell: ``table, row, column, dataset, scale, metric, ours, ours_std,
n_seeds, reported, reported_bound``; the markdown, LaTeX and HTML beside it
show the same numbers wide, rows and columns in the order the cells were given
(the HTML is the table Snakemake's report shows inline).
``reported_bound`` is empty, or the sign of a reported bound (">" where the
source says only "more than 87%"), so ``reported`` stays a number.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape as escape_html
from pathlib import Path

import polars as pl

from poisonlab.atomic import atomic_path, write_json
from poisonlab.registry import ConfigError

TABLE_COLUMNS = ("table", "row", "column", "dataset", "scale", "metric", "ours", "ours_std", "n_seeds", "reported",
                 "reported_bound")


@dataclass(frozen=True)
class Cell:
    table: str
    row: str
    column: str
    dataset: str
    scale: str
    metric: str
    runs: tuple[str, ...]  # the json of its record (poisonlab.records), one a seed
    reported: float | None = None
    reported_bound: str | None = None  # ">", "<", ">=" or "<=" when the source gives a bound


def lookup(record: dict, metric: str, path: str | os.PathLike) -> float:
    """``metric`` of a run record; dots reach into nested records ('final.test_acc_after').

    An evaluation's metric may name its file first ('dfr:final.test_acc_after'); ``path`` is that file.
    """
    value = record
    for key in metric.rpartition(":")[2].split("."):
        if not isinstance(value, dict) or key not in value:
            known = ", ".join(sorted(value)) if isinstance(value, dict) else "(not a mapping)"
            raise ConfigError(f"{path} has no metric '{metric}' (no '{key}'; has {known})")
        value = value[key]
    return float("nan") if value is None else float(value)


def load_metrics(path: str | os.PathLike) -> dict:
    """A run's metrics.json or an evaluation's json, as tables and figures read it."""
    if not Path(path).exists():
        raise ConfigError(f"missing run: {path} does not exist (train or evaluate that run first)")
    return json.loads(Path(path).read_text())


def lookup_values(record: dict, metric: str, path: str | os.PathLike) -> list[float]:
    """``metric`` of a record as a list: one number, or each of a list of numbers (one an image, say:
    jpeg-photoguard's ``per_photo.retained``), so a cell's mean and std are over seeds and those items."""
    value = record
    for key in metric.rpartition(":")[2].split("."):
        value = value.get(key) if isinstance(value, dict) else None
    if isinstance(value, list):
        return [float("nan") if item is None else float(item) for item in value]
    return [lookup(record, metric, path)]


def build_table(cells: Sequence[Cell]) -> pl.DataFrame:
    """One row a cell: the mean and sample std over its runs of ``metric`` (and its items, for a list)."""
    rows = []
    for cell in cells:
        values = [value for path in cell.runs for value in lookup_values(load_metrics(path), cell.metric, path)]
        series = pl.Series(values, dtype=pl.Float64)
        rows.append({
            "table": cell.table, "row": cell.row, "column": cell.column, "dataset": cell.dataset,
            "scale": cell.scale, "metric": cell.metric, "ours": series.mean(),
            "ours_std": series.std() if len(values) > 1 else None, "n_seeds": len(cell.runs),
            "reported": cell.reported, "reported_bound": cell.reported_bound,
        })
    schema = {"table": pl.String, "row": pl.String, "column": pl.String, "dataset": pl.String, "scale": pl.String,
              "metric": pl.String, "ours": pl.Float64, "ours_std": pl.Float64, "n_seeds": pl.Int64,
              "reported": pl.Float64, "reported_bound": pl.String}
    return pl.DataFrame(rows, schema=schema)


def _cell_text(row: dict, *, plus_minus: str) -> str:
    if row["ours"] is None or math.isnan(row["ours"]):
        return "–"  # e.g. a training loss that never fell below the threshold
    # Epoch counts are whole numbers a seed: one decimal keeps a mean over seeds without "5.00".
    digits = 1 if "epoch" in row["metric"] else 2
    text = f"{row['ours']:.{digits}f}"
    if row["ours_std"] is not None and not math.isnan(row["ours_std"]):
        text += f"{plus_minus}{row['ours_std']:.{digits}f}"
    if row["reported"] is not None:
        bound = row.get("reported_bound") or ""
        text += f" ({bound}{row['reported']:.2f})"
    return text


def _wide(table: pl.DataFrame, plus_minus: str) -> tuple[list[str], list[str], dict[tuple[str, str], str]]:
    rows = list(dict.fromkeys(table["row"]))
    columns = list(dict.fromkeys(table["column"]))
    texts = {(r["row"], r["column"]): _cell_text(r, plus_minus=plus_minus)
             for r in table.iter_rows(named=True)}
    return rows, columns, texts


def _caption(table: pl.DataFrame, title: str | None) -> str:
    scales = ", ".join(dict.fromkeys(table["scale"]))
    datasets = ", ".join(dict.fromkeys(table["dataset"]))
    return (f"{title or table['table'][0]}: {datasets}, scale {scales}; ours as mean ± std over seeds "
            f"(reported in parentheses where the paper has a number).")


def render_markdown(table: pl.DataFrame, title: str | None = None) -> str:
    rows, columns, texts = _wide(table, plus_minus=" ± ")
    lines = [f"| | {' | '.join(columns)} |", f"|---|{'---|' * len(columns)}"]
    lines += [f"| {row} | {' | '.join(texts.get((row, c), '') for c in columns)} |" for row in rows]
    return f"{_caption(table, title)}\n\n" + "\n".join(lines) + "\n"


# What LaTeX reads as markup, and the Unicode the papers' labels use that pdflatex cannot set as text.
LATEX_ESCAPES = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
    "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "<": r"\textless{}", ">": r"\textgreater{}",
    "∞": r"$\infty$", "±": r"$\pm$", "×": r"$\times$", "ε": r"$\varepsilon$", "≤": r"$\leq$", "≥": r"$\geq$",
    "→": r"$\to$", "–": "--", "—": "---", "·": r"$\cdot$", "ℓ": r"$\ell$",
}


def escape(text: str) -> str:
    """``text`` as LaTeX sets it literally (labels such as ``at-linf-8/255``, ``L∞ ε<8``, ``50% & more``)."""
    return "".join(LATEX_ESCAPES.get(char, char) for char in text)


def render_latex(table: pl.DataFrame, title: str | None = None) -> str:
    rows, columns, texts = _wide(table, plus_minus=" ± ")

    body = [r"\begin{table}[t]", r"\centering", rf"\begin{{tabular}}{{l{'c' * len(columns)}}}", r"\toprule",
            " & ".join(["", *map(escape, columns)]) + r" \\", r"\midrule"]
    body += [" & ".join([escape(row), *(escape(texts.get((row, c), "")) for c in columns)]) + r" \\" for row in rows]
    body += [r"\bottomrule", r"\end{tabular}", rf"\caption{{{escape(_caption(table, title))}}}", r"\end{table}"]
    return "\n".join(body) + "\n"


def render_html(table: pl.DataFrame, title: str | None = None) -> str:
    """A page of its own: Snakemake's report shows an HTML result inline (a csv only as a download)."""
    rows, columns, texts = _wide(table, plus_minus=" ± ")
    head = "".join(f"<th>{escape_html(c)}</th>" for c in ["", *columns])
    body = "\n".join("<tr><th>" + escape_html(row) + "</th>"
                     + "".join(f"<td>{escape_html(texts.get((row, c), ''))}</td>" for c in columns) + "</tr>"
                     for row in rows)
    caption = escape_html(_caption(table, title))
    return ('<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>' + escape_html(title or table["table"][0])
            + "</title><style>table{border-collapse:collapse;font-family:sans-serif}th,td{padding:.2em .6em;"
            "border-bottom:1px solid #ccc;text-align:right}th:first-child{text-align:left}"
            "caption{caption-side:bottom;padding-top:.5em}</style></head><body>\n"
            f"<table>\n<caption>{caption}</caption>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n"
            "</table>\n</body></html>\n")


def write_table(table: pl.DataFrame, *, csv: str | os.PathLike, md: str | os.PathLike,
                tex: str | os.PathLike, html: str | os.PathLike | None = None,
                metrics: str | os.PathLike | None = None, title: str | None = None) -> None:
    """The tidy csv, then the same table wide in markdown, LaTeX and (with ``html``) HTML (``title`` leads their
    caption), and with ``metrics`` its cells as ``{row: {column: ours}}`` json, the flat form ``dvc metrics``
    reads (null for NaN)."""
    with atomic_path(csv) as tmp:
        table.write_csv(tmp)
    with atomic_path(md) as tmp:
        tmp.write_text(render_markdown(table, title))
    with atomic_path(tex) as tmp:
        tmp.write_text(render_latex(table, title))
    if html is not None:
        with atomic_path(html) as tmp:
            tmp.write_text(render_html(table, title))
    if metrics is not None:
        cells: dict[str, dict[str, float | None]] = {}
        for row in table.iter_rows(named=True):
            ours = row["ours"]
            cells.setdefault(row["row"], {})[row["column"]] = None if ours is None or math.isnan(ours) else ours
        write_json(metrics, cells)
