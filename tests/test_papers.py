"""The papers' grids (config/papers/<slug>.yaml) at every scale, and a paper table built by the DAG from runs."""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path

import polars as pl
import pytest

from helpers import ROOT, snakemake
from poisonlab.config import check_config, load_scaled, merge, typed
from poisonlab.papers import (
    add_paper_recipes, check_papers, load_grids, load_papers, load_reported, paper_figures, paper_tables,
    scale_settings,
)
from poisonlab.registry import ConfigError
from poisonlab.reporting import TABLE_COLUMNS, Cell, build_table, render_latex, render_markdown
from poisonlab.reporting.figures import FIGURES

PAPERS_DIR = ROOT / "config" / "papers"
SLUGS = ["ar-poisoning", "learned-faster", "learn-from-unlearnable", "cuda-sharpening", "pst", "ssl-attribution",
         "jpeg-photoguard", "robust-seg", "autoprotonet"]


def resolved(scale: str, **overrides) -> tuple[dict, dict]:
    """(config at ``scale``, the papers it names) as the Snakefile resolves them."""
    config = typed(merge(load_scaled(ROOT / "config" / "config.yaml", scale), overrides))
    papers = load_grids(PAPERS_DIR, config)
    config["recipes"] = add_paper_recipes(config, papers)
    return config, papers


def test_the_default_config_builds_all_six_papers():
    config, papers = resolved("embedded")
    assert sorted(papers) == sorted(["baselines", *SLUGS]) == sorted(p.stem for p in PAPERS_DIR.glob("*.yaml"))
    for slug in SLUGS:  # each paper's README says what is reproduced and how
        assert (ROOT / "paper" / slug / "README.md").exists(), slug


@pytest.mark.parametrize("scale", ["embedded", "cifar10-small", "paper"])
def test_every_paper_resolves_at_every_scale_without_dropping_rows(scale):
    config, papers = resolved(scale)
    check_config(config)
    check_papers(papers, config, FIGURES.names())
    for slug, paper in papers.items():
        for table in paper_tables(slug, paper, config):
            spec = paper["tables"][table.name]
            rows = list(dict.fromkeys(cell.row for cell in table.cells))
            # Poison and defense rows are the paper's (and the config's), at every scale; only datasets and
            # archs have stand-ins.
            if spec["rows"].get("axis") in ("poison", "defense"):
                names = [*spec["rows"]["values"], *config.get(spec["rows"].get("config"), [])]
                assert len(rows) == len(dict.fromkeys(names)), (slug, table.name)
            settings = scale_settings(config, paper, spec)
            for cell in table.cells:
                assert cell.run.recipe == settings["recipe"] and cell.run.seeds == tuple(settings["seeds"])
                fields = dict(cell.run.fields)  # a few-shot record has no arch
                assert fields["dataset"] in settings["datasets"]
                assert fields.get("arch", settings["archs"][0]) in settings["archs"]


def test_stand_ins_collapse_datasets_and_archs_the_scale_does_not_run():
    embedded, papers = resolved("embedded")
    paper_scale, _ = resolved("paper")
    ar = papers["ar-poisoning"]

    def table(config, name):
        return next(t for t in paper_tables("ar-poisoning", ar, config) if t.name == name)

    # CIFAR-10/100, SVHN and STL-10 at the paper scale; at the embedded scale one column, CIFAR-10's, on MNIST-5k.
    wide = table(paper_scale, "datasets")
    assert [c.column for c in wide.cells if c.row == "Clean"] == ["CIFAR-10", "CIFAR-100", "SVHN", "STL-10"]
    assert [c.run.dataset for c in wide.cells if c.row == "Clean"] == ["cifar10", "cifar100", "svhn", "stl10"]
    narrow = table(embedded, "datasets")
    assert [(c.column, c.run.dataset) for c in narrow.cells if c.row == "Clean"] == [("CIFAR-10", "mnist5k")]
    assert [c.run.arch for c in table(paper_scale, "architectures").cells if c.row == "AR (ours)"] == [
        "resnet18", "vgg16", "densenet121", "mobilenetv2", "vit-small"]
    assert [(c.column, c.run.arch) for c in table(embedded, "architectures").cells if c.row == "AR (ours)"] == [
        ("ResNet-18", "tinycnn")]


