"""The tables and figures of poisonlab and of each paper, as grids of records resolved at the scale being run.

``config/papers/<slug>.yaml`` describes one grid spec (``baselines`` is
poisonlab's own: its tables are the ones ``tables`` names)::

    title: Autoregressive Perturbations for Data Poisoning (NeurIPS 2022)
    recipes: {ar-poisoning: {...}}         # the paper's training recipe(s), added to the config's
    scales:                                 # per scale, what its runs use (defaults: the scale's own)
      paper: {datasets: [cifar10, cifar100, svhn], recipe: ar-poisoning}
    tables:
      table1:                               # → paper/<slug>/tables/table1.{csv,md,tex}
        title: CIFAR-10 test accuracy of ResNet-18 on each poison, by augmentation
        record: run                         # optional: the record type (poisonlab.records); run is the default
        metric: final_test_acc              # a key of the record's file, or "<file>:<key>" ("dfr:final.test_acc_after")
        rows: {axis: poison, values: {Clean: clean, AR (ours): ar}}
        columns: {axis: defense, values: {None: none, Cutout: cutout}}
        fixed: {dataset: cifar10}           # optional: fields every cell shares
        scales: {embedded: {recipe: ...}}   # optional: this table's own per-scale settings
    figures:
      accuracy: {figure: accuracy-over-epochs, file: metrics, runs: {axis: poison, values: [clean, ar]}}
      examples: {figure: sharpening-examples, poisoned: cuda, options: {images_per_row: 8}}
      cdf: {figure: support-cdf, record: support, file: summary, fixed: {kind: removal},
            runs: {axis: attributor, config: attribution.removal}}   # records of another type, as a table's

An axis is ``{axis: <field>, values: [names] | {label: name}}`` with field one
of the record type's axes (a run's: dataset, arch, poison, defense) or
metric, or ``{values: {label: {field: name, ...}}}`` when one label sets
several fields (cuda-sharpening's "CUDA Data with AT"). ``config: <key>``
appends the names a config list holds (``{axis: poison, values: [clean],
config: poisons}``: clean, then every configured poison; a dotted key reaches
into a paper's own section: ``attribution.removal``), each its own label,
or with ``groups: {name: {label: value}}`` the group of each name
(the evaluations table: the columns of each configured evaluation).

Scales: a cell's dataset or arch that the scale does not run (the paper's
CIFAR-100 at the embedded scale, its VGG-16 where only ``smallcnn`` trains) is
replaced by the scale's first one — its stand-in — and a row or column that
then repeats an earlier one is left out. Rows and columns otherwise stay as
the paper has them: the embedded scale shrinks data and epochs, never the grid.
Cells that several papers share resolve to the same run and are trained once.
"""

from __future__ import annotations

import csv
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from poisonlab.config import load_config, merge
from poisonlab.paths import Paths
from poisonlab.records import RECORDS, RecordType, Run
from poisonlab.registry import ConfigError

BASELINES = "baselines"  # poisonlab's own grid spec: the config's `tables` picks which of its tables are built
PAPER_KEYS = {"title", "recipes", "scales", "tables", "figures"}
SCALE_KEYS = {"datasets", "archs", "recipe", "seeds"}
TABLE_KEYS = {"title", "record", "metric", "rows", "columns", "fixed", "scales"}
AXIS_KEYS = {"axis", "values", "config", "groups"}


@dataclass(frozen=True)
class PaperCell:
    row: str
    column: str
    run: Run
    metric: str  # a key of the record's file or "<file>:<key>"

    @property
    def file(self) -> str:
        """The file of each seed's record the metric is read from."""
        return RECORDS.get(self.run.record).file(self.metric)


@dataclass(frozen=True)
class PaperTable:
    name: str
    title: str
    cells: tuple[PaperCell, ...]


