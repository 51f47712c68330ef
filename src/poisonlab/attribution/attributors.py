"""The attributors registry and the feature-space ones: ``ssl-esvm``, ``ssl-knn``, ``pixel-knn``, ``random``.

Every attributor maps ``AttributionInputs`` (the training set, the targets, and whatever it needs —
features, checkpoints, subset-model margins) to an ``Attribution``: a ranked top-k of training indices
per target, their scores, and the cost (models trained for it, seconds, bytes of what it keeps).
``trak`` and ``datamodels`` register in their own modules.

From vasusingla/simple-data-attribution ``features_to_topk_matrix.py`` (commit d2016b4):
- label conditioning: the candidates of a target are the training images with its label;
- ``esvm``: an exemplar SVM per target, scikit-learn ``LinearSVC(C=0.1, class_weight='balanced',
  max_iter=10000, tol=1e-6)`` fit on the target's feature (label 1) against the candidates' (label
  0), ranked by ``decision_function`` on the candidates, descending; features unnormalised;
- ``l2knn``: Euclidean distance, ascending.
Chosen here: ``pixel-knn`` (the same kNN on raw pixels: is SSL needed?) and ``random`` (a seeded
same-class order) as controls; every attributor can be label-conditioned (``label_conditioned``,
default on for all, so every method's supports are searched over the same candidates).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from poisonlab.registry import ConfigError, Registry


@dataclass
class AttributionInputs:
    """What attributors read; each takes the fields it needs and names a missing one."""

    y_train: np.ndarray
    target_indices: np.ndarray  # into the test set
    target_labels: np.ndarray
    x_train: np.ndarray | None = None  # uint8 NHWC: pixel-knn, trak
    x_targets: np.ndarray | None = None
    train_features: np.ndarray | None = None  # (N, D) from a backbone: ssl-esvm, ssl-knn
    target_features: np.ndarray | None = None  # (T, D)
    checkpoints: list | None = None  # state dicts of the attributed model: trak
    build_model: Callable | None = None  # () -> untrained attributed model with the checkpoints' keys
    normalize: Callable | None = None  # raw pixels -> model input: trak
    subset_masks: np.ndarray | None = None  # (S, N) bool, the subset models' training sets: datamodels
    subset_margins: np.ndarray | None = None  # (S, T) margins of the targets under them
    # Cost of what was trained for this method before it ran, beyond the models it counts itself (TRAK its
    # checkpoints, datamodels its subsets): the SSL backbone for ssl-*, {"models_trained": 1, "seconds": …};
    # for trak and datamodels the seconds their models took.
    upstream: dict = field(default_factory=dict)

    def need(self, method: str, *names: str) -> None:
        missing = [name for name in names if getattr(self, name) is None]
        if missing:
            raise ConfigError(f"attributor '{method}' needs {', '.join(missing)}")


@dataclass
class Attribution:
    topk: np.ndarray  # (T, k) int64 training indices, best first
    scores: np.ndarray  # (T, k) float32: each method's own score (higher = more responsible)
    cost: dict
    signed: bool = False  # scores estimate effects on the margin (TRAK, datamodels), not only an order


ATTRIBUTORS: Registry[Callable[..., Attribution]] = Registry("attributor")


def rank(scores: np.ndarray, y_train: np.ndarray, target_labels: np.ndarray, k: int,
         label_conditioned: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` training indices per target by ``scores`` (T, N), highest first; ties by index.

    Conditioned, a target's list holds only training images of its label, and ``k`` is capped at the
    smallest class (so all lists have one length).
    """
    scores = np.asarray(scores, np.float64)
    if label_conditioned:
        same = np.asarray(y_train)[None, :] == np.asarray(target_labels)[:, None]
        k = min(k, int(same.sum(1).min()))
        scores = np.where(same, scores, -np.inf)
    k = min(k, scores.shape[1])
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return order.astype(np.int64), np.take_along_axis(scores, order, 1).astype(np.float32)