def test_a_label_may_set_several_fields_and_shared_cells_are_one_run():
    config, papers = resolved("embedded")
    cuda = next(iter(paper_tables("cuda-sharpening", papers["cuda-sharpening"], config)))
    assert [(c.column, c.run.poison, c.run.defense) for c in cuda.cells] == [
        ("Clean Data", "clean", "none"), ("CUDA Data", "cuda", "none"),
        ("CUDA Data with AT", "cuda", "at-linf-8"), ("CUDA Data with RSK+FF", "cuda", "rsk-ff")]
    # The undefended CUDA run of cuda-sharpening is the one learned-faster and pst read: trained once.
    runs = {slug: {c.run for t in paper_tables(slug, paper, config) for c in t.cells}
            for slug, paper in papers.items()}
    shared = next(c.run for c in cuda.cells if c.column == "CUDA Data")
    assert all(shared in runs[slug] for slug in ("learned-faster", "pst", "learn-from-unlearnable"))


def test_the_papers_recipes_are_used_at_the_paper_scale_only():
    embedded, papers = resolved("embedded")
    paper_scale, _ = resolved("paper")
    lfu = papers["learn-from-unlearnable"]
    recipes = {t.name: t.cells[0].run.recipe for t in paper_tables("learn-from-unlearnable", lfu, paper_scale)}
    assert recipes == {"dfr": "lfu-dfr", "linear-separability": "lfu-dfr", "orthogonal-projection": "lfu-ortho"}
    assert {t.cells[0].run.recipe for t in paper_tables("learn-from-unlearnable", lfu, embedded)} == {"embedded"}
    assert {f.figure for slug, p in papers.items() for f in paper_figures(slug, p, embedded)} == set(FIGURES.names())


@pytest.mark.parametrize("change,message", [
    (lambda p: p["tables"]["t"]["rows"].update(axis="colour"), "unknown axis 'colour'; allowed: dataset, arch"),
    (lambda p: p["tables"]["t"].update(metric="best_acc"), "unknown metric 'best_acc'"),
    (lambda p: p["tables"]["t"].update(metric="dfrr:final.test_acc_after"), "unknown evaluation 'dfrr'"),
    (lambda p: p["tables"]["t"]["rows"].update(values=["clean", "venom"]), "unknown poison 'venom'"),
    (lambda p: p["tables"]["t"]["columns"].update(values=["none", "jpeg-0"]), "quality must be"),
    (lambda p: p["tables"]["t"].update(scales={"embedded": {"recipe": "slow"}}), "unknown recipe 'slow'"),
    (lambda p: p["tables"]["t"].update(scales={"embedded": {"epochs": 3}}), "unknown key(s) epochs"),
    (lambda p: p["figures"]["f"].update(figure="histogram"), "unknown figure 'histogram'"),
    (lambda p: p["tables"]["t"].update(record="attribution"), "unknown record type 'attribution'"),
    (lambda p: p["tables"]["t"].update(fixed={"colour": "red"}), "fixed: unknown key(s) colour"),
    (lambda p: p["tables"]["t"]["rows"].update(config="recipe"), "config key 'recipe' is not a list of names"),
    (lambda p: p["tables"]["t"]["rows"].update(config="poisons", groups={"ar": {"AR": "ar"}}),
     "no group for 'ar-linf' of poisons; groups: ar"),
    (lambda p: p["tables"]["t"]["rows"].update(groups={"ar": {"AR": "ar"}}), "'groups' go with 'config'"),
    (lambda p: p["tables"]["t"].update(rows={"config": "poisons"}), "'config' needs an 'axis'"),
])
def test_a_bad_paper_config_names_the_table_and_the_field(change, message):
    config, _ = resolved("embedded", papers=[])
    paper = {"tables": {"t": {"metric": "final_test_acc", "rows": {"axis": "poison", "values": ["clean", "cuda"]},
                              "columns": {"axis": "defense", "values": ["none", "grayscale"]}}},
             "figures": {"f": {"figure": "accuracy-over-epochs", "runs": {"axis": "poison", "values": ["clean"]}}}}
    check_papers({"mine": paper}, config, FIGURES.names())
    change(paper)
    with pytest.raises(ConfigError, match=re.escape(message)) as error:
        check_papers({"mine": paper}, config, FIGURES.names())
    assert "papers/mine" in str(error.value)