@dataclass(frozen=True)
class PaperFigure:
    name: str
    figure: str  # a name in poisonlab.reporting.figures.FIGURES
    runs: dict[str, Run] | None  # label → run, for figures of runs (read from each run's `file`)
    file: str | None
    data: Run | None  # the poisoned container (and the clean one beside it), for figures of images
    options: dict[str, Any]


def load_papers(papers_dir: str | os.PathLike, slugs: list[str]) -> dict[str, dict[str, Any]]:
    """``{slug: config/papers/<slug>.yaml}`` for each slug asked for, its keys checked."""
    known = sorted(path.stem for path in Path(papers_dir).glob("*.yaml") if path.stem != BASELINES)
    for slug in slugs:
        if slug == BASELINES:
            raise ConfigError(f"papers: '{BASELINES}' is not a paper; its tables are chosen with `tables`")
        if slug not in known:
            raise ConfigError(f"papers: unknown paper '{slug}'; known papers: {', '.join(known)}")
    return {slug: _load_spec(papers_dir, slug) for slug in slugs}


def load_grids(papers_dir: str | os.PathLike, config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The grid specs all_tables builds: baselines with the tables ``tables`` names, then each of ``papers``."""
    grids = {}
    if config.get("tables"):
        baselines = _load_spec(papers_dir, BASELINES)
        known = baselines.get("tables", {})
        for name in config["tables"]:
            if name not in known:
                raise ConfigError(f"tables: unknown table '{name}'; config/papers/{BASELINES}.yaml has: "
                                  f"{', '.join(known)}")
        grids[BASELINES] = {**baselines, "tables": {name: known[name] for name in config["tables"]}}
    return {**grids, **load_papers(papers_dir, config.get("papers", []))}


def _load_spec(papers_dir: str | os.PathLike, slug: str) -> dict[str, Any]:
    spec = load_config(Path(papers_dir) / f"{slug}.yaml")
    _check_keys(f"papers/{slug}", spec, PAPER_KEYS)
    for name, table in spec.get("tables", {}).items():
        _check_keys(f"papers/{slug}: table {name}", table, TABLE_KEYS)
        for key in ("metric", "rows", "columns"):
            if key not in table:
                raise ConfigError(f"papers/{slug}: table {name} has no '{key}'")
    return spec


def add_paper_recipes(config: dict[str, Any], papers: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The config's recipes with each paper's own added; one name defined twice differently is an error."""
    recipes = dict(config["recipes"])
    for slug, paper in papers.items():
        for name, recipe in paper.get("recipes", {}).items():
            if name in recipes and recipes[name] != recipe:
                raise ConfigError(f"papers/{slug}: recipe '{name}' is already defined differently")
            recipes[name] = recipe
    return recipes


def scale_settings(config: dict[str, Any], paper: dict[str, Any], table: dict[str, Any] | None = None,
                   where: str = "papers") -> dict[str, Any]:
    """What runs use at ``config['scale']``: the scale's own, the paper's entry, then the table's."""
    settings = {"datasets": [config["dataset"]], "archs": list(config["archs"]), "recipe": config["recipe"],
                "seeds": list(config["seeds"])}
    for source in (paper, table or {}):
        entry = source.get("scales", {}).get(config["scale"], {})
        _check_keys(f"{where}: scales: {config['scale']}", entry, SCALE_KEYS)
        settings = merge(settings, entry)
    return settings


def paper_tables(slug: str, paper: dict[str, Any], config: dict[str, Any]) -> list[PaperTable]:
    return [PaperTable(name, table.get("title", name),
                       tuple(_table_cells(f"papers/{slug}: table {name}", table, paper, config)))
            for name, table in paper.get("tables", {}).items()]


def paper_figures(slug: str, paper: dict[str, Any], config: dict[str, Any]) -> list[PaperFigure]:
    figures = []
    for name, spec in paper.get("figures", {}).items():
        where = f"papers/{slug}: figure {name}"
        _check_keys(where, spec, {"figure", "record", "runs", "fixed", "file", "poisoned", "options", "scales"})
        settings = scale_settings(config, paper, spec, where)
        # The figures draw records (runs by default: their json files or their containers), as tables do.
        record_name = spec.get("record", "run")
        record = RECORDS.get(record_name)
        fixed = spec.get("fixed", {})
        _check_keys(f"{where}: fixed", fixed, set(record.axes))
        runs = None
        if "runs" in spec:
            runs = {label: record.run(record_name, {**fixed, **fields}, settings)
                    for label, fields in _distinct(_axis(spec["runs"], where, record, config), fixed, record,
                                                   settings)}
        data = RECORDS.get("run").run("run", {"poison": spec["poisoned"]}, settings) if "poisoned" in spec else None
        if (runs is None) == (data is None):
            raise ConfigError(f"{where}: give either 'runs' (a figure of runs) or 'poisoned' (of images)")
        figures.append(PaperFigure(name, spec.get("figure", name), runs, spec.get("file", record.default_file),
                                   data, dict(spec.get("options", {}))))
    return figures


def load_reported(path: str | os.PathLike) -> dict[tuple[str, str, str], tuple[float, str | None]]:
    """``paper/{slug}/reported.csv`` → {(table, row, column): (number, bound)}; no file, no numbers.

    ``reported`` is a number (94.34) or a bound where the source gives only one (">87": "more than 87%");
    the bound's sign is kept apart so that the tables' reported column stays numeric.
    """
    if not Path(path).exists():
        return {}
    with open(path, newline="") as f:
        return {(row["table"], row["row"], row["column"]): _reported_number(row["reported"], path)
                for row in csv.DictReader(f) if row["reported"].strip()}


def _reported_number(text: str, path: str | os.PathLike) -> tuple[float, str | None]:
    match = re.fullmatch(r"\s*(>=|<=|>|<)?\s*([-+]?[0-9]*\.?[0-9]+)\s*", text)
    if match is None:
        raise ConfigError(f"{path}: reported '{text}' is neither a number nor a bound like >87")
    return float(match[2]), match[1]


def check_papers(papers: dict[str, dict[str, Any]], config: dict[str, Any], figure_names: list[str]) -> None:
    """Every name a grid uses, at this scale, against its record type, the registries and the config."""
    for slug, paper in papers.items():
        runs = [(f"papers/{slug}: table {table.name}", cell.run, cell.metric)
                for table in paper_tables(slug, paper, config) for cell in table.cells]
        for figure in paper_figures(slug, paper, config):
            where = f"papers/{slug}: figure {figure.name}"
            if figure.figure not in figure_names:
                raise ConfigError(f"{where}: unknown figure '{figure.figure}'; known: {', '.join(figure_names)}")
            runs += [(where, run, None) for run in [*(figure.runs or {}).values(), figure.data] if run]
        for where, run, metric in runs:
            record = RECORDS.get(run.record)
            try:
                record.check(config, run)
                if metric is not None:
                    record.check_metric(metric)
            except ConfigError as error:
                raise ConfigError(f"{where}: {error}") from None


# ---------------------------------------------------------------- a table's records and cells, for its rule


def table_files(table: PaperTable, paths: Paths) -> list[str]:
    """Every file the table reads, once."""
    return list(dict.fromkeys(path for cell in table.cells for path in cell.run.files(paths, cell.file)))


def table_cells(table: PaperTable, paths: Paths, scale: str,
                reported: dict[tuple[str, str, str], tuple[float, str | None]]) -> list[dict[str, Any]]:
    """The cells as the table script takes them: the fields of poisonlab.reporting.Cell."""
    return [{"table": table.name, "row": cell.row, "column": cell.column, "dataset": cell.run.dataset,
             "scale": scale, "metric": cell.metric, "runs": cell.run.files(paths, cell.file),
             **dict(zip(("reported", "reported_bound"), reported.get((table.name, cell.row, cell.column),
                                                                      (None, None))))}
            for cell in table.cells]


# ---------------------------------------------------------------- grids


def _table_cells(where: str, table: dict[str, Any], paper: dict[str, Any], config: dict[str, Any]
                 ) -> list[PaperCell]:
    settings = scale_settings(config, paper, table, where)
    name = table.get("record", "run")
    try:
        record = RECORDS.get(name)
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}") from None
    fixed = table.get("fixed", {})
    _check_keys(f"{where}: fixed", fixed, {*record.axes, "metric"})
    base = {"metric": table["metric"], **fixed}
    rows = _distinct(_axis(table["rows"], where, record, config), base, record, settings)
    columns = _distinct(_axis(table["columns"], where, record, config), base, record, settings)
    cells = []
    for row, row_fields in rows:
        for column, column_fields in columns:
            fields = {**base, **row_fields, **column_fields}
            cells.append(PaperCell(row, column, record.run(name, fields, settings), fields["metric"]))
    return cells


