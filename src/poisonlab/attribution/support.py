"""Counterfactual evaluation: removal support and mislabel support of one target under one ranking.

From vasusingla/simple-data-attribution (``counterfactual_search.py``, ``train_utils.py``, commit
d2016b4): the support of a target t under a ranked list L is the smallest k such that retraining
with ``L[:k]`` removed (removal support) or relabelled to t's *flip class* (mislabel support) makes
the retrained models misclassify t. A probe at k is R retrains; it *flips* when their mean
correctness on t is <= 0.5 (majority rule). The search probes the largest k = K first; if that does
not flip, the support is "> K" (the repository's -1); otherwise it bisects. The flip class is t's
second most likely class under the mean prediction of reference models, or the most likely one
when the second is t's own label.

Chosen here: the bisection runs over a grid of k values (``grid``; the repository bisects the
integers 0..K, which is the grid 1..K) so small scales can probe {25, 50, 100, ...}; a probe stops
retraining once the majority is decided (the remaining votes could not change it); the R retrains
of every probe use the same R seeds, so probes at different k differ in the data only. One
(method, kind, target) is one call of ``support_unit``, which records each finished retrain in a
state file, so a killed job resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from poisonlab.atomic import write_json
from poisonlab.attribution.retrain import Retrainer
from poisonlab.registry import ConfigError

KINDS = ("removal", "mislabel")


# ---------------------------------------------------------------- views of the training set


def removal_view(x_train: np.ndarray, y_train: np.ndarray, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The training set without ``indices`` (new arrays; the inputs are untouched)."""
    keep = np.ones(len(y_train), bool)
    keep[np.asarray(indices, np.int64)] = False
    return x_train[keep], y_train[keep]


