"""``datamodels``: a sparse linear model of each target's margin as a function of the training subset.

Ilyas et al. 2022 fit, per target t, margin_t(S) ≈ θ_t·1_S + b_t by L1-regularised regression over
many models trained on random α-subsets; θ_t ranks the training images (largest first). MadryLab's
``datamodels``/``fast_l1`` are not on PyPI (design note §2), so the fit here is scikit-learn's
``Lasso`` on the pool's *fit* models only (``subsets.split_pool``); with ``lasso_alpha`` unset,
``LassoCV`` picks the penalty per target by 3-fold cross-validation over 10 values (chosen here; the
paper's path-with-validation is the same idea at scale). The masks are centred by α before the fit,
so θ is the effect of including an image and b the mean margin. At paper scale, a user's datamodel
weights (MadryLab datamodels-data) can be ranked directly with ``attributors.rank``.
"""

from __future__ import annotations

import time
import warnings

import numpy as np

from poisonlab.attribution.attributors import ATTRIBUTORS, Attribution, AttributionInputs, measure_cost, rank
from poisonlab.registry import ConfigError


def fit_datamodels(masks: np.ndarray, margins: np.ndarray, *, lasso_alpha: float | None = None,
                   seed: int = 0) -> np.ndarray:
    """(T, N) datamodel weights from ``masks`` (S, N) and the targets' ``margins`` (S, T)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import Lasso, LassoCV

    masks, margins = np.asarray(masks, np.float64), np.asarray(margins, np.float64)
    if len(masks) != len(margins):
        raise ConfigError(f"datamodels: {len(masks)} masks but {len(margins)} rows of margins")
    if lasso_alpha is not None and lasso_alpha <= 0:
        raise ConfigError(f"datamodels.lasso_alpha must be > 0 or null (cross-validated); got {lasso_alpha}")
    x = masks - masks.mean(0)
    weights = np.zeros((margins.shape[1], masks.shape[1]))
    with warnings.catch_warnings():
        # Few subsets against many images: a path point may stop at max_iter; the fit is still sparse and usable.
        warnings.simplefilter("ignore", ConvergenceWarning)
        for t in range(margins.shape[1]):
            if lasso_alpha is None:
                # The path sklearn would draw (10 values down to 1e-3 of the smallest all-zero penalty), given
                # explicitly: its keyword for a count changed names across the versions pyproject allows.
                top = np.abs(x.T @ (margins[:, t] - margins[:, t].mean())).max() / len(x)
                model = LassoCV(alphas=np.geomspace(top, top * 1e-3, 10), cv=3, max_iter=5000, random_state=seed)
            else:
                model = Lasso(alpha=lasso_alpha, max_iter=5000, random_state=seed)
            weights[t] = model.fit(x, margins[:, t]).coef_
    return weights


@ATTRIBUTORS.register("datamodels")
def datamodels(inputs: AttributionInputs, *, k: int = 1280, lasso_alpha: float | None = None, seed: int = 0,
               label_conditioned: bool = True) -> Attribution:
    """Datamodels from the pool's fit part: ``subset_masks``/``subset_margins`` must exclude the held-out models."""
    inputs.need("datamodels", "subset_masks", "subset_margins")
    started = time.perf_counter()
    weights = fit_datamodels(inputs.subset_masks, inputs.subset_margins, lasso_alpha=lasso_alpha, seed=seed)
    topk, top_scores = rank(weights, inputs.y_train, inputs.target_labels, k, label_conditioned)
    return Attribution(topk, top_scores, measure_cost(inputs, started, weights.astype(np.float32).nbytes,
                                               models=len(inputs.subset_masks)), signed=True)
