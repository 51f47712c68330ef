"""Evaluations of a trained run: ``peak`` from the history, ``dfr`` over kept epochs, ``linsep`` of perturbations."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import quick_recipe
from poisonlab.data.container import ImageDataset
from poisonlab.evaluation import EVALUATIONS, IDENTITY_KEYS, evaluate_run
from poisonlab.evaluation.dfr import retrain_head
from poisonlab.evaluation.linsep import linear_training_accuracy
from poisonlab.models import Classifier, build_model
from poisonlab.poisons import apply_poison
from poisonlab.registry import ConfigError
from poisonlab.training import DeviceData, fit

IDENTITY = {"dataset": "synthetic", "poison": "clean", "defense": "none", "arch": "smallcnn", "recipe": "quick",
            "seed": 0}


def write_run(run_dir: Path, history: list[dict], **identity) -> Path:
    """A finished run's folder as train_run leaves it, as far as the evaluations read it: metrics.json."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "metrics.json").write_text(json.dumps({**IDENTITY, **identity, "history": history}))
    return run_dir


def test_registered_evaluations():
    assert EVALUATIONS.names() == ["dfr", "linsep", "peak"]


# ---------------------------------------------------------------- peak

HISTORY = [
    {"epoch": 1, "train_loss": 2.0, "train_acc": 20.0, "test_acc": 30.0, "seconds": 1.0},
    {"epoch": 2, "train_loss": 1.0, "train_acc": 50.0, "test_acc": 45.0, "seconds": 1.0},
    {"epoch": 3, "train_loss": 0.4, "train_acc": 80.0, "test_acc": 45.0, "seconds": 1.0},
    {"epoch": 4, "train_loss": 0.1, "train_acc": 90.0, "test_acc": 40.0, "seconds": 1.0},
]


def peak_of(tmp_path, **options) -> dict:
    run = write_run(tmp_path / "run", HISTORY, poison="ar")
    # peak reads only metrics.json: the container paths are never opened.
    return evaluate_run("peak", run, training_data=tmp_path / "absent.npz", clean_data=tmp_path / "absent.npz",
                        options=options)


def test_peak_summarises_the_history(tmp_path):
    result = peak_of(tmp_path)
    assert result == {**IDENTITY, "poison": "ar", "evaluation": "peak", "options": {"loss_threshold": 0.5},
                      "epochs": 4,
                      "peak_test_acc": 45.0, "peak_epoch": 2,  # epochs 2 and 3 tie: the first
                      "final_test_acc": 40.0,
                      "epochs_to_loss_threshold": 3,  # 0.4 is the first loss below 0.5
                      "mean_train_loss": (2.0 + 1.0 + 0.4 + 0.1) / 4,  # 0.875
                      "mean_train_acc": (20 + 50 + 80 + 90) / 4}  # 60.0
    assert json.loads(json.dumps(result)) == result


@pytest.mark.parametrize(("threshold", "epoch"), [(1.0, 3), (1.5, 2), (0.05, None)])
def test_peak_loss_threshold_is_strict_and_null_when_never_reached(tmp_path, threshold, epoch):
    assert peak_of(tmp_path, loss_threshold=threshold)["epochs_to_loss_threshold"] == epoch


# ---------------------------------------------------------------- bad input


def test_unknown_evaluation_and_options_are_rejected_before_the_run_is_read(tmp_path):
    absent = tmp_path / "no-run"
    with pytest.raises(ConfigError, match="unknown evaluation 'nope'; known evaluations: dfr, linsep, peak"):
        evaluate_run("nope", absent, training_data=absent, clean_data=absent)
    with pytest.raises(ConfigError, match="got unknown option.*bogus; allowed: method, train_images, epochs, batch_size, lr, C, seed"):
        evaluate_run("dfr", absent, training_data=absent, clean_data=absent, options={"bogus": 1})
    with pytest.raises(ConfigError, match="has no metrics.json"):
        evaluate_run("peak", absent, training_data=absent, clean_data=absent)