def mislabel_view(x_train: np.ndarray, y_train: np.ndarray, indices: np.ndarray, flip_class: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """The training set with the labels of ``indices`` set to ``flip_class`` (labels copied; images shared)."""
    labels = y_train.copy()
    labels[np.asarray(indices, np.int64)] = flip_class
    return x_train, labels


def view(kind: str, x_train: np.ndarray, y_train: np.ndarray, indices: np.ndarray, flip_class: int
         ) -> tuple[np.ndarray, np.ndarray]:
    if kind == "removal":
        return removal_view(x_train, y_train, indices)
    if kind == "mislabel":
        return mislabel_view(x_train, y_train, indices, flip_class)
    raise ConfigError(f"support kind: unknown '{kind}'; allowed: {', '.join(KINDS)}")


# ---------------------------------------------------------------- targets and flip classes


def flip_class(mean_probs: np.ndarray, label: int) -> int:
    """The repository's flip class: the second most likely class, or the most likely if that is ``label``."""
    order = np.argsort(-np.asarray(mean_probs), kind="stable")
    return int(order[0] if order[1] == label else order[1])


def choose_targets(reference_probs: np.ndarray, y_test: np.ndarray, n: int, *, seed: int) -> dict:
    """``n`` seeded test images that every reference model classifies correctly, with their flip classes.

    ``reference_probs`` is (models, test images, classes). Targets the references already get wrong
    could "flip" without any change, so they are left out (chosen here; the repository draws its 100
    targets at random from the whole test set).
    """
    probs = np.asarray(reference_probs)
    correct = (probs.argmax(-1) == np.asarray(y_test)[None]).all(0)
    pool = np.flatnonzero(correct)
    if len(pool) < n:
        raise ConfigError(f"targets: {n} asked for, but only {len(pool)} test images are correct under every reference")
    chosen = np.sort(np.random.default_rng(seed).choice(pool, n, replace=False))
    mean = probs.mean(0)
    return {"indices": chosen.tolist(), "labels": [int(y_test[i]) for i in chosen],
            "flip_classes": [flip_class(mean[i], int(y_test[i])) for i in chosen]}


# ---------------------------------------------------------------- the search


@dataclass
class SupportResult:
    support: int | None  # the smallest flipping grid point found; None: "> K" (K did not flip)
    max_k: int
    probes: list[dict] = field(default_factory=list)  # in the order run: k, votes (correct per retrain), flipped

    @property
    def label(self) -> str:
        return str(self.support) if self.support is not None else f"> {self.max_k}"


def majority_flips(votes: Sequence[bool], retrains: int) -> bool | None:
    """Whether ``retrains`` votes (True = correct) flip the target, or None while the rest could still decide it.

    Flip ⇔ mean correctness <= 0.5 over all ``retrains`` (the repository's rule).
    """
    correct = sum(votes)
    if correct > retrains / 2:
        return False
    if correct + (retrains - len(votes)) <= retrains / 2:
        return True
    return None


def max_probes(grid_size: int) -> int:
    """The search's probe bound: the K probe, then a bisection of the remaining grid."""
    return 1 + math.ceil(math.log2(grid_size)) if grid_size > 1 else 1


def search_support(probe: Callable[[int], bool], grid: Sequence[int], budget: int | None = None) -> SupportResult:
    """Smallest k in ``grid`` (ascending) with ``probe(k)`` true, assuming flips are monotone in k.

    k = grid[-1] first; then bisection over grid positions, at most ``budget`` probes in all when given
    (the repository's ``search_budget``: the best flipping k so far is returned when it runs out).
    """
    grid = [int(k) for k in grid]
    if not grid or grid != sorted(set(grid)) or grid[0] < 1:
        raise ConfigError(f"support grid must be increasing positive integers; got {grid}")
    result = SupportResult(None, grid[-1])

    def run(k: int) -> bool:
        flipped = probe(k)
        result.probes.append({"k": k, "flipped": flipped})
        return flipped

    if not run(grid[-1]):
        return result
    low, high = -1, len(grid) - 1  # grid[high] flips; below grid[0] nothing is changed, so no flip
    while high - low > 1 and (budget is None or len(result.probes) < budget):
        middle = (low + high) // 2
        if run(grid[middle]):
            high = middle
        else:
            low = middle
    result.support = grid[high]
    return result


# ---------------------------------------------------------------- one (method, kind, target) unit


def _digest(*arrays: np.ndarray) -> str:
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def support_unit(*, kind: str, ranking: np.ndarray, target: int, flip_to: int, x_train: np.ndarray,
                 y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, retrainer: Retrainer,
                 grid: Sequence[int], retrains: int, seed: int, budget: int | None = None,
                 state_path: str | os.PathLike | None = None) -> dict:
    """The support of test image ``target`` under ``ranking`` (train indices, best first): one DAG job.

    Each retrain's vote is appended to ``state_path`` (JSON) as it finishes; a rerun reads them back
    instead of retraining, so a killed job loses at most one retrain. Returns the record to write.
    """
    if kind not in KINDS:
        raise ConfigError(f"support kind: unknown '{kind}'; allowed: {', '.join(KINDS)}")
    if retrains < 1:
        raise ConfigError(f"support retrains must be >= 1; got {retrains}")
    ranking = np.asarray(ranking, np.int64)
    if max(grid) > len(ranking):
        raise ConfigError(f"support grid reaches k={max(grid)} but the ranking holds {len(ranking)} images")
    label = int(y_test[target])
    # What the votes depend on: a state file of another ranking, data or retrainer is not resumed from.
    fingerprint = {"kind": kind, "target": int(target), "flip_to": int(flip_to), "retrains": retrains, "seed": seed,
                   "retrainer": repr(retrainer), "ranking": _digest(ranking[:max(grid)]),
                   "data": _digest(x_train, y_train, x_test[target])}
    state_path = Path(state_path) if state_path is not None else None
    state = json.loads(state_path.read_text()) if state_path and state_path.exists() else {}
    done: dict[str, list[bool]] = state["votes"] if state.get("fingerprint") == fingerprint else {}
    seeds = [seed * 1000 + r for r in range(retrains)]
    started, trained = time.perf_counter(), 0

    def probe(k: int) -> bool:
        nonlocal trained
        votes = done.setdefault(str(k), [])
        x, y = view(kind, x_train, y_train, ranking[:k], flip_to)
        while (flipped := majority_flips(votes, retrains)) is None:
            votes.append(retrainer.correct(x, y, x_test[target], label, seed=seeds[len(votes)]))
            trained += 1
            if state_path is not None:
                write_json(state_path, {"fingerprint": fingerprint, "votes": done})
        return flipped

    result = search_support(probe, grid, budget)
    for row in result.probes:
        row["votes"] = done[str(row["k"])]
    return {"kind": kind, "target": int(target), "label": label, "flip_class": int(flip_to),
            "support": result.support, "support_label": result.label, "flipped": result.support is not None,
            "max_k": result.max_k, "grid": [int(k) for k in grid], "retrains": retrains, "probes": result.probes,
            "models_trained": sum(len(row["votes"]) for row in result.probes), "models_trained_now": trained,
            "seconds": time.perf_counter() - started}


# ---------------------------------------------------------------- summary over targets (a table cell)


def summarize_supports(supports: Sequence[int | None], max_k: int, *, n_boot: int = 2000, seed: int = 0) -> dict:
    """The paper's support statistics over targets, with bootstrap intervals over targets (2.5–97.5%).

    ``None`` is "> K". The median counts it as larger than every k (so the median itself can be "> K",
    returned as None); the mean is over the flipped targets only; ``pct_flipped`` is the share within K.
    Intervals: percentiles of the statistic over ``n_boot`` resamples of the targets (None where a
    resample's median is "> K" at that percentile, or no resample flips); ``*_sd`` their spread, for
    the tables' ``ours_std``.
    """
    values = np.array([np.inf if v is None else float(v) for v in supports])
    if not len(values):
        raise ConfigError("summarize_supports: no targets")
    rng = np.random.default_rng(seed)
    samples = values[rng.integers(0, len(values), (n_boot, len(values)))]
    medians = np.median(samples, axis=1)
    shares = 100.0 * np.isfinite(samples).mean(1)
    flipped_means = np.array([row[np.isfinite(row)].mean() for row in samples if np.isfinite(row).any()])

    def finite(x: float) -> float | None:
        return float(x) if np.isfinite(x) else None

    def interval(x: np.ndarray) -> list[float | None]:
        # Order statistics, not interpolated percentiles: a statistic can be inf ("> K"), and inf − inf is NaN.
        ordered = np.sort(x)
        return [finite(ordered[int(0.025 * (len(x) - 1))]), finite(ordered[math.ceil(0.975 * (len(x) - 1))])] \
            if len(x) else [None, None]

    flipped = values[np.isfinite(values)]
    return {"targets": len(values), "max_k": int(max_k),
            "median": finite(np.median(values)), "median_ci": interval(medians),
            "mean_flipped": float(flipped.mean()) if len(flipped) else None,
            "mean_flipped_ci": interval(flipped_means),
            "mean_flipped_sd": float(flipped_means.std()) if len(flipped_means) else None,
            "pct_flipped": 100.0 * len(flipped) / len(values), "pct_flipped_ci": interval(shares),
            "pct_flipped_sd": float(shares.std())}

