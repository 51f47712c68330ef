"""DVC over the Snakemake DAG: `dvc repro` calls Snakemake, persisted outputs, push and pull byte for byte."""

from __future__ import annotations

import configparser
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from poisonlab.config import merge

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the venv's bin: dvc, snakemake
RUNS = "results/runs/mnist5k/clean/none/tinycnn/tiny"
OUTS = ("data", "results", "paper/baselines/tables")


def dvc_yaml() -> dict:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())


def test_dvc_config_has_analytics_off():
    config = configparser.ConfigParser()
    config.read(ROOT / ".dvc" / "config")
    assert config["core"]["analytics"] == "false"


def test_stages_call_snakemake_and_persist_the_generated_folders():
    stages = dvc_yaml()["stages"]
    for name, stage in stages.items():
        assert "snakemake" in stage["cmd"] and "--profile local" in stage["cmd"], name
        assert {"Snakefile", "rules", "workflow", "src/poisonlab", "config"} <= set(stage["deps"]), name
        for out in stage["outs"]:
            (path, options), = out.items()
            assert options["persist"] is True and options.get("cache", True) is True, path
            assert path != "paper", "paper/ holds git-tracked READMEs and reported.csv; track its generated folders"
    # Then each paper's generated folders (tests/test_papers.py checks those against config.yaml's papers).
    assert tuple(path for out in stages["all_tables"]["outs"] for path in out)[:len(OUTS)] == OUTS


# ---------------------------------------------------------------- the tiny DAG through DVC


def project_files() -> list[str]:
    """Tracked files and new ones git does not ignore (dvc.yaml, .dvc/config, ...): a clone plus this change."""
    listing = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout
    return [name for name in listing.split("\0") if name and os.path.lexists(ROOT / name)]


def run(repo: Path, *args: str, env: dict[str, str]) -> str:
    result = subprocess.run(list(args), cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}")
    return result.stdout + result.stderr


def outputs(repo: Path) -> dict[str, tuple[str, int]]:
    """Every file of the DVC outputs: relative path → (sha256, mtime_ns)."""
    files = {}
    for out in OUTS:
        for path in sorted((repo / out).rglob("*")):
            if path.is_file():
                files[str(path.relative_to(repo))] = (hashlib.sha256(path.read_bytes()).hexdigest(),
                                                      path.stat().st_mtime_ns)
    return files


def digests(files: dict[str, tuple[str, int]]) -> dict[str, str]:
    return {path: sha for path, (sha, _) in files.items()}


