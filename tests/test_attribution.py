"""ssl-attribution: attributors, the counterfactual support search, TRAK on the CPU, datamodels, LDS, SSL."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from helpers import quadrant_dataset

from poisonlab.attribution import ATTRIBUTORS, FEATURES, SSL_METHODS, AttributionInputs, attribute
from poisonlab.attribution.datamodels import fit_datamodels
from poisonlab.attribution.retrain import Retrainer, margins
from poisonlab.attribution.ssl import SSLConfig, ViewOptions, make_view
from poisonlab.attribution.subsets import dense_scores, lds, split_pool, subset_masks
from poisonlab.attribution.support import (
    choose_targets, flip_class, majority_flips, max_probes, mislabel_view, removal_view, search_support,
    support_unit,
)
from poisonlab.attribution.trak import projector_block_size, trak_scores
from poisonlab.models import build_model
from poisonlab.registry import ConfigError
from poisonlab.training.recipe import Recipe


def _features(n_per_class: int = 20, classes: int = 3, dim: int = 8, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(classes), n_per_class)
    x = rng.normal(size=(len(y), dim)) + y[:, None]
    return x, y


def _inputs(x, y, targets, target_labels, **extra) -> AttributionInputs:
    return AttributionInputs(y_train=y, target_indices=np.arange(len(targets)), target_labels=np.asarray(target_labels),
                             train_features=x, target_features=targets, **extra)


# ---------------------------------------------------------------- registries and models


def test_registered_names() -> None:
    assert ATTRIBUTORS.names() == ["datamodels", "pixel-knn", "random", "ssl-esvm", "ssl-knn", "trak"]
    assert SSL_METHODS.names() == ["moco", "simclr"]
    assert FEATURES.names() == ["classifier", "pixels", "ssl"]
    with pytest.raises(ConfigError, match="ssl-esvm"):
        ATTRIBUTORS.get("esvm")


@pytest.mark.parametrize("arch", ["tinycnn", "resnet9"])
@pytest.mark.parametrize(("channels", "size"), [(1, 28), (3, 32)])
def test_attribution_archs_are_classifiers(arch: str, channels: int, size: int) -> None:
    model = build_model(arch, num_classes=10, in_channels=channels, image_size=size).eval()
    with torch.no_grad():
        x = torch.randn(2, channels, size, size)
        assert model.body(x).shape == (2, model.feature_dim)
        torch.testing.assert_close(model(x), model.head(model.body(x)))
    if arch == "resnet9":
        assert model.head.bias is None  # the repository's head: linear without bias, ×0.2


# ---------------------------------------------------------------- ESVM, kNN, label conditioning


def test_esvm_ranking_equals_a_direct_linearsvc_call() -> None:
    from sklearn.svm import LinearSVC

    x, y = _features()
    targets, labels = x[[3, 45]] + 0.1, np.array([0, 2])
    result = attribute("ssl-esvm", _inputs(x, y, targets, labels), k=20)
    for t, label in enumerate(labels):
        pool = np.flatnonzero(y == label)
        data = np.concatenate([targets[t][None], x[pool]])
        svm = LinearSVC(C=0.1, class_weight="balanced", max_iter=10000, tol=1e-6)
        svm.fit(data, np.r_[1, np.zeros(len(pool), int)])
        expected = pool[np.argsort(-svm.decision_function(x[pool]), kind="stable")]
        np.testing.assert_array_equal(result.topk[t], expected)


@pytest.mark.parametrize("method", ["ssl-esvm", "ssl-knn", "pixel-knn", "random"])
def test_label_conditioning_keeps_only_the_targets_class(method: str) -> None:
    x, y = _features(n_per_class=15)
    y[:5] = 1  # classes of unequal size: k is capped at the smallest pool of the targets' classes
    pixels = np.random.default_rng(1).integers(0, 256, (len(y), 4, 4, 1), dtype=np.uint8)
    inputs = _inputs(x, y, x[[0, 20, 40]], y[[0, 20, 40]], x_train=pixels, x_targets=pixels[[0, 20, 40]])
    result = attribute(method, inputs, k=100)
    assert result.topk.shape == (3, np.bincount(y)[y[[0, 20, 40]]].min())
    assert all((y[row] == label).all() for row, label in zip(result.topk, y[[0, 20, 40]]))
    assert all(len(set(row)) == len(row) for row in result.topk)


def test_knn_orders_by_distance_and_unconditioned_crosses_classes() -> None:
    x, y = _features()
    target = x[25] + 1e-3  # nearest is training image 25 itself
    conditioned = attribute("ssl-knn", _inputs(x, y, target[None], [1]), k=5)
    assert conditioned.topk[0, 0] == 25
    distances = np.linalg.norm(x - target, axis=1)
    free = attribute("ssl-knn", _inputs(x, y, target[None], [0]), k=5, label_conditioned=False)
    np.testing.assert_array_equal(free.topk[0], np.argsort(distances)[:5])
    assert free.cost["bytes"] > 0 and free.cost["seconds"] >= 0


def test_random_is_seeded_and_missing_inputs_are_named() -> None:
    x, y = _features()
    inputs = _inputs(x, y, x[:2], y[:2])
    np.testing.assert_array_equal(attribute("random", inputs, seed=3).topk, attribute("random", inputs, seed=3).topk)
    assert not np.array_equal(attribute("random", inputs, seed=3).topk, attribute("random", inputs, seed=4).topk)
    with pytest.raises(ConfigError, match="trak.*checkpoints"):
        attribute("trak", inputs)
    with pytest.raises(ConfigError, match="unknown option"):
        attribute("ssl-knn", inputs, C=1.0)


# ---------------------------------------------------------------- the support search


GRID = [25, 50, 100, 200, 400]


@pytest.mark.parametrize("k_star", [1, 25, 26, 60, 100, 101, 399, 400, 401, 10_000])
def test_support_search_against_an_oracle(k_star: int) -> None:
    calls = []

    def probe(k: int) -> bool:
        calls.append(k)
        return k >= k_star

    result = search_support(probe, GRID)
    expected = next((k for k in GRID if k >= k_star), None)
    assert result.support == expected
    assert result.label == (str(expected) if expected else "> 400")
    assert calls[0] == 400  # K first: "> K" costs one probe
    assert len(calls) <= max_probes(len(GRID)) == 1 + math.ceil(math.log2(len(GRID)))
    if expected is None:
        assert calls == [400]


def test_support_search_budget_and_grid_checks() -> None:
    result = search_support(lambda k: k >= 3, list(range(1, 129)), budget=3)
    assert len(result.probes) == 3 and result.support >= 3  # budget spent: a flipping k, maybe not the least
    with pytest.raises(ConfigError, match="increasing"):
        search_support(lambda k: True, [50, 25])


@pytest.mark.parametrize(("votes", "retrains", "decided"), [
    ([True, True], 3, False), ([False, False], 3, True), ([True, False], 3, None), ([True], 2, None),
    ([True, False], 2, True),  # mean correctness 0.5 flips (the repository's <= 0.5)
    ([False], 1, True), ([True], 1, False), ([], 3, None),
])
def test_majority_rule(votes, retrains, decided) -> None:
    assert majority_flips(votes, retrains) is decided


def test_views_change_exactly_the_chosen_indices() -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (50, 4, 4, 1), dtype=np.uint8)
    y = rng.integers(0, 3, 50)
    x_before, y_before = x.copy(), y.copy()
    chosen = np.array([7, 3, 41])
    xr, yr = removal_view(x, y, chosen)
    kept = np.setdiff1d(np.arange(50), chosen)
    np.testing.assert_array_equal(xr, x[kept])
    np.testing.assert_array_equal(yr, y[kept])
    xm, ym = mislabel_view(x, y, chosen, flip_class=2)
    assert np.array_equal(xm, x) and (ym[chosen] == 2).all()
    np.testing.assert_array_equal(np.flatnonzero(ym != y), np.sort(chosen[y[chosen] != 2]))
    np.testing.assert_array_equal(x, x_before)  # the originals are untouched
    np.testing.assert_array_equal(y, y_before)


def test_flip_class_rule_and_targets() -> None:
    assert flip_class(np.array([0.1, 0.6, 0.3]), label=1) == 2  # second most likely
    assert flip_class(np.array([0.1, 0.6, 0.3]), label=2) == 1  # the second is the label: the most likely
    probs = np.array([[[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.7, 0.3]],
                      [[0.8, 0.2], [0.3, 0.7], [0.4, 0.6], [0.9, 0.1]]])
    y = np.array([0, 1, 0, 0])  # image 2 is wrong under the second reference model
    targets = choose_targets(probs, y, 3, seed=0)
    assert targets["indices"] == [0, 1, 3] and targets["flip_classes"] == [1, 0, 1]
    with pytest.raises(ConfigError, match="only 3"):
        choose_targets(probs, y, 4, seed=0)


class _OracleRetrainer:
    """Test double: the target stays correct until at least ``k_star`` of the ranking's top images are changed."""

    def __init__(self, k_star: int, n: int, flip_to: int) -> None:
        self.k_star, self.n, self.flip_to, self.calls = k_star, n, flip_to, 0

    def __repr__(self) -> str:  # support_unit's state fingerprint names the retrainer by its repr
        return f"_OracleRetrainer({self.k_star})"

    def correct(self, x, y, x_target, y_target, *, seed):
        self.calls += 1
        changed = self.n - len(x) if len(x) < self.n else int((y == self.flip_to).sum()) - 10
        return changed < self.k_star