@pytest.mark.parametrize(("name", "options", "field"), [
    ("peak", {"loss_threshold": 0}, "loss_threshold"),
    ("dfr", {"train_images": 0}, "train_images"),
    ("dfr", {"C": -1.0}, "C"),
    ("dfr", {"method": "ridge"}, "method"),
    ("dfr", {"epochs": 0}, "epochs"),
    ("linsep", {"max_images": 1.5}, "max_images"),
    ("linsep", {"max_iter": True}, "max_iter"),
    ("linsep", {"steps": 0}, "steps"),
])
def test_bad_option_values_name_the_field(tmp_path, name, options, field):
    run = write_run(tmp_path / "run", HISTORY)
    with pytest.raises(ConfigError, match=f"evaluation '{name}': {field} must be"):
        evaluate_run(name, run, training_data=tmp_path / "absent.npz", clean_data=tmp_path / "absent.npz",
                     options=options)


# ---------------------------------------------------------------- linsep on a small synthetic set

CLASSES = [str(k) for k in range(10)]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> dict[str, Path]:
    """2,000 random 8×8 grey images (64 dimensions) and training sets made from them, saved as containers.

    Far more images than dimensions, so a linear fit cannot memorise arbitrary labels. Class 9 holds about
    a quarter of the images (498), the other classes 166-167 each: a majority to tell apart from chance.
    """
    root = tmp_path_factory.mktemp("synthetic")
    rng = np.random.default_rng(0)
    x = rng.integers(40, 216, (2000, 8, 8, 1), dtype=np.uint8)
    y = np.minimum(np.arange(2000) % 12, 9)
    clean = ImageDataset(x, y, x[:200], y[:200], CLASSES)
    # Sample-wise noise: a fresh ±8-level draw a pixel and image, so δ carries no class.
    noisy = np.clip(x + rng.integers(-8, 9, x.shape), 0, 255).astype(np.uint8)
    sets = {"clean": clean, "random-noise": apply_poison("random-noise", clean, seed=0),
            "ops": apply_poison("ops", clean, seed=0),
            "sample-noise": ImageDataset(noisy, y, clean.x_test, clean.y_test, CLASSES),
            "other-test-set": ImageDataset(x, y, x[200:400], y[200:400], CLASSES)}
    for name, dataset in sets.items():
        dataset.save(root / f"{name}.npz")
    return {name: root / f"{name}.npz" for name in sets}


def linsep_of(tmp_path, synthetic, name, **options) -> dict:
    run = write_run(tmp_path / name, [], dataset="synthetic", poison=name)
    return evaluate_run("linsep", run, training_data=synthetic[name], clean_data=synthetic["clean"], options=options)


@pytest.mark.parametrize("name", ["random-noise", "ops"])
def test_class_wise_perturbations_are_linearly_separable(tmp_path, synthetic, name):
    # Measured: 100.0% for both; with the labels shuffled 24.9%, the majority class: no class, no shortcut.
    result = linsep_of(tmp_path, synthetic, name)
    assert result["images"] == 2000 and result["dimensions"] == 64 and not result["zero_perturbation"]
    assert result["train_acc"] >= 99.0
    assert result["train_acc_shuffled_labels"] <= 40.0
    assert json.loads(json.dumps(result)) == result


def test_sample_wise_noise_is_not_separable_beyond_the_shuffled_label_floor(tmp_path, synthetic):
    # Independent noise an image: the fit does no better than on shuffled labels (measured 26.2% vs 28.8%),
    # near the 24.9% majority and far below a class-wise poison.
    result = linsep_of(tmp_path, synthetic, "sample-noise")
    assert result["train_acc"] < 40.0
    assert abs(result["train_acc"] - result["train_acc_shuffled_labels"]) < 8.0


def test_clean_poison_reports_the_majority_class_without_fitting(tmp_path, synthetic):
    result = linsep_of(tmp_path, synthetic, "clean", max_images=400)
    assert result["zero_perturbation"] is True
    assert result["images"] == 400  # stratified: class 9 keeps its quarter, 100 images
    assert result["train_acc"] == result["train_acc_shuffled_labels"] == 25.0


