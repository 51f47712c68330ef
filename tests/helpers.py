"""Helpers the tests import (``from helpers import ...``): paths, a Snakemake runner, toy data, a quick trainer.

Fixtures live in conftest.py; plain functions and constants live here, so a test module imports
them like any other module instead of reaching into conftest.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the venv's bin: snakemake, dvc, python
SHARED_CIFAR = ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"


class Killed(Exception):
    """Raised where a test stops a job mid-way, standing for the SIGKILL its resume must survive."""


def project_files() -> list[str]:
    """Tracked files and new ones git does not ignore: what a fresh clone plus this change holds."""
    listing = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout
    return [name for name in listing.split("\0") if name and os.path.lexists(ROOT / name)]


def snakemake(repo: Path, *args: str, env: dict[str, str], check: bool = True,
              timeout: float = 600) -> subprocess.CompletedProcess:
    result = subprocess.run([str(BIN / "snakemake"), *args], cwd=repo, env=env, capture_output=True, text=True,
                            timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}")
    return result


# Where Debian puts the programs the tests install (sbin is not on every PATH).
SYSTEM_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin", "/usr/bin"])


def which(program: str) -> str | None:
    return shutil.which(program, path=SYSTEM_PATH)


def apt_install(packages: Sequence[str], programs: Sequence[str], timeout: float = 900) -> str | None:
    """Install Debian ``packages`` when one of ``programs`` is missing; None once all are there, else why not
    (not root, no apt-get, a failed or slow apt-get): the reason a test that needs them skips with."""
    missing = [p for p in programs if which(p) is None]
    if not missing:
        return None
    if os.geteuid() != 0:
        return f"{', '.join(missing)} missing and not root, so cannot apt-get install them"
    if which("apt-get") is None:
        return f"{', '.join(missing)} missing and no apt-get to install them"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    # Recommends would pull dozens of packages the tests never load.
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends", *packages]):
        try:
            result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return f"`{shlex.join(cmd)}` did not finish within {timeout} s"
        if result.returncode != 0:
            tail = "\n".join((result.stdout + result.stderr).splitlines()[-15:])
            return f"`{shlex.join(cmd)}` failed with exit code {result.returncode}:\n{tail}"
    still_missing = [p for p in programs if which(p) is None]
    return f"installed {' '.join(packages)} but still missing {', '.join(still_missing)}" if still_missing else None


# ---------------------------------------------------------------- a toy dataset the trainer learns in seconds


def quadrant_dataset(n_train: int = 256, n_test: int = 64, seed: int = 0, channels: int = 1):
    """Four classes told apart by which quadrant of an 8×8 image is bright: learnable in a few epochs."""
    import numpy as np

    from poisonlab.data.container import ImageDataset

    rng = np.random.default_rng(seed)

    def make(n):
        y = np.arange(n) % 4
        x = rng.integers(0, 60, size=(n, 8, 8, channels), dtype=np.uint8)
        for i, label in enumerate(y):
            r, c = divmod(label, 2)
            x[i, r * 4:(r + 1) * 4, c * 4:(c + 1) * 4] += 150
        return x, y

    (xtr, ytr), (xte, yte) = make(n_train), make(n_test)
    return ImageDataset(xtr, ytr, xte, yte, classes=np.array(list("abcd")))


# ---------------------------------------------------------------- natural images for poison and defense tests


def quick_recipe(*, epochs: int = 8, augment: bool = True):
    """The natural-image tests' recipe: smallcnn-sized SGD, cosine, crop + flip as the papers (or none)."""
    from poisonlab.training import Recipe

    return Recipe.from_dict({"epochs": epochs, "batch_size": 64, "lr": 0.05, "nesterov": True, "schedule": "cosine",
                             "warmup_epochs": 1,
                             "augment": {"crop": {"padding": 4}, "flip": {}} if augment else {}})


def quick_test_accuracy(dataset, *, epochs: int = 8, seed: int = 0, defense=None, augment: bool = True) -> float:
    """Train smallcnn briefly by ``quick_recipe`` and return its final clean-test accuracy in %.

    ``defense``: a training-time defense (``poisonlab.training.procedure.TrainingDefense``) or None.
    """
    import torch

    from poisonlab.models import build_model
    from poisonlab.training import DeviceData, fit

    torch.manual_seed(seed)
    height, _, channels = dataset.image_shape
    model = build_model("smallcnn", num_classes=dataset.num_classes, in_channels=channels, image_size=height)
    return fit(model, DeviceData.from_container(dataset, torch.device("cpu")), quick_recipe(epochs=epochs,
               augment=augment), seed=seed, progress=False, defense=defense).final_test_acc


# ---------------------------------------------------------------- Snakemake's HTML report, as a reader's browser shows it


def report_in_chromium(report: Path, category: str) -> dict[str, dict[str, object]]:
    """Open ``report`` (``snakemake --report``) in headless Chromium as a reader would: click the category,
    each subcategory and each result's view button. Returns ``{subcategory: {label: shown}}``: for an image,
    its rendered width in pixels; for an HTML result, the text of its table's cells, row by row.

    Debian's chromium and chromium-driver are installed when missing; pytest skips when they cannot be."""
    import pytest

    reason = apt_install(("chromium", "chromium-driver"), ("chromium", "chromedriver"))
    if reason is not None:
        pytest.skip(f"no headless Chromium: {reason}")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = which("chromium")
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(which("chromedriver")))
    wait = WebDriverWait(driver, 30)

    def menu_item(label: str):
        # With one category only, the menu shows it as "Results".
        return wait.until(lambda d: d.find_element(By.XPATH, f"//li/a[span[normalize-space()='{label}']] | "
                                                              f"//li/a[span[normalize-space()='Results']]"))

    shown: dict[str, dict[str, object]] = {}
    try:
        for subcategory in ("figures", "tables"):
            driver.get(report.as_uri())
            menu_item(category).click()
            menu_item(subcategory).click()
            rows = wait.until(lambda d: d.find_elements(By.XPATH, "//tr[td/div[@role='group']]"))
            shown[subcategory] = {}
            for index in range(len(rows)):
                row = driver.find_elements(By.XPATH, "//tr[td/div[@role='group']]")[index]
                label = row.find_element(By.XPATH, "./td[1]").text.strip()
                row.find_element(By.XPATH, "./td/div[@role='group']/*[1]").click()
                if subcategory == "figures":
                    image = wait.until(lambda d: d.find_element(By.XPATH, "//img[starts-with(@src, 'data:image/png')]"))
                    wait.until(lambda d: d.execute_script("return arguments[0].complete", image))
                    shown[subcategory][label] = driver.execute_script("return arguments[0].naturalWidth", image)
                else:
                    driver.switch_to.frame(wait.until(lambda d: d.find_element(By.TAG_NAME, "iframe")))
                    cells = [[cell.text for cell in tr.find_elements(By.XPATH, "./th|./td")]
                             for tr in driver.find_elements(By.XPATH, "//table//tr")]
                    driver.switch_to.default_content()
                    shown[subcategory][label] = cells
    finally:
        driver.quit()
    return shown
