"""The baselines tables through the one table rule: the same bytes as before they became a grid spec.

tests/fixtures/baselines-tables/ holds the csv, md and tex that the hand-wired rules (one rule and
script a table) made from the fixture records below; the grid of config/papers/baselines.yaml must
make them again, number for number and byte for byte.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from helpers import ROOT, snakemake

EXPECTED = ROOT / "tests" / "fixtures" / "baselines-tables"
TABLES = ["baselines", "poisons", "defenses", "defenses-peak", "evaluations"]
ARCHS = ["smallcnn", "resnet18"]
POISONS = ["cuda", "ar", "em"]
DEFENSES = ["none", "grayscale", "at-linf-8"]
EVALUATIONS = ["peak", "dfr", "linsep"]
SEEDS = [0, 1]
CONFIG = ["papers=[]", f"tables=[{','.join(TABLES)}]", f"archs=[{','.join(ARCHS)}]",
          f"poisons=[{','.join(POISONS)}]", f"defenses=[{','.join(DEFENSES)}]",
          f"evaluations=[{','.join(EVALUATIONS)}]", f"seeds=[{','.join(map(str, SEEDS))}]"]


def write_fixture_records(repo: Path) -> None:
    """metrics.json and the evaluations' json of every run the tables read, numbers from a seeded generator."""
    for arch in ARCHS:
        for poison in ["clean", *POISONS]:
            for defense in DEFENSES:
                for seed in SEEDS:
                    run = repo / f"results/runs/mnist5k/{poison}/{defense}/{arch}/embedded/seed{seed}"
                    run.mkdir(parents=True)
                    rng = random.Random(f"{arch}/{poison}/{defense}/{seed}")

                    def accuracy() -> float:
                        return round(rng.uniform(10, 99), 3)

                    (run / "metrics.json").write_text(json.dumps({
                        "poison": poison, "defense": defense, "arch": arch, "seed": seed,
                        "final_test_acc": accuracy(), "peak_test_acc": accuracy(), "peak_epoch": rng.randint(1, 6)}))
                    records = {
                        # em's loss never falls below the threshold: a None, shown as "–"
                        "peak": {"peak_epoch": rng.randint(1, 6),
                                 "epochs_to_loss_threshold": None if poison == "em" else rng.randint(1, 6)},
                        "dfr": {"final": {"test_acc_before": accuracy(), "test_acc_after": accuracy()},
                                "best_after": {"test_acc_after": accuracy(), "epoch": rng.randint(1, 6)}},
                        "linsep": {"train_acc": accuracy()},
                    }
                    for evaluation, record in records.items():
                        (run / f"{evaluation}.json").write_text(json.dumps(record))


@pytest.mark.slow
def test_every_baselines_table_is_the_same_bytes_as_before(scratch_repo, workflow_env):
    write_fixture_records(scratch_repo)
    # Only the table rule may run: the fixture records stand in for trained and evaluated runs.
    snakemake(scratch_repo, "--profile", "local", "all_tables", "--config", *CONFIG,
              "--allowed-rules", "table", "all_tables", env=workflow_env)
    made = sorted(path.name for path in (scratch_repo / "paper/baselines/tables").iterdir())
    assert made == sorted(f"{table}.{ext}" for table in TABLES for ext in ("csv", "md", "tex", "html"))
    for name in made:
        if not name.endswith(".html"):  # the report's rendering came later than the fixtures
            assert (scratch_repo / "paper/baselines/tables" / name).read_text() == (EXPECTED / name).read_text(), name


def test_latex_tables_escape_the_labels_papers_use(tmp_path):
    import shutil
    import subprocess

    import polars as pl

    from poisonlab.reporting.tables import render_latex

    labels = ["at-linf-8/255", "L∞ ε<8 × 2", "50% & more_x", "#1 {a} ~^$\\", "≥ 3 → –"]
    table = pl.DataFrame({
        "table": "t", "row": labels, "column": ["acc_≤1"] * len(labels), "dataset": "d_1", "scale": "embedded",
        "metric": "final_test_acc", "ours": [1.0, 2.0, 3.0, float("nan"), 5.0], "ours_std": None, "n_seeds": 1,
        "reported": [None, 87.0, None, None, None], "reported_bound": [None, ">", None, None, None],
    })
    tex = render_latex(table, title="A_title & 100%")
    body = tex.split(r"\midrule")[1].split(r"\bottomrule")[0]
    assert r"L$\infty$ $\varepsilon$\textless{}8 $\times$ 2" in body and r"50\% \& more\_x" in body
    assert r"\#1 \{a\} \textasciitilde{}\textasciicircum{}\$\textbackslash{}" in body
    assert r"(\textgreater{}87.00)" in body and r"$\geq$ 3 $\to$ --" in body
    assert r"\caption{A\_title \& 100\%: d\_1" in tex
    assert not any(ord(char) > 127 for char in tex)  # pdflatex's default input sets no Unicode
    if shutil.which("pdflatex") is None:
        return  # the escapes are checked above; compiling needs texlive-latex-base (+ booktabs)
    (tmp_path / "t.tex").write_text("\\documentclass{article}\\usepackage{booktabs}\\begin{document}\n"
                                    + tex + "\\end{document}\n")
    done = subprocess.run(["pdflatex", "-interaction=nonstopmode", "t.tex"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:]


def test_html_tables_show_the_markdown_cells_with_labels_escaped():
    from html.parser import HTMLParser

    import polars as pl

    from poisonlab.reporting.tables import render_html

    table = pl.DataFrame({
        "table": "t", "row": ["<clean>", "L∞ & ε"], "column": "acc", "dataset": "d", "scale": "embedded",
        "metric": "final_test_acc", "ours": [96.0, 12.5], "ours_std": [0.5, None], "n_seeds": [2, 1],
        "reported": [None, 87.0], "reported_bound": [None, ">"],
    })
    page = render_html(table, title="Title <b>")
    assert "<clean>" not in page and "&lt;clean&gt;" in page and "Title &lt;b&gt;" in page

    class Cells(HTMLParser):  # a browser's reading: the text of each row's cells
        rows: list[list[str]] = []
        in_cell = False

        def handle_starttag(self, tag, attrs):
            if tag == "tr":
                self.rows.append([])
            elif tag in ("td", "th"):
                self.rows[-1].append("")
                self.in_cell = True

        def handle_endtag(self, tag):
            self.in_cell = self.in_cell and tag not in ("td", "th")

        def handle_data(self, data):
            if self.in_cell:
                self.rows[-1][-1] += data

    parser = Cells()
    parser.feed(page)
    assert parser.rows == [["", "acc"], ["<clean>", "96.00 ± 0.50"], ["L∞ & ε", "12.50 (>87.00)"]]