def test_linear_fit_separates_a_separable_toy_and_not_a_non_separable_one():
    """The paper's fit (nn.Linear, full-batch LBFGS lr 0.5, 500 steps of 20 iterations) on two 2-D toys."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(400) % 2
    # Separable: two blobs whose gap is far wider than their spread, so 100% is reachable and reached.
    blobs = torch.randn(400, 2, generator=generator) * 0.3 + (4.0 * labels - 2.0)[:, None]
    assert linear_training_accuracy(blobs, labels, num_classes=2) == 100.0
    # XOR of the signs: no line gets more than 3 of the 4 quadrants right, and the symmetric logistic
    # optimum sits near w = 0, so the fit stays far below what it reached on the blobs.
    points = torch.rand(400, 2, generator=generator) * 2 - 1
    xor = ((points[:, 0] > 0) ^ (points[:, 1] > 0)).long()
    assert linear_training_accuracy(points, xor, num_classes=2) <= 76.0
    # Same seed, same fit.
    assert linear_training_accuracy(points, xor, num_classes=2, steps=5) == linear_training_accuracy(
        points, xor, num_classes=2, steps=5)


def test_linsep_refuses_containers_that_do_not_match(tmp_path, synthetic):
    shuffled = ImageDataset.load(synthetic["clean"])
    shuffled.y_train = np.roll(shuffled.y_train, 1)
    shuffled.save(tmp_path / "relabelled.npz")
    run = write_run(tmp_path / "run", [])
    with pytest.raises(ConfigError, match="same training images in the same order with the same labels"):
        evaluate_run("linsep", run, training_data=tmp_path / "relabelled.npz", clean_data=synthetic["clean"])


# ---------------------------------------------------------------- dfr: bad runs on the synthetic set


def test_dfr_needs_kept_epochs_and_the_clean_test_set(tmp_path, synthetic):
    run = write_run(tmp_path / "run", [])
    with pytest.raises(ConfigError, match="kept no per-epoch weights"):
        evaluate_run("dfr", run, training_data=synthetic["clean"], clean_data=synthetic["clean"])
    with pytest.raises(ConfigError, match="test set of .* differs"):
        evaluate_run("dfr", run, training_data=synthetic["other-test-set"], clean_data=synthetic["clean"])


def _toy_classifier(dim: int = 6, classes: int = 3) -> Classifier:
    """A body of a batch-norm alone, so the head sees features whose statistics train mode changes."""
    torch.manual_seed(0)
    return Classifier([("flatten", torch.nn.Flatten()), ("norm", torch.nn.BatchNorm1d(dim))], dim, classes)


def test_dfr_lbfgs_fits_the_head_as_the_original_loop_and_moves_the_running_statistics():
    """retrain_head against dfr_step_2.py's loop run literally: LBFGS lr 0.5 on model.head, the whole
    model (batch-norm in train mode) recomputed in every closure call, one step a minibatch, 15 epochs."""
    generator = torch.Generator().manual_seed(1)
    labels = torch.arange(300) % 3
    means = torch.randn(3, 6, generator=generator)  # overlapping classes: a finite optimum both fits reach
    images = (means[labels] + torch.randn(300, 6, generator=generator) + 10).view(300, 6, 1, 1)
    model, reference = _toy_classifier(), _toy_classifier()
    reference.load_state_dict(model.state_dict())

    retrain_head(model, lambda x: x.float(), images, labels, [], epochs=15, batch_size=1024, lr=0.5,
                 generator=torch.Generator().manual_seed(0))

    for parameter in reference.parameters():
        parameter.requires_grad_(False)
    reference.head.weight.requires_grad_(True)
    reference.head.bias.requires_grad_(True)
    optimizer = torch.optim.LBFGS(reference.head.parameters(), lr=0.5)
    reference.train()

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(reference(images), labels)
        loss.backward()
        return loss

    for _ in range(15):  # one minibatch of all 300: its order does not change a mean loss or batch statistics
        optimizer.step(closure)
    reference.eval()
    assert not model.training
    for ours, theirs in [(model.head.weight, reference.head.weight), (model.head.bias, reference.head.bias),
                         (model.body.norm.running_mean, reference.body.norm.running_mean),
                         (model.body.norm.running_var, reference.body.norm.running_var)]:
        assert torch.allclose(ours, theirs, rtol=1e-4, atol=1e-4)
    # The running mean moved from its initial 0 most of the way to the data's (~10), as the original's forwards
    # move it: momentum 0.1 once a forward, dozens of forwards.
    assert torch.allclose(model.body.norm.running_mean, images.flatten(1).mean(0), atol=0.3)
    with torch.no_grad():
        assert (model(images).argmax(1) == labels).float().mean() > 0.6  # chance: 1/3


# ---------------------------------------------------------------- dfr on natural images

# helpers.quick_test_accuracy's recipe: the one its measured accuracies (clean 48.7%, ar 34.4%) were taken with.
QUICK = quick_recipe()


@pytest.fixture(scope="module")
def ar_run(tmp_path_factory, cifar_subset, poisoned_cifar) -> dict:
    """smallcnn trained 8 epochs on the AR-poisoned CIFAR subset, weights kept at epochs 0 (init), 4 and 8."""
    root = tmp_path_factory.mktemp("ar-run")
    poisoned = poisoned_cifar("ar")
    cifar_subset.save(root / "clean.npz")
    poisoned.save(root / "ar.npz")
    run_dir = root / "run"
    torch.manual_seed(0)  # as quick_test_accuracy, so this is the model its 34.4% was measured on
    model = build_model("smallcnn", num_classes=10, in_channels=3, image_size=32)
    (run_dir / "epochs").mkdir(parents=True)
    # The untrained network: DFR on random features is the floor that learned features must beat.
    torch.save(model.state_dict(), run_dir / "epochs" / "epoch000.pt")
    result = fit(model, DeviceData.from_container(poisoned, torch.device("cpu")), QUICK, seed=0, progress=False,
                 weights_dir=run_dir / "epochs", keep_weights_every=4)
    metrics = {**IDENTITY, "dataset": "cifar10-jpeg", "poison": "ar", "history": result.history,
               "recipe_config": QUICK.to_dict()}
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    record = evaluate_run("dfr", run_dir, training_data=root / "ar.npz", clean_data=root / "clean.npz")
    return {"history": result.history, "record": record}


@pytest.mark.slow
def test_dfr_record_and_the_checkpoints_scored_as_in_training(ar_run):
    record, history = ar_run["record"], ar_run["history"]
    assert {key: record[key] for key in IDENTITY_KEYS} == {**IDENTITY, "dataset": "cifar10-jpeg", "poison": "ar"}
    assert record["evaluation"] == "dfr" and record["options"] == {
        "method": "lbfgs", "train_images": 5000, "epochs": 15, "batch_size": 1024, "lr": 0.5, "C": 1.0, "seed": 0}
    assert record["train_images"] == 2000  # 5,000 capped at the subset's 2,000
    assert [row["epoch"] for row in record["epochs"]] == [0, 4, 8]
    assert record["final"] == record["epochs"][-1]
    assert record["best_after"] == max(record["epochs"], key=lambda row: row["test_acc_after"])
    # Same weights, same normalisation (the poisoned set's statistics), same scoring: the trainer's numbers.
    for row in record["epochs"][1:]:
        assert row["test_acc_before"] == history[row["epoch"] - 1]["test_acc"]
    assert json.loads(json.dumps(record)) == record


@pytest.mark.slow
def test_dfr_recovers_clean_accuracy_from_an_ar_poisoned_model(ar_run):
    # The claim of "What Can We Learn from Unlearnable Datasets?" at this scale. Measured (CPU, this subset,
    # zero-fill crop, the paper's LBFGS refit): the AR-poisoned model scores 32.7% at epoch 8 (34.2% at 4);
    # its retrained last layer 45.1% (44.8% at 4), close to the ~48% of the model trained on clean data.
    # The untrained network's features give 35.3% after DFR, so the poisoned model learned features worth
    # ~10 points over random ones (the logistic option: 46.8%, 47.3%, 36.8%). Bounds leave 3-5 points of
    # margin for thread-count jitter.
    init, _, final = ar_run["record"]["epochs"]
    assert final["test_acc_after"] >= 42.0
    assert final["test_acc_after"] >= final["test_acc_before"] + 6.0
    assert final["test_acc_after"] >= init["test_acc_after"] + 4.0
