"""``dfr``: Deep Feature Reweighting over training — how much of a clean classifier a model's features hold.

Sandoval-Segura et al., "What Can We Learn from Unlearnable Datasets?"
(NeurIPS 2023, Section 4.2): for each kept epoch's checkpoint of a model
trained on unlearnable data, freeze all but the last layer, retrain it on
clean training images and report clean test accuracy before and after. A high
accuracy after retraining means the network learned useful features despite
the poison; a low one before means the poison still worked on the classifier.

``method: lbfgs`` (the default) is the paper's recipe, ``dfr_step_2.py`` in
psandovalsegura/learn-from-unlearnable:

- retraining set: ``train_images`` clean training images, 5,000 by default
  (the repository's fixed ``dfr_indices/CIFAR10/train_5000samples.npy``), here
  stratified by class with a fixed ``seed`` and capped at the clean set's size;
  fewer at the embedded scale (config ``evaluation_options``).
- the model in train mode, every parameter frozen but the last layer's
  (``model.linear`` there, ``model.head`` here), on the training
  augmentation of the run's recipe (the repository's ``train_transform``,
  crop + flip on CIFAR-10), drawn afresh each epoch from the ``seed``.
- ``torch.optim.LBFGS`` (lr 0.5, its default 20 iterations a step), no
  penalty, plain cross-entropy, one step per shuffled minibatch of 1,024
  (``batch_size``, the script's 8 × 128), 15 ``epochs`` over the set, the
  optimizer's curvature history carried across minibatches as there.
- train mode matters twice: batch-norm normalises each minibatch by its own
  statistics while the layer is fitted, and every forward pass moves the
  running statistics towards the clean, augmented images, so the layer is
  scored (eval mode) with statistics re-estimated on clean data. The original
  recomputes the whole network in every LBFGS evaluation; the frozen body's
  output for a minibatch is the same each time, so here it is computed once
  (one forward instead of up to 21 a minibatch), and the running statistics
  get the update of the n forward passes the original made, from the batch
  statistics that one pass saw (momentum m applied n times is one update of
  1 − (1 − m)ⁿ; a cumulative average after t batches moves by n / (t + n)).

``method: logistic`` is what poisonlab used before, kept as an option:
eval-mode body features without augmentation, standardised with the
retraining set's mean and variance, multinomial logistic regression
(scikit-learn, lbfgs, L2 penalty ``C`` = 1), the model's statistics untouched
(the paper's per-epoch DFR code, after Kirichenko et al., also standardises
and fits C = 1 logistic regression, with an L1 penalty).

Both: features standardised as in training, with the per-channel statistics
of the run's own training set, poisoned or not, since those are what the body
was trained on. Before: the checkpoint as trained, scored as the trainer
scored it (``training.loop.evaluate``), so it equals the run's history at
that epoch; after: the same scoring of the retrained model.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Annotated, Any

import numpy as np
import torch
import torch.nn.functional as F
from threadpoolctl import threadpool_limits
from torch import nn

from poisonlab.data.subset import stratified_indices
from poisonlab.checks import Count, OneOf, Positive, Seed
from poisonlab.evaluation.base import EVALUATIONS, TrainedRun
from poisonlab.models import Classifier
from poisonlab.registry import ConfigError
from poisonlab.training import optim
from poisonlab.training.augment import Augmentation, build_augmentations
from poisonlab.training.loop import DeviceData, evaluate, shuffled_batches
from poisonlab.training.procedure import soft_cross_entropy

METHODS = ("lbfgs", "logistic")
# logistic: lbfgs iterations for the new head; standardised features converge in a few hundred.
MAX_ITER = 1000


@EVALUATIONS.register("dfr")
def dfr(run: TrainedRun, *, method: Annotated[str, OneOf(METHODS)] = "lbfgs", train_images: Count = 5000,
        epochs: Count = 15, batch_size: Count = 1024, lr: Positive = 0.5, C: Positive = 1.0,
        seed: Seed = 0) -> dict[str, Any]:
    """``epochs``, ``batch_size`` and ``lr`` are the lbfgs method's, ``C`` the logistic one's."""
    clean = run.clean
    _check_same_test_set(run)
    # The training container gives the normalisation the model was trained with; its test set is the clean one.
    data = DeviceData.from_container(run.training, run.device)
    chosen = stratified_indices(clean.y_train, min(train_images, len(clean.y_train)), seed=seed,
                                split="dfr train_images")
    x_retrain = torch.from_numpy(np.ascontiguousarray(clean.x_train[chosen].transpose(0, 3, 1, 2))).to(run.device)
    y_retrain = torch.from_numpy(clean.y_train[chosen]).to(run.device)
    recipe_config = run.metrics.get("recipe_config", {})
    eval_batch_size = recipe_config.get("eval_batch_size", 256)
    # The precision the run trained and was scored in, so "before" is the run's own test accuracy.
    precision = run.metrics.get("precision", recipe_config.get("precision", "auto"))
    augmentations = build_augmentations(recipe_config.get("augment"))

    rows = []
    for epoch, weights in run.checkpoints():
        model = run.load_model(weights)
        before = evaluate(model, data, eval_batch_size, precision)
        if method == "lbfgs":
            generator = torch.Generator(device=run.device).manual_seed(seed)  # the same batches for every epoch
            retrain_head(model, data.normalize, x_retrain, y_retrain, augmentations, epochs=epochs,
                         batch_size=batch_size, lr=lr, generator=generator)
            after = evaluate(model, data, eval_batch_size, precision)
        else:
            after = _logistic_head_accuracy(model, data, x_retrain, clean.y_train[chosen], clean.y_test,
                                            eval_batch_size, C)
        rows.append({"epoch": epoch, "test_acc_before": before, "test_acc_after": after})
    return {
        "train_images": len(chosen),
        "epochs": rows,
        "final": rows[-1],
        "best_after": max(rows, key=lambda row: (row["test_acc_after"], -row["epoch"])),
    }


# ---------------------------------------------------------------- the paper's: LBFGS on the last layer, train mode


def retrain_head(model: Classifier, normalize: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor,
                 labels: torch.Tensor, augmentations: list[Augmentation], *, epochs: int, batch_size: int,
                 lr: float, generator: torch.Generator) -> None:
    """Fit ``model.head`` in place as ``dfr_step_2.py`` does; leaves the model in eval mode.

    ``images`` are raw (N, C, H, W) in [0, 255], augmented batch by batch with ``generator``.
    """
    norms = [m for m in model.body.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
             and m.track_running_stats]
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    for parameter in model.head.parameters():
        parameter.requires_grad_(True)
    optimizer = optim.LBFGS(model.head.parameters(), lr=lr)
    num_classes = model.head.out_features
    model.train()
    # Full precision as the original: a bf16 autocast left on by a caller would change the fit.
    with torch.autocast(images.device.type, enabled=False):
        for _ in range(epochs):
            for batch in shuffled_batches(len(images), batch_size, generator, images.device):
                x, targets = images[batch], F.one_hot(labels[batch], num_classes).float()
                for augment in augmentations:
                    x, targets = augment(x, targets, generator)
                with torch.no_grad(), _batch_statistics(norms) as statistics:
                    features = model.body(normalize(x))
                forwards = 0

                def closure() -> torch.Tensor:
                    nonlocal forwards
                    forwards += 1
                    optimizer.zero_grad()
                    loss = soft_cross_entropy(model.head(features), targets)
                    loss.backward()
                    return loss

                optimizer.step(closure)
                _move_running_statistics(statistics, forwards)
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    model.eval()


@contextlib.contextmanager
def _batch_statistics(norms: list[nn.Module]) -> Iterator[dict[nn.Module, tuple[torch.Tensor, torch.Tensor]]]:
    """Inside, train-mode batch-norms normalise by the batch and leave their running statistics as they were.
    The dict yielded is filled on leaving: {norm: (mean, unbiased variance) of the batch it saw}, as
    batch-norm folds them in.

    Batch-norm computes both in its forward pass anyway: with momentum 1 its running statistics become the
    batch's own, read here and then put back (a second pass over the activations for them cost more than
    the forward itself).
    """
    statistics: dict[nn.Module, tuple[torch.Tensor, torch.Tensor]] = {}
    kept = {norm: (norm.running_mean.clone(), norm.running_var.clone(), norm.num_batches_tracked.clone(),
                   norm.momentum) for norm in norms}
    for norm in norms:
        norm.momentum = 1.0
    try:
        yield statistics
    finally:
        for norm, (mean, var, tracked, momentum) in kept.items():
            statistics[norm] = (norm.running_mean.clone(), norm.running_var.clone())
            norm.running_mean.copy_(mean)
            norm.running_var.copy_(var)
            norm.num_batches_tracked.copy_(tracked)
            norm.momentum = momentum


def _move_running_statistics(statistics: dict[nn.Module, tuple[torch.Tensor, torch.Tensor]], forwards: int) -> None:
    """Each norm's running statistics as ``forwards`` train-mode passes over the same batch would leave them."""
    for norm, (mean, var) in statistics.items():
        done = int(norm.num_batches_tracked)
        weight = 1 - (1 - norm.momentum) ** forwards if norm.momentum is not None else forwards / (done + forwards)
        norm.running_mean.lerp_(mean.to(norm.running_mean.dtype), weight)
        norm.running_var.lerp_(var.to(norm.running_var.dtype), weight)
        norm.num_batches_tracked += forwards


# ---------------------------------------------------------------- the option: logistic regression on eval features


def _logistic_head_accuracy(model: Classifier, data: DeviceData, x_retrain: torch.Tensor, y_retrain: np.ndarray,
                            y_test: np.ndarray, batch_size: int, C: float) -> float:
    # scikit-learn is imported here, not at the top: the package imports every evaluation, and loading
    # scikit-learn (~1.8 s) would slow each ``peak`` job, which needs none of it.
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    head = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=MAX_ITER))
    # One BLAS thread: the fit's matrices are small, and measured on 2 shared cores the default two
    # threads took 29 s for 2,000 × 128 features instead of under a second.
    with threadpool_limits(1):
        head.fit(_features(model, data, x_retrain, batch_size), y_retrain)
    return 100.0 * head.score(_features(model, data, data.x_test, batch_size), y_test)


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