@pytest.fixture
def dvc_repo(tmp_path) -> tuple[Path, dict[str, str]]:
    """A git repo in tmp_path holding the project, the tiny config as its config/config.yaml, the venv linked."""
    repo = tmp_path / "repo"
    for name in project_files():
        target = repo / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target, follow_symlinks=False)
    # The stage's command is fixed (`snakemake --profile local all_tables`), so the tiny config is the config.
    tiny = merge(yaml.safe_load((ROOT / "config/config.yaml").read_text()),
                 yaml.safe_load((ROOT / "tests/fixtures/tiny.yaml").read_text()))
    (repo / "config/config.yaml").write_text(yaml.safe_dump(tiny, sort_keys=False))
    # The tiny config builds no paper, so DVC must not expect the papers' table and figure folders.
    stages = yaml.safe_load((repo / "dvc.yaml").read_text())
    stage = stages["stages"]["all_tables"]
    for section in ("outs", "metrics", "plots"):
        stage[section] = [out for out in stage[section] if next(iter(out)).split("/")[:2] in (
            ["data"], ["results"], ["paper", "baselines"])]
    if not stage["plots"]:  # the baselines grid draws no figure; DVC refuses an empty section
        del stage["plots"]
    (repo / "dvc.yaml").write_text(yaml.safe_dump(stages, sort_keys=False))
    (repo / ".venv").symlink_to(BIN.parent, target_is_directory=True)  # dvc.yaml calls .venv/bin/snakemake

    env = {**os.environ,
           "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
           "DVC_NO_ANALYTICS": "1",
           "DVC_GLOBAL_CONFIG_DIR": str(tmp_path / "dvc-global"),
           "DVC_SYSTEM_CONFIG_DIR": str(tmp_path / "dvc-system"),
           "DVC_SITE_CACHE_DIR": str(tmp_path / "dvc-site-cache"),
           "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
           "MLFLOW_DISABLE_TELEMETRY": "true",
           "GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@example.com",
           "GIT_COMMITTER_NAME": "test", "GIT_COMMITTER_EMAIL": "test@example.com",
           "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}
    run(repo, "git", "init", "--quiet", "--initial-branch", "main", env=env)
    (repo / ".git/info/exclude").write_text("/.venv\n")  # a link, which `.venv/` in .gitignore does not match
    run(repo, "git", "add", "--all", env=env)
    run(repo, "git", "commit", "--quiet", "--message", "project", env=env)
    return repo, env


@pytest.mark.slow
def test_repro_push_delete_pull_gives_back_the_same_bytes_and_retrains_nothing(dvc_repo, tmp_path):
    repo, env = dvc_repo
    dvc = str(BIN / "dvc")

    # dvc repro → Snakemake builds the tiny DAG; DVC caches the outputs and writes dvc.lock.
    assert "Running stage 'all_tables'" in run(repo, dvc, "repro", env=env)
    built = outputs(repo)
    # epochs/ is a directory() output: Snakemake marks it finished with an empty .snakemake_timestamp.
    expected = {"data/clean/mnist5k.npz",
                *(f"{RUNS}/seed{seed}/{name}" for seed in (0, 1)
                  for name in ("metrics.json", "model.pt", "epochs/epoch001.pt", "epochs/epoch002.pt",
                               "epochs/.snakemake_timestamp")),
                *(f"paper/baselines/tables/baselines.{ext}" for ext in ("csv", "md", "tex", "html"))}
    assert set(built) == expected
    # The outputs were git-ignored already: DVC adds no .gitignore entries; new are dvc.lock and the table's
    # cells as metrics (cache: false: git keeps them, so `dvc metrics diff` compares commits).
    assert run(repo, "git", "status", "--porcelain", env=env).splitlines() == [
        "?? dvc.lock", "?? paper/baselines/metrics/"]
    final = json.loads((repo / "paper/baselines/metrics/baselines.json").read_text())["tinycnn"]["final"]
    assert json.dumps(final) in run(repo, dvc, "metrics", "show", "--json", env=env)  # `dvc metrics` reads them

    # Nothing changed: DVC does not even call Snakemake. What .dvcignore leaves out (byte-code in a
    # dependency, a killed run's checkpoint, an atomic write in flight) changes nothing either.
    strays = [repo / "src/poisonlab/__pycache__/config.cpython-311.pyc", repo / RUNS / "seed0/checkpoint.pt",
              repo / "data/clean/.mnist5k.npz.x1y2z3.tmp"]
    for stray in strays:
        stray.parent.mkdir(parents=True, exist_ok=True)
        stray.write_bytes(b"not a result")
    assert "didn't change, skipping" in run(repo, dvc, "repro", env=env)
    assert "up to date" in run(repo, dvc, "status", env=env)
    for stray in strays:
        stray.unlink()
    assert outputs(repo) == built

    # A dependency changed (the table script): the stage reruns, but the outputs persist, so Snakemake
    # remakes only the table; the container and the checkpoints stay untouched.
    script = repo / "workflow/scripts/table.py"
    script.write_text(script.read_text() + "# edited\n")
    log = run(repo, dvc, "repro", env=env)
    assert "rule table" in log and "rule train" not in log and "rule clean_dataset" not in log
    after_edit = outputs(repo)
    assert all(after_edit[path] == built[path] for path in expected if not path.startswith("paper/"))
    assert "up to date" in run(repo, dvc, "status", env=env)

    # Push to a local remote, then lose the cache, the outputs and Snakemake's metadata (another machine).
    run(repo, dvc, "remote", "add", "--default", "storage", str(tmp_path / "remote"), env=env)
    run(repo, dvc, "push", env=env)
    for path in (".dvc/cache", ".snakemake", *OUTS):
        shutil.rmtree(repo / path)
    run(repo, dvc, "pull", env=env)
    pulled = outputs(repo)
    assert digests(pulled) == digests(after_edit)  # byte-identical container, checkpoints, metrics, tables

    # Pulled outputs are up to date for DVC: repro skips and nothing retrains.
    assert "up to date" in run(repo, dvc, "status", env=env)
    assert "didn't change, skipping" in run(repo, dvc, "repro", env=env)
    assert outputs(repo) == pulled

    # Snakemake judges by mtimes, which the checkout sets in its own order: `--touch` marks the pulled
    # outputs up to date in DAG order without changing a byte, so a plain `snakemake` then does nothing.
    snakemake = str(BIN / "snakemake")
    run(repo, snakemake, "--profile", "local", "all_tables", "--touch", env=env)
    assert "Nothing to be done" in run(repo, snakemake, "--profile", "local", "all_tables", "--dry-run", env=env)
    assert digests(outputs(repo)) == digests(after_edit)
    assert "up to date" in run(repo, dvc, "status", env=env)


def test_the_paper_scales_epoch_weights_stay_out_of_the_cache_and_pushes():
    run_dir = "results/{}/runs/cifar10/clean/none/resnet18/resnet-100ep/seed0"
    paths = [f"{run_dir.format('paper')}/epochs/epoch001.pt", f"{run_dir.format('paper')}/model.pt",
             "results/runs/mnist5k/clean/none/tinycnn/embedded/seed0/epochs/epoch001.pt"]
    ignored = subprocess.run([str(BIN / "dvc"), "check-ignore", *paths], cwd=ROOT, capture_output=True, text=True)
    assert ignored.stdout.split() == paths[:1]  # the paper scale's per-epoch weights only