def test_axes_take_their_names_from_the_config_in_its_order():
    config, _ = resolved("embedded", papers=[], poisons=["cuda", "ar"], evaluations=["linsep", "peak"],
                         tables=["poisons", "evaluations"])
    grids = load_grids(PAPERS_DIR, config)
    assert list(grids) == ["baselines"] and list(grids["baselines"]["tables"]) == ["poisons", "evaluations"]
    poisons, evaluations = paper_tables("baselines", grids["baselines"], config)
    assert [(c.row, c.column, c.metric, c.run.arch) for c in poisons.cells] == [
        (row, column, metric, "tinycnn") for row in ("clean", "cuda", "ar")
        for column, metric in (("final", "final_test_acc"), ("peak", "peak_test_acc"))]
    # One group of columns a configured evaluation, in the config's order; each reads its evaluation's json.
    clean = [c for c in evaluations.cells if c.row == "clean"]
    assert [(c.column, c.file) for c in clean] == [
        ("linear separability", "linsep"), ("peak epoch", "peak"), ("epochs to loss threshold", "peak")]
    with pytest.raises(ConfigError, match=r"tables: unknown table 'poison'; config/papers/baselines.yaml has: "):
        load_grids(PAPERS_DIR, {**config, "tables": ["poison"]})
    with pytest.raises(ConfigError, match="papers: 'baselines' is not a paper; its tables are chosen with `tables`"):
        load_grids(PAPERS_DIR, {**config, "papers": ["baselines"]})


def test_a_paper_registers_a_record_type_of_its_own_with_its_path_and_axes(monkeypatch):
    """A record that is not a run (an attribution method's support): its pattern, axes and checks, no rule edited."""
    from poisonlab.paths import Paths
    from poisonlab.records import RECORDS, RecordType

    def check(config, run):
        if run.method not in ("ssl-knn", "trak"):
            raise ConfigError(f"unknown method '{run.method}'")

    def check_file(file):
        raise ConfigError(f"support has no file '{file}'")

    support = RecordType(pattern="{results}/attribution/{dataset}/{method}/{recipe}/seed{seed}/{file}.json",
                         axes=("dataset", "method", "removed"), defaults={"removed": "0"},
                         stand_ins={"dataset": "datasets"}, default_file="support", metrics=("drop",),
                         check=check, check_file=check_file)
    monkeypatch.setitem(RECORDS._entries, "support", support)
    config, _ = resolved("embedded", papers=[], seeds=[0, 1])
    paper = {"tables": {"t": {"record": "support", "metric": "drop", "fixed": {"dataset": "cifar10"},
                              "rows": {"axis": "method", "values": {"SSL k-NN": "ssl-knn", "TRAK": "trak"}},
                              "columns": {"axis": "removed", "values": ["10", "100"]}}}}
    check_papers({"mine": paper}, config, FIGURES.names())
    [table] = paper_tables("mine", paper, config)
    cell = table.cells[-1]
    assert (cell.row, cell.column, cell.run.dataset, cell.run.method) == ("TRAK", "100", "mnist5k", "trak")
    assert cell.run.files(Paths("data", "results"), cell.file) == [
        f"results/attribution/mnist5k/trak/embedded/seed{seed}/support.json" for seed in (0, 1)]
    paper["tables"]["t"]["rows"]["values"]["Datamodels"] = "datamodels"
    with pytest.raises(ConfigError, match="papers/mine: table t: unknown method 'datamodels'"):
        check_papers({"mine": paper}, config, FIGURES.names())
    paper["tables"]["t"]["metric"] = "dfr:final.test_acc_after"
    with pytest.raises(ConfigError, match="unknown axis 'poison'; allowed: dataset, method, removed, metric"):
        paper["tables"]["t"]["rows"] = {"axis": "poison", "values": ["clean"]}
        check_papers({"mine": paper}, config, FIGURES.names())


