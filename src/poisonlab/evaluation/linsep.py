"""``linsep``: are a training set's perturbations linearly separable by class?

Sandoval-Segura et al., "What Can We Learn from Unlearnable Datasets?"
(NeurIPS 2023, Section 4.3), after Yu et al., "Availability Attacks Create
Shortcuts" (KDD 2022): fit logistic regression to (perturbation, label) and
report its training accuracy. Near 100% means the poison offers a linear
shortcut; the paper's counterexample is a poison that works without one.

Settings, and where they come from:

- δ = training images − clean training images, both as stored (the poisoned
  and sanitized containers keep the clean set's order and labels; checked).
- min-max normalisation over the whole set of perturbations (one min and one
  max, not per image), as the paper's script does; flattened to vectors.
- multinomial logistic regression without a penalty, as the paper's (a
  Linear layer fitted by full-batch LBFGS for 500 steps); here scikit-learn's
  lbfgs with ``C`` = inf for ``max_iter`` iterations. Separable perturbations
  have no finite optimum, so the fit stops at ``max_iter`` without converging;
  the training accuracy it has reached then is the answer.
- every training image by default, as the paper (50,000 for CIFAR-10);
  ``max_images`` fits a stratified subset with a fixed ``seed`` instead.

A set whose images all carry the same δ is not fitted: no linear model can
tell its classes apart, so the majority-class accuracy is reported; for the
clean poison (every δ zero, checked on the images used) with
``zero_perturbation: true``.

Training accuracy measures separability only with many more images than
dimensions: d-dimensional points in general position can be fitted to any
labels up to about 2d of them, and well beyond that a linear model still fits
random labels far above chance (measured here: uniform noise, 10 random
classes, 10,000 × 3,072 — a CIFAR-10 subsample — 98% after 100 iterations;
2,000 × 64, 23%). Hence the default of every image, and the same fit with the
labels shuffled (``train_acc_shuffled_labels``) reported beside the answer:
the accuracy this many images of this dimension reach with no class
information, the floor to read ``train_acc`` against.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from poisonlab.data.subset import stratified_indices
from poisonlab.evaluation.base import EVALUATIONS, TrainedRun, check_number
from poisonlab.registry import ConfigError


@EVALUATIONS.register("linsep")
def linsep(run: TrainedRun, *, max_images: int | None = None, max_iter: int = 500, seed: int = 0) -> dict[str, Any]:
    if max_images is not None:
        check_number("linsep", "max_images", max_images, minimum=1, integer=True)
    check_number("linsep", "max_iter", max_iter, minimum=1, integer=True)
    check_number("linsep", "seed", seed, minimum=0, integer=True)
    training, clean = run.training, run.clean
    if training.x_train.shape != clean.x_train.shape or not np.array_equal(training.y_train, clean.y_train):
        raise ConfigError(f"linsep: {run.training_data} and {run.clean_data} must hold the same training images "
                          "in the same order with the same labels")
    chosen = stratified_indices(clean.y_train, min(max_images or len(clean.y_train), len(clean.y_train)),
                                seed=seed, split="linsep max_images")
    labels = clean.y_train[chosen]
    delta = (training.x_train[chosen].astype(np.float32) - clean.x_train[chosen]).reshape(len(chosen), -1)
    result = {"images": len(chosen), "dimensions": delta.shape[1]}
    low, high = float(delta.min()), float(delta.max())
    if low == high:  # one δ for every image (zero for the clean poison): nothing tells the classes apart
        majority = 100.0 * np.bincount(labels).max() / len(labels)
        return {**result, "train_acc": majority, "train_acc_shuffled_labels": majority, "zero_perturbation": low == 0}
    normalised = (delta - low) / (high - low)
    shuffled = np.random.default_rng(seed).permutation(labels)
    return {**result, "train_acc": _training_accuracy(normalised, labels, max_iter),
            "train_acc_shuffled_labels": _training_accuracy(normalised, shuffled, max_iter),
            "zero_perturbation": False}


def _training_accuracy(features: np.ndarray, labels: np.ndarray, max_iter: int) -> float:
    """Training accuracy in percent of unpenalised multinomial logistic regression."""
    from sklearn.exceptions import ConvergenceWarning  # here, as in dfr: peak jobs need no scikit-learn
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=np.inf, max_iter=max_iter)
    # One BLAS thread: measured on 2 shared cores, the default two were 7-50x slower on these fits.
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # expected on separable data, see the module docstring
        model.fit(features, labels)
    return 100.0 * model.score(features, labels)