@pytest.mark.parametrize("kind", ["removal", "mislabel"])
def test_support_unit_resumes_from_its_state_file(kind: str, tmp_path) -> None:
    n = 420
    y = np.zeros(n, np.int64)
    y[-10:] = 1  # 10 images already of the flip class, never in the ranking
    x = np.zeros((n, 2, 2, 1), np.uint8)
    oracle = _OracleRetrainer(k_star=90, n=n, flip_to=1)
    kwargs = dict(kind=kind, ranking=np.arange(400), target=0, flip_to=1, x_train=x, y_train=y,
                  x_test=x[:1], y_test=np.zeros(1, np.int64), grid=GRID, retrains=3, seed=0,
                  state_path=tmp_path / "state.json")
    record = support_unit(retrainer=oracle, **kwargs)
    assert record["support"] == 100 and record["support_label"] == "100"
    assert record["models_trained"] == oracle.calls == 2 * len(record["probes"])  # majority decided after 2 of 3
    assert json.loads((tmp_path / "state.json").read_text())["votes"]["400"] == [False, False]
    again = _OracleRetrainer(k_star=90, n=n, flip_to=1)
    rerun = support_unit(retrainer=again, **kwargs)
    assert again.calls == 0 and rerun["support"] == 100 and rerun["models_trained_now"] == 0
    other = _OracleRetrainer(k_star=90, n=n, flip_to=1)
    support_unit(retrainer=other, **{**kwargs, "ranking": np.arange(400)[::-1]})  # another ranking: no reuse
    assert other.calls == record["models_trained"]


