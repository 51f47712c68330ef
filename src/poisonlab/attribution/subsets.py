"""Models trained on random subsets, and the linear datamodeling score (LDS) they measure attributions by.

One pool of subset-trained models feeds two things (design note ``ssl-attribution.md`` §5): the
``datamodels`` attributor fits on the *fit* part of the pool, and LDS scores every attributor on the
*held-out* part, whose masks no attributor ever sees. ``split_pool`` makes that split once, by model
index, so the two cannot overlap.

LDS as the TRAK paper defines it (Park et al. 2023, §2): for a target t and a held-out subset S,
the attribution's prediction is the sum of its scores over S, ``τ(t)·1_S``; the LDS of t is the
Spearman correlation over subsets between predictions and the actual margins of t under models
trained on S; the score is the mean over targets. A subset model is trained for the same number of
*steps* as a full model (epochs scaled by 1/α): with epochs unscaled a 50% model sees half the steps
and is far weaker (76% vs 93% measured, note §4), so its margins measure undertraining, not data.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from poisonlab.attribution.retrain import Retrainer, margins
from poisonlab.registry import ConfigError


def subset_masks(n_train: int, n_models: int, *, alpha: float = 0.5, seed: int = 0) -> np.ndarray:
    """(n_models, n_train) bool: each row a uniformly random subset of exactly round(α·n) training images."""
    if not 0 < alpha < 1:
        raise ConfigError(f"subsets.alpha must lie in (0, 1); got {alpha}")
    size = round(alpha * n_train)
    rng = np.random.default_rng(seed)
    masks = np.zeros((n_models, n_train), bool)
    for row in masks:
        row[rng.choice(n_train, size, replace=False)] = True
    return masks


def split_pool(n_models: int, heldout: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the pool's fit models (datamodels) and held-out models (LDS): the last ``heldout`` are held out."""
    if not 0 < heldout < n_models:
        raise ConfigError(f"subsets.heldout must lie in [1, {n_models - 1}] for {n_models} models; got {heldout}")
    return np.arange(n_models - heldout), np.arange(n_models - heldout, n_models)


def subset_margins(retrainer: Retrainer, x_train: np.ndarray, y_train: np.ndarray, masks: np.ndarray,
                   x_targets: np.ndarray, y_targets: np.ndarray, *, seed: int, same_steps: bool = True
                   ) -> np.ndarray:
    """(len(masks), T) margins of the targets under a model trained on each mask (a shard of the pool).

    Model i is seeded ``seed + i``: a shard given the pool's seed offset trains the same models as the
    whole pool would.
    """
    out = np.zeros((len(masks), len(x_targets)))
    for i, mask in enumerate(masks):
        fraction = mask.mean()
        trainer = retrainer
        if same_steps:
            epochs = max(1, math.ceil(retrainer.recipe.epochs / fraction))
            trainer = dataclasses.replace(retrainer, recipe=dataclasses.replace(retrainer.recipe, epochs=epochs))
        _, logits = trainer.train(x_train[mask], y_train[mask], x_targets, seed=seed + i)
        out[i] = margins(logits, y_targets)
    return out


def _ranks(values: np.ndarray) -> np.ndarray:
    """Average ranks along axis 0 (ties share their mean rank), as Spearman's correlation needs."""
    from scipy.stats import rankdata  # scipy comes with scikit-learn

    return rankdata(values, axis=0)


def lds(scores: np.ndarray, masks: np.ndarray, actual: np.ndarray) -> dict:
    """Linear datamodeling score of ``scores`` (T, N) against held-out ``masks`` (S, N) and margins ``actual`` (S, T).

    Returns the mean over targets and the per-target Spearman correlations (NaN where either side is
    constant over the subsets, e.g. an attribution with no scores; left out of the mean).
    """
    scores, masks, actual = np.asarray(scores, np.float64), np.asarray(masks, np.float64), np.asarray(actual)
    if masks.shape[0] < 3:
        raise ConfigError(f"LDS needs at least 3 held-out subsets; got {masks.shape[0]}")
    predicted = masks @ scores.T  # (S, T)
    rp, ra = _ranks(predicted), _ranks(actual)
    rp, ra = rp - rp.mean(0), ra - ra.mean(0)
    denominator = np.sqrt((rp ** 2).sum(0) * (ra ** 2).sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        per_target = np.where(denominator > 0, (rp * ra).sum(0) / denominator, np.nan)
    valid = per_target[np.isfinite(per_target)]
    return {"lds": float(valid.mean()) if len(valid) else float("nan"), "per_target": per_target.tolist(),
            "subsets": int(masks.shape[0])}


def dense_scores(topk: np.ndarray, top_scores: np.ndarray, n_train: int, *, signed: bool) -> np.ndarray:
    """An attribution's top-k as a (T, N) score matrix for LDS: its scores where ranked, 0 elsewhere.

    ``signed`` scores (TRAK, datamodels) estimate an effect on the margin, sign included, and are used
    as they are. Similarity scores (ESVM decisions, negated distances, random draws) only order the
    candidates; they are shifted so the lowest kept one is just above 0 — otherwise a negated distance
    would predict that keeping more of a target's nearest neighbours *lowers* its margin (chosen here:
    the paper's LDS of its baseline, 0.05, does not say how its scores entered).
    """
    top_scores = np.asarray(top_scores, np.float64)
    if not signed:
        top_scores = top_scores - top_scores.min(1, keepdims=True) + 1e-6
    dense = np.zeros((len(topk), n_train))
    np.put_along_axis(dense, np.asarray(topk, np.int64), top_scores, 1)
    return dense
