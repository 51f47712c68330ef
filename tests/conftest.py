"""Fixtures shared by the tests, and the ``workflow`` marker (plain helpers: tests/helpers.py)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from helpers import BIN, ROOT, SHARED_CIFAR, project_files, quick_test_accuracy

if os.environ.get("PYTEST_XDIST_WORKER"):
    import torch

    # `make test` runs two workers on two cores: one thread each, or their thread pools fight over
    # the cores (measured: the suite took 15 min instead of 8.5). Subprocesses set their own.
    torch.set_num_threads(1)

# Test files that drive Snakemake, Slurm or DVC as subprocesses, beside every test that copies the project.
WORKFLOW_FILES = ("test_dvc.py", "test_slurm_cluster.py", "test_slurm_workflow.py")


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(items):
    """Mark the workflow tests, so `make test-fast` (-m "not workflow and not slow") runs the unit tests alone;
    put the tests that read smallcnn's CIFAR accuracies on one xdist worker, which trains each model once."""
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        if "scratch_repo" in fixtures or item.path.name in WORKFLOW_FILES:
            item.add_marker(pytest.mark.workflow)
        if "cifar_accuracy" in fixtures:
            item.add_marker(pytest.mark.xdist_group("cifar-models"))


@pytest.fixture
def scratch_repo(tmp_path) -> Path:
    """The project copied into tmp_path, so a workflow run writes data/, results/ and mlflow.db there."""
    repo = tmp_path / "repo"
    for name in project_files():
        target = repo / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target, follow_symlinks=False)
    return repo


@pytest.fixture
def workflow_env(monkeypatch) -> dict[str, str]:
    """Environment of a Snakemake subprocess: the venv first on PATH, MLflow on the project default."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "MLFLOW_DISABLE_TELEMETRY": "true"}


# ---------------------------------------------------------------- natural images for poison and defense tests


@pytest.fixture(scope="session")
def cifar_subset():
    """A fixed stratified 2,000/1,000 subset of the shared CIFAR-10 JPEG copy (seconds to train on)."""
    if not SHARED_CIFAR.exists():
        pytest.skip(f"{SHARED_CIFAR} is absent: poison effects are checked on natural images only")
    from poisonlab.data import build_dataset

    return build_dataset("cifar10-jpeg", options={"path": str(SHARED_CIFAR)}, subset={"train": 2000, "test": 1000})


@pytest.fixture(scope="session")
def poisoned_cifar(cifar_subset):
    """``poisoned_cifar(name, **params)``: ``cifar_subset`` poisoned (seed 0), made once a session."""
    from poisonlab.poisons import apply_poison

    made = {}

    def get(name: str, **params):
        key = (name, tuple(sorted(params.items())))
        if key not in made:
            made[key] = apply_poison(name, cifar_subset, seed=0, params=params)
        return made[key]

    return get


@pytest.fixture(scope="session")
def cifar_accuracy(cifar_subset, poisoned_cifar):
    """``cifar_accuracy(name, augment=True)``: smallcnn's quick_test_accuracy on the clean subset (``"clean"``)
    or on ``poisoned_cifar(name)``, trained once a session: several tests read a bound or a defense against
    the same model."""
    trained = {}

    def get(name: str, *, augment: bool = True) -> float:
        if (name, augment) not in trained:
            dataset = cifar_subset if name == "clean" else poisoned_cifar(name)
            trained[name, augment] = quick_test_accuracy(dataset, augment=augment)
        return trained[name, augment]

    return get


@pytest.fixture(scope="session")
def clean_cifar_accuracy(cifar_accuracy) -> float:
    """smallcnn's quick_test_accuracy on the clean subset (measured ~48.7%)."""
    return cifar_accuracy("clean")