def test_probe_retrain_uses_the_trainer() -> None:
    ds = quadrant_dataset(n_train=128)
    retrainer = Retrainer("tinycnn", Recipe(epochs=4, batch_size=32, lr=0.05, precision="fp32"), 4, "cpu")
    model, logits = retrainer.train(ds.x_train, ds.y_train, ds.x_test[:16], seed=0)
    assert (logits.argmax(1) == ds.y_test[:16]).mean() >= 0.75
    m = margins(logits, ds.y_test[:16])
    top_other = np.sort(logits, 1)[:, -2]
    np.testing.assert_allclose(m[m > 0], (logits.max(1) - top_other)[m > 0], rtol=1e-6)


# ---------------------------------------------------------------- TRAK on the CPU


def test_trak_adapter_on_cpu_is_finite_deterministic_and_guards_the_single_block_pitfall() -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (64, 6, 6, 1), dtype=np.uint8)
    y = rng.integers(0, 3, 64)

    def build():
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(36, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))

    torch.manual_seed(0)
    checkpoints = [build().state_dict() for _ in range(2)]
    # proj_dim 40 < traker's default block of 100: a single block, whose freed matrix breaks scoring.
    assert projector_block_size(40) == 20 and projector_block_size(512) == 100
    run = lambda: trak_scores(build, checkpoints, lambda v: v / 255, x, y, x[:3], y[:3], proj_dim=40)  # noqa: E731
    scores = run()
    assert scores.shape == (3, 64) and np.isfinite(scores).all()
    np.testing.assert_array_equal(scores, run())
    assert (scores.argmax(1) == np.arange(3)).all()  # a target's own training copy helps it most
    with pytest.raises(ConfigError, match="proj_dim"):
        projector_block_size(1)


# ---------------------------------------------------------------- datamodels and LDS


def test_datamodels_recover_planted_sparse_weights() -> None:
    masks = subset_masks(40, 300, alpha=0.5, seed=0)
    weights = np.zeros((2, 40))
    weights[0, [3, 17, 29]] = [2.0, 1.5, -1.0]
    weights[1, [5, 8]] = [1.0, 3.0]
    rng = np.random.default_rng(1)
    observed = masks @ weights.T + 0.5 + 0.05 * rng.normal(size=(300, 2))
    for alpha in (None, 0.01):
        fitted = fit_datamodels(masks, observed, lasso_alpha=alpha)
        assert set(np.argsort(-np.abs(fitted[0]))[:3]) == {3, 17, 29}
        assert set(np.argsort(-np.abs(fitted[1]))[:2]) == {5, 8}
        np.testing.assert_allclose(fitted[weights != 0], weights[weights != 0], atol=0.15)