def measure_cost(inputs: AttributionInputs, started: float, nbytes: int, models: int = 0) -> dict:
    """An attribution's cost: the models it trained plus ``inputs.upstream``'s, seconds since ``started`` plus
    upstream's, and the bytes of what it keeps to attribute (features, projected gradients, weights)."""
    upstream = inputs.upstream
    return {"models_trained": models + int(upstream.get("models_trained", 0)),
            "seconds": time.perf_counter() - started + float(upstream.get("seconds", 0.0)),
            "attribution_seconds": time.perf_counter() - started,
            "bytes": int(nbytes)}


def esvm_scores(train_features: np.ndarray, target_feature: np.ndarray, *, C: float = 0.1,
                max_iter: int = 10000, tol: float = 1e-6) -> np.ndarray:
    """Exemplar-SVM scores of ``train_features`` for one target, as the repository fits it."""
    from sklearn.svm import LinearSVC  # imported here: scikit-learn costs every importer ~1.5 s

    x = np.concatenate([np.asarray(target_feature)[None], train_features]).astype(np.float64)
    y = np.zeros(len(x), np.int64)
    y[0] = 1
    svm = LinearSVC(C=C, class_weight="balanced", max_iter=max_iter, tol=tol).fit(x, y)
    return svm.decision_function(np.asarray(train_features, np.float64))


@ATTRIBUTORS.register("ssl-esvm")
def ssl_esvm(inputs: AttributionInputs, *, k: int = 1280, C: float = 0.1, max_iter: int = 10000,
             tol: float = 1e-6, label_conditioned: bool = True) -> Attribution:
    inputs.need("ssl-esvm", "train_features", "target_features")
    started = time.perf_counter()
    scores = np.full((len(inputs.target_labels), len(inputs.y_train)), -np.inf)
    for t, label in enumerate(inputs.target_labels):
        # The SVM sees only the candidates: conditioned, the target's class (as the repository).
        pool = np.flatnonzero(inputs.y_train == label) if label_conditioned else np.arange(len(inputs.y_train))
        scores[t, pool] = esvm_scores(inputs.train_features[pool], inputs.target_features[t], C=C,
                                      max_iter=max_iter, tol=tol)
    topk, top_scores = rank(scores, inputs.y_train, inputs.target_labels, k, label_conditioned)
    return Attribution(topk, top_scores, measure_cost(inputs, started, inputs.train_features.nbytes))


def _knn(inputs: AttributionInputs, train: np.ndarray, targets: np.ndarray, k: int, label_conditioned: bool,
         started: float) -> Attribution:
    train, targets = np.asarray(train, np.float64), np.asarray(targets, np.float64)
    # Squared distances by the expansion |a|² − 2a·b + |b|²: one matrix product, no (T, N, D) tensor.
    distances = (targets ** 2).sum(1)[:, None] - 2 * targets @ train.T + (train ** 2).sum(1)[None]
    topk, top_scores = rank(-distances, inputs.y_train, inputs.target_labels, k, label_conditioned)
    return Attribution(topk, top_scores, measure_cost(inputs, started, train.nbytes))


@ATTRIBUTORS.register("ssl-knn")
def ssl_knn(inputs: AttributionInputs, *, k: int = 1280, label_conditioned: bool = True) -> Attribution:
    inputs.need("ssl-knn", "train_features", "target_features")
    return _knn(inputs, inputs.train_features, inputs.target_features, k, label_conditioned, time.perf_counter())


@ATTRIBUTORS.register("pixel-knn")
def pixel_knn(inputs: AttributionInputs, *, k: int = 1280, label_conditioned: bool = True) -> Attribution:
    inputs.need("pixel-knn", "x_train", "x_targets")
    started = time.perf_counter()
    flat = lambda x: np.asarray(x, np.float32).reshape(len(x), -1) / 255.0  # noqa: E731
    return _knn(inputs, flat(inputs.x_train), flat(inputs.x_targets), k, label_conditioned, started)


@ATTRIBUTORS.register("random")
def random_order(inputs: AttributionInputs, *, k: int = 1280, seed: int = 0, label_conditioned: bool = True
                 ) -> Attribution:
    """A seeded random order of the candidates: the baseline every method should beat."""
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    scores = rng.random((len(inputs.target_labels), len(inputs.y_train)))
    topk, top_scores = rank(scores, inputs.y_train, inputs.target_labels, k, label_conditioned)
    return Attribution(topk, top_scores, measure_cost(inputs, started, 0))
