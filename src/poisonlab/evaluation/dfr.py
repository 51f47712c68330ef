"""``dfr``: Deep Feature Reweighting over training — how much of a clean classifier a model's features hold.

Sandoval-Segura et al., "What Can We Learn from Unlearnable Datasets?"
(NeurIPS 2023, Section 4.2): for each kept epoch's checkpoint of a model
trained on unlearnable data, freeze all but the last layer, retrain it on
clean training images and report clean test accuracy before and after. A high
accuracy after retraining means the network learned useful features despite
the poison; a low one before means the poison still worked on the classifier.

Settings, and where they come from:

- retraining set: ``train_images`` clean training images, 5,000 by default
  (the paper: 5,000 of CIFAR-10's 50,000, drawn once and kept fixed), here
  stratified by class with a fixed ``seed`` and capped at the clean set's size
  (the 2,000-image test subsets use all of it).
- features: the body's output (everything but the head) in eval mode, without
  augmentation, standardised as in training — with the per-channel statistics
  of the run's own training set, poisoned or not, since those are what the body
  was trained on.
- the new last layer: multinomial logistic regression (scikit-learn, lbfgs) on
  features standardised with the retraining set's mean and variance, L2
  penalty with ``C`` = 1. The paper's per-epoch DFR code (built on Kirichenko et
  al.'s DFR) standardises the features and fits C = 1 logistic regression (an
  L1 penalty with liblinear); its single-checkpoint script fine-tunes the Linear
  with torch LBFGS and no penalty. L2 with lbfgs here: DESIGN.md names LBFGS, and
  one multinomial fit replaces liblinear's ten one-vs-rest L1 fits. The
  problem is convex, so starting from scratch rather than from the trained head
  reaches the same layer.
- before: the checkpoint as trained, scored as the trainer scored it
  (``training.loop.evaluate``), so it equals the run's history at that epoch.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from poisonlab.data.subset import stratified_indices
from poisonlab.evaluation.base import EVALUATIONS, TrainedRun, check_number
from poisonlab.models import Classifier
from poisonlab.registry import ConfigError
from poisonlab.training.loop import DeviceData, evaluate

# lbfgs iterations for the new head; standardised features converge in a few hundred.
MAX_ITER = 1000


@EVALUATIONS.register("dfr")
def dfr(run: TrainedRun, *, train_images: int = 5000, C: float = 1.0, seed: int = 0) -> dict[str, Any]:
    check_number("dfr", "train_images", train_images, minimum=1, integer=True)
    check_number("dfr", "C", C, minimum=0, inclusive=False)
    check_number("dfr", "seed", seed, minimum=0, integer=True)
    # scikit-learn is imported here, not at the top: the package imports every evaluation, and loading
    # scikit-learn (~1.8 s) would slow each ``peak`` job, which needs none of it.
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clean = run.clean
    _check_same_test_set(run)
    # The training container gives the normalisation the model was trained with; its test set is the clean one.
    data = DeviceData.from_container(run.training, run.device)
    chosen = stratified_indices(clean.y_train, min(train_images, len(clean.y_train)), seed=seed,
                                split="dfr train_images")
    x_retrain = torch.from_numpy(np.ascontiguousarray(clean.x_train[chosen].transpose(0, 3, 1, 2))).to(run.device)
    recipe_config = run.metrics.get("recipe_config", {})
    batch_size = recipe_config.get("eval_batch_size", 256)
    # The precision the run trained and was scored in, so "before" is the run's own test accuracy.
    precision = run.metrics.get("precision", recipe_config.get("precision", "auto"))

    rows = []
    for epoch, weights in run.checkpoints():
        model = run.load_model(weights)
        head = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=MAX_ITER))
        features = _features(model, data, x_retrain, batch_size)
        # One BLAS thread: the fit's matrices are small, and measured on 2 shared cores the default two
        # threads took 29 s for 2,000 × 128 features instead of under a second.
        with threadpool_limits(1):
            head.fit(features, clean.y_train[chosen])
        after = 100.0 * head.score(_features(model, data, data.x_test, batch_size), clean.y_test)
        before = evaluate(model, data, batch_size, precision)
        rows.append({"epoch": epoch, "test_acc_before": before, "test_acc_after": after})
    return {
        "train_images": len(chosen),
        "epochs": rows,
        "final": rows[-1],
        "best_after": max(rows, key=lambda row: (row["test_acc_after"], -row["epoch"])),
    }


def _features(model: Classifier, data: DeviceData, images: torch.Tensor, batch_size: int) -> np.ndarray:
    """Body features of raw images (N, C, H, W) in [0, 255], in batches, without gradients."""
    with torch.no_grad():
        return torch.cat([model.body(data.normalize(batch)).float().cpu() for batch in images.split(batch_size)]
                         ).numpy()


def _check_same_test_set(run: TrainedRun) -> None:
    training, clean = run.training, run.clean
    if not (np.array_equal(training.x_test, clean.x_test) and np.array_equal(training.y_test, clean.y_test)):
        raise ConfigError(f"dfr: the test set of {run.training_data} differs from that of {run.clean_data}; "
                          "the training container must be made from the clean one")