def test_lds_of_a_perfect_predictor_is_one_and_of_noise_is_near_zero() -> None:
    rng = np.random.default_rng(0)
    masks = subset_masks(100, 200, alpha=0.5, seed=1)
    tau = rng.normal(size=(30, 100))
    assert lds(tau, masks, masks @ tau.T)["lds"] == pytest.approx(1.0)
    noise = lds(rng.normal(size=(30, 100)), masks, masks @ tau.T)
    assert abs(noise["lds"]) < 0.05
    assert len(noise["per_target"]) == 30


def test_subset_pool_split_and_dense_scores() -> None:
    masks = subset_masks(10, 4, alpha=0.3, seed=0)
    assert (masks.sum(1) == 3).all()
    np.testing.assert_array_equal(masks, subset_masks(10, 4, alpha=0.3, seed=0))
    fit, held = split_pool(10, 3)
    assert set(fit).isdisjoint(held) and len(fit) + len(held) == 10
    topk, scores = np.array([[2, 0]]), np.array([[-1.0, -3.0]])
    np.testing.assert_allclose(dense_scores(topk, scores, 4, signed=True), [[-3.0, 0, -1.0, 0]])
    shifted = dense_scores(topk, scores, 4, signed=False)
    assert shifted[0, 2] > shifted[0, 0] > 0 and shifted[0, 1] == shifted[0, 3] == 0


# ---------------------------------------------------------------- SSL


def test_views_are_seeded_and_stay_in_range() -> None:
    x = torch.rand(8, 3, 16, 16)
    options = ViewOptions(flip=True)
    a = make_view(x, options, torch.Generator().manual_seed(0))
    b = make_view(x, options, torch.Generator().manual_seed(0))
    assert a.shape == x.shape and torch.equal(a, b) and a.min() >= 0 and a.max() <= 1
    assert not torch.equal(a, make_view(x, options, torch.Generator().manual_seed(1)))


def test_ssl_loss_falls_and_the_backbone_feeds_features(tmp_path, monkeypatch) -> None:
    from poisonlab.attribution.features import extract_features
    from poisonlab.attribution.pretrain import pretrain_ssl

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    ds = quadrant_dataset(n_train=256, n_test=64)
    config = SSLConfig.from_dict({"method": "moco", "arch": "tinycnn", "knn_k": 20,
                                  "method_options": {"memory_bank_size": 64, "projection_dim": 32},
                                  "recipe": {"epochs": 5, "batch_size": 64, "lr": 0.06, "precision": "fp32"}})
    record = pretrain_ssl(ds, config, tmp_path / "ssl", dataset_name="quadrants", device="cpu", progress=False)
    losses = [row["ssl_loss"] for row in record["history"]]
    # From epoch 2: during the first the memory bank still holds its random initial keys (easy negatives).
    assert losses[-1] < losses[1]
    assert record["knn_acc"] > 25.0  # above chance of 4 classes
    assert sorted(p.name for p in (tmp_path / "ssl").iterdir()) == ["backbone.pt", "metrics.json"]
    features = extract_features("ssl", ds, checkpoint=str(tmp_path / "ssl" / "backbone.pt"), device="cpu")
    assert features["train"].shape == (256, record["feature_dim"]) and np.isfinite(features["test"]).all()
    with pytest.raises(ConfigError, match="unknown option"):
        SSLConfig.from_dict({"method": "simclr", "method_options": {"momentum": 0.9}})


def test_simclr_loss_falls() -> None:
    torch.manual_seed(0)
    body = build_model("tinycnn", num_classes=4, in_channels=1, image_size=8).body
    model = SSL_METHODS.build("simclr", body, 64, projection_dim=16)
    x = torch.from_numpy(quadrant_dataset(n_train=64).x_train.transpose(0, 3, 1, 2)).float() / 255
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    generator = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(15):
        loss = model.loss(make_view(x, ViewOptions(), generator), make_view(x, ViewOptions(), generator))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert np.mean(losses[-3:]) < np.mean(losses[:3])