def _axis(spec: Any, where: str, record: RecordType, config: dict[str, Any]) -> list[tuple[str, dict[str, str]]]:
    """An axis as (label, fields) pairs, in the paper's order, then the config's."""
    axes = (*record.axes, "metric")
    if not isinstance(spec, dict) or not {"values", "config"} & set(spec):
        raise ConfigError(f"{where}: an axis is {{axis: <field>, values: ...}} or {{values: {{label: {{...}}}}}}")
    _check_keys(where, spec, AXIS_KEYS)
    values, axis = spec.get("values", []), spec.get("axis")
    if axis is None:
        if "config" in spec:
            raise ConfigError(f"{where}: 'config' needs an 'axis' (the field its names set)")
        pairs = list(values.items()) if isinstance(values, dict) else []
        for label, fields in pairs:
            if not isinstance(fields, dict) or not fields or set(fields) - set(axes):
                raise ConfigError(f"{where}: '{label}' must map fields ({', '.join(axes)}) to names")
        return [(str(label), dict(fields)) for label, fields in pairs]
    if axis not in axes:
        raise ConfigError(f"{where}: unknown axis '{axis}'; allowed: {', '.join(axes)}")
    named = list(values.items()) if isinstance(values, dict) else [(value, value) for value in values]
    if "config" in spec:
        named += _config_values(where, spec, config)
    elif "groups" in spec:
        raise ConfigError(f"{where}: 'groups' go with 'config' (the config list that picks them)")
    return [(str(label), {axis: value}) for label, value in named]