def test_unknown_papers_and_clashing_recipes_are_rejected():
    with pytest.raises(ConfigError,
                       match="papers: unknown paper 'nope'; known papers: ar-poisoning, autoprotonet, cuda-sharpening"):
        load_papers(PAPERS_DIR, ["nope"])
    config, _ = resolved("embedded", papers=[])
    with pytest.raises(ConfigError, match="papers/mine: recipe 'embedded' is already defined differently"):
        add_paper_recipes(config, {"mine": {"recipes": {"embedded": {"epochs": 1}}}})


def test_a_reported_bound_keeps_the_reported_column_numeric(tmp_path):
    """learn-from-unlearnable's README gives only "more than 87%": reported 87 with bound ">", shown as (>87.00)."""
    reported = tmp_path / "reported.csv"
    reported.write_text("table,row,column,dataset,metric,reported,source\n"
                        "t,OPS,Ortho,cifar10,final_test_acc,>87,README\n"
                        "t,AR,Ortho,cifar10,final_test_acc,11.75,README\n")
    assert load_reported(reported) == {("t", "OPS", "Ortho"): (87.0, ">"), ("t", "AR", "Ortho"): (11.75, None)}
    run = tmp_path / "metrics.json"
    run.write_text(json.dumps({"final_test_acc": 88.5}))
    cells = [Cell("t", row, "Ortho", "cifar10", "paper", "final_test_acc", (str(run),), number, bound)
             for row, (number, bound) in (("OPS", (87.0, ">")), ("AR", (11.75, None)))]
    table = build_table(cells)
    assert tuple(table.columns) == TABLE_COLUMNS
    assert table["reported"].dtype == pl.Float64 and table["reported"].to_list() == [87.0, 11.75]
    assert table["reported_bound"].to_list() == [">", None]
    assert "| OPS | 88.50 (>87.00) |" in render_markdown(table) and "| AR | 88.50 (11.75) |" in render_markdown(table)
    assert r"88.50 (\textgreater{}87.00)" in render_latex(table)
    reported.write_text("table,row,column,dataset,metric,reported,source\nt,OPS,Ortho,cifar10,m,about 87,README\n")
    with pytest.raises(ConfigError, match="reported 'about 87' is neither a number nor a bound like >87"):
        load_reported(reported)


# ---------------------------------------------------------------- a paper table through the DAG, from fixture runs

FIXTURE_PAPER = """
title: A fixture paper
tables:
  grid:
    title: Accuracy of a fixture grid
    metric: final_test_acc
    rows: {axis: poison, values: {Clean: clean, CUDA: cuda}}
    columns: {axis: defense, values: {None: none, Grayscale: grayscale}}
"""
FIXTURE_REPORTED = """table,row,column,dataset,metric,reported,source
grid,CUDA,None,cifar10,final_test_acc,23.25,fixture
grid,CUDA,Grayscale,cifar10,final_test_acc,,not reported
"""
# final_test_acc of each (poison, defense) run, seeds 0 and 1.
FIXTURE_ACCURACY = {("clean", "none"): (97.0, 96.0), ("clean", "grayscale"): (95.5, 95.25),
                    ("cuda", "none"): (20.0, 30.0), ("cuda", "grayscale"): (41.0, 43.5)}