def test_a_user_checkpoint_stands_in_for_the_backbone(tmp_path) -> None:
    from poisonlab.attribution.features import extract_features

    ds = quadrant_dataset(n_train=32, n_test=8)
    torch.manual_seed(0)
    model = build_model("tinycnn", num_classes=4, in_channels=1, image_size=8)
    torch.save(model.state_dict(), tmp_path / "model.pt")  # a classifier's model.pt: body.* and head.* keys
    features = extract_features("classifier", ds, checkpoint=str(tmp_path / "model.pt"), arch="tinycnn", device="cpu")
    assert features["train"].shape == (32, model.feature_dim)
    with pytest.raises(ConfigError, match="arch"):
        extract_features("ssl", ds, checkpoint=str(tmp_path / "model.pt"), device="cpu")
    with pytest.raises(ConfigError, match="does not fit"):
        extract_features("ssl", ds, checkpoint=str(tmp_path / "model.pt"), arch="smallcnn", device="cpu")


def test_figures_draw_every_method() -> None:
    from poisonlab.attribution.figures import lds_figure, neighbours_figure, support_cdf_figure

    images = np.zeros((8, 8, 8, 1), np.uint8)
    rows = {"ssl-esvm": (images, list("01234567")), "random": (images[:5], list("01234"))}
    figure = neighbours_figure(images[0], "0", rows, caption="toy")
    assert len(figure.axes) == 2 * 9
    cdf = support_cdf_figure({"ssl-esvm": [50, 100, None], "random": [None, None, 400]}, max_k=400, kind="removal",
                             caption="toy")
    assert [t.get_text() for t in cdf.axes[0].get_legend().get_texts()] == ["ssl-esvm (2/3)", "random (1/3)"]
    assert len(lds_figure({"ssl-esvm": [0.1, 0.2], "trak": [0.3, float("nan")]}, caption="toy").axes[0].patches) == 2


def test_ssl_pretraining_resumes_to_the_same_backbone(tmp_path, monkeypatch) -> None:
    import poisonlab.attribution.pretrain as pretrain

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    ds = quadrant_dataset(n_train=128, n_test=16)
    config = SSLConfig.from_dict({"method": "moco", "arch": "tinycnn", "knn_k": 10,
                                  "method_options": {"memory_bank_size": 64, "projection_dim": 16},
                                  "recipe": {"epochs": 3, "batch_size": 64, "precision": "fp32"}})
    whole = pretrain.pretrain_ssl(ds, config, tmp_path / "whole", device="cpu", progress=False)

    monitor, calls = pretrain._monitor, []

    def killed_in_epoch_2(*args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the job dies after epoch 1's checkpoint
        return monitor(*args)

    monkeypatch.setattr(pretrain, "_monitor", killed_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        pretrain.pretrain_ssl(ds, config, tmp_path / "killed", device="cpu", progress=False)
    assert (tmp_path / "killed" / "checkpoint.pt").exists()
    killed_run = (tmp_path / "killed" / "run_key").read_text()
    monkeypatch.setattr(pretrain, "_monitor", monitor)
    resumed = pretrain.pretrain_ssl(ds, config, tmp_path / "killed", device="cpu", progress=False)
    assert resumed["run_key"] == killed_run  # resumed into the killed job's MLflow run
    assert [row["ssl_loss"] for row in resumed["history"]] == [row["ssl_loss"] for row in whole["history"]]
    a, b = (torch.load(tmp_path / d / "backbone.pt", weights_only=True)["body"] for d in ("whole", "killed"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_support_summary_over_targets() -> None:
    from poisonlab.attribution.support import summarize_supports

    summary = summarize_supports([50, 100, None, 200, 100], 400, n_boot=500)
    assert summary["median"] == 100 and summary["mean_flipped"] == pytest.approx(112.5)
    assert summary["pct_flipped"] == 80.0
    low, high = summary["pct_flipped_ci"]
    assert low <= 80.0 <= high and summary["pct_flipped_sd"] > 0
    assert summarize_supports([None, None, 50], 400, n_boot=100)["median"] is None  # the median target is "> K"


def test_reference_predictions_from_saved_models(tmp_path) -> None:
    from poisonlab.attribution.retrain import load_classifier, predict_probs

    ds = quadrant_dataset(n_train=128, n_test=16)
    retrainer = Retrainer("tinycnn", Recipe(epochs=3, batch_size=32, lr=0.05, precision="fp32"), 4, "cpu")
    model, logits = retrainer.train(ds.x_train, ds.y_train, ds.x_test, seed=0)
    torch.save(model.state_dict(), tmp_path / "model.pt")
    loaded = load_classifier(tmp_path / "model.pt", "tinycnn", num_classes=4, in_channels=1, image_size=8)
    probs = predict_probs([loaded], ds.x_train, ds.y_train, ds.x_test, num_classes=4)
    assert probs.shape == (1, 16, 4)
    np.testing.assert_allclose(probs[0].sum(1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(probs[0].argmax(1), logits.argmax(1))