def _config_values(where: str, spec: dict[str, Any], config: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, name) of each name of the config list ``spec['config']``, or of each one's group."""
    key, groups = spec["config"], spec.get("groups")
    names = config
    for part in key.split("."):  # a dotted key reaches into a paper's own section: attribution.removal
        names = names.get(part) if isinstance(names, dict) else None
    if not isinstance(names, list):
        raise ConfigError(f"{where}: config key '{key}' is not a list of names")
    if groups is None:
        return [(name, name) for name in names]
    pairs = []
    for name in names:
        if name not in groups:
            raise ConfigError(f"{where}: no group for '{name}' of {key}; groups: {', '.join(groups)}")
        pairs += list(groups[name].items())
    return pairs


def _distinct(pairs: list[tuple[str, dict[str, str]]], base: dict[str, str], record: RecordType,
              settings: dict[str, Any]) -> list[tuple[str, dict[str, str]]]:
    """Drop a row/column that stand-ins made the same as an earlier one (CIFAR-100 → the scale's dataset)."""
    kept, seen = [], []
    for label, fields in pairs:
        resolved = record.resolve({**base, **fields}, settings)
        if resolved not in seen:
            seen.append(resolved)
            kept.append((label, fields))
    return kept


def _check_keys(where: str, mapping: Any, allowed: set[str]) -> None:
    if not isinstance(mapping, dict):
        raise ConfigError(f"{where}: expected a mapping")
    unknown = sorted(set(mapping) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}")