def write_fixture_runs(repo: Path) -> dict[tuple[str, str], list[Path]]:
    paths = {}
    for (poison, defense), accuracies in FIXTURE_ACCURACY.items():
        paths[poison, defense] = []
        for seed, accuracy in enumerate(accuracies):
            path = repo / f"results/runs/mnist5k/{poison}/{defense}/tinycnn/embedded/seed{seed}/metrics.json"
            path.parent.mkdir(parents=True)
            path.write_text(json.dumps({"poison": poison, "defense": defense, "seed": seed,
                                        "final_test_acc": accuracy, "peak_test_acc": accuracy + 1}))
            paths[poison, defense].append(path)
    return paths


def test_a_paper_table_from_runs_has_mean_std_and_reported_and_fails_naming_a_missing_run(scratch_repo,
                                                                                          workflow_env):
    (scratch_repo / "config/papers/fixture.yaml").write_text(FIXTURE_PAPER)
    (scratch_repo / "paper/fixture").mkdir(parents=True)
    (scratch_repo / "paper/fixture/reported.csv").write_text(FIXTURE_REPORTED)
    runs = write_fixture_runs(scratch_repo)
    # Only the table rule may run: the fixture runs stand in for trained ones.
    args = ["--profile", "local", "fixture_tables", "--config", "papers=[fixture]", "seeds=[0,1]",
            "--allowed-rules", "table", "fixture_tables"]
    snakemake(scratch_repo, *args, env=workflow_env)

    table = pl.read_csv(scratch_repo / "paper/fixture/tables/grid.csv")
    assert tuple(table.columns) == TABLE_COLUMNS
    assert list(zip(table["row"], table["column"])) == [("Clean", "None"), ("Clean", "Grayscale"),
                                                        ("CUDA", "None"), ("CUDA", "Grayscale")]
    markdown = (scratch_repo / "paper/fixture/tables/grid.md").read_text()
    latex = (scratch_repo / "paper/fixture/tables/grid.tex").read_text()
    for cell, (poison, defense) in zip(table.iter_rows(named=True), FIXTURE_ACCURACY):
        values = FIXTURE_ACCURACY[poison, defense]
        assert cell["ours"] == pytest.approx(statistics.mean(values))
        assert cell["ours_std"] == pytest.approx(statistics.stdev(values))
        assert (cell["n_seeds"], cell["dataset"], cell["scale"], cell["metric"]) == (
            2, "mnist5k", "embedded", "final_test_acc")
        assert cell["reported"] == (23.25 if (poison, defense) == ("cuda", "none") else None)
        text = f"{statistics.mean(values):.2f}"
        assert f"{text} ± {statistics.stdev(values):.2f}" in markdown
        assert f"{text} $\\pm$ {statistics.stdev(values):.2f}" in latex
    assert "25.00 ± 7.07 (23.25)" in markdown and "25.00 $\\pm$ 7.07 (23.25)" in latex
    assert markdown.startswith("Accuracy of a fixture grid: mnist5k, scale embedded")
    assert markdown.splitlines()[2] == "| | None | Grayscale |"  # laid out as the paper: defenses across

    missing = runs["cuda", "grayscale"][1]
    missing.unlink()
    for output in (scratch_repo / "paper/fixture/tables").iterdir():
        output.unlink()
    failed = snakemake(scratch_repo, *args, env=workflow_env, check=False)
    assert failed.returncode != 0
    assert str(missing.relative_to(scratch_repo)) in failed.stdout + failed.stderr


def test_dvc_caches_exactly_the_folders_the_default_papers_write():
    import yaml

    config, papers = resolved("embedded")
    stage = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["all_tables"]
    declared = {section: {next(iter(out)) for out in stage[section]} for section in ("outs", "metrics", "plots")}
    # Tables as outputs and their cells as metrics; figures as plots (outputs DVC also draws).
    assert {out for out in declared["outs"] if out.startswith("paper/")} == {
        f"paper/{slug}/tables" for slug, paper in papers.items() if paper.get("tables")}
    assert declared["metrics"] == {f"paper/{slug}/metrics" for slug, paper in papers.items() if paper.get("tables")}
    assert declared["plots"] == {f"paper/{slug}/figures" for slug, paper in papers.items() if paper.get("figures")}
