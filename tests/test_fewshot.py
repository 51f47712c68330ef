"""Few-shot (autoprotonet): episodes, the ProtoNet head, the decoder, evaluation, refinement, a resumable run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import Killed

from poisonlab import tracking
from poisonlab.data import build_dataset, stratified_subset
from poisonlab.data.container import ImageDataset
from poisonlab.fewshot import (METHODS, SPLITS, ClassPool, FewShotRecipe, FewShotRunSpec, build_fewshot_model,
                               build_method, class_pools, evaluate_fewshot, evaluate_fewshot_run, fit_episodes,
                               interval95, sample_episodes, train_fewshot_run)
from poisonlab.fewshot import run as run_module
from poisonlab.fewshot.episodes import augment_episodes, build_episode_augmentations, fixed_episodes
from poisonlab.fewshot.methods import embed_episodes, query_logits
from poisonlab.fewshot.figures import prototypes_figure, refinement_figure
from poisonlab.fewshot.models import FEWSHOT_ARCHS, class_prototypes
from poisonlab.fewshot.prototypes import (decode_prototypes, interpolate, prototypes_run, refinement_case_study,
                                          refinement_run)
from poisonlab.registry import ConfigError
from poisonlab.reporting.figures import save_figure

TINY = FewShotRecipe(way=5, shot=1, query=3, episodes_per_step=1, steps_per_epoch=2, epochs=3, milestones=(2,),
                     precision="fp32", val_episodes=0, augment={"crop": {"padding": 2, "mode": "constant"}})


@pytest.fixture(scope="module")
def mnist5k() -> ImageDataset:
    return build_dataset("mnist5k")


@pytest.fixture(scope="module")
def small(mnist5k) -> ImageDataset:
    """40 training and 20 test digits a class: pools of 60 a class."""
    return stratified_subset(mnist5k, train=400, test=200, seed=0)


@pytest.fixture(scope="module")
def small_container(small, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "mnist5k-small.npz"
    small.save(path)
    return path


@pytest.fixture
def mlflow_uri(tmp_path, monkeypatch) -> str:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


def test_registries_name_the_papers_models_methods_and_splits():
    assert FEWSHOT_ARCHS.names() == ["conv4", "conv4-ae"]
    assert METHODS.names() == ["ae-pretrain", "autoprotonet", "autoprotonet-ft", "protonet"]
    assert SPLITS.names() == ["cifar-fs", "cifar10-jpeg", "mini-imagenet", "mnist5k"]
    for name, sizes in (("cifar-fs", (64, 16, 20)), ("mini-imagenet", (64, 16, 20)), ("mnist5k", (5, 0, 5))):
        split = SPLITS.get(name)
        assert (len(split.train), len(split.val), len(split.test)) == sizes
        assert len({*split.train, *split.val, *split.test}) == sum(sizes)  # disjoint phases


def test_the_paper_recipe_runs_at_0_1_until_epoch_19_then_at_0_006():
    recipe = FewShotRecipe.from_dict({"augment": {"crop": {"padding": 4, "mode": "constant"}, "jitter": {},
                                                  "flip": {}}})
    assert (recipe.way, recipe.shot, recipe.query, recipe.episodes_per_step) == (20, 5, 15, 8)
    optimizer = recipe.optimization().make_optimizer([torch.nn.Parameter(torch.zeros(1))])
    assert optimizer.defaults["nesterov"] and optimizer.defaults["weight_decay"] == 5e-4
    steps_per_epoch = 3  # the schedule counts epochs; the paper's 1,000 steps would only make this slow
    schedule = recipe.optimization().make_scheduler(optimizer, steps_per_epoch=steps_per_epoch)
    rates = {}
    for step in range(recipe.epochs * steps_per_epoch):
        rates.setdefault(step // steps_per_epoch + 1, optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert rates[1] == rates[19] == 0.1 and rates[20] == rates[30] == pytest.approx(0.006)  # 1-based epochs
    with pytest.raises(ConfigError, match="unknown key"):
        FewShotRecipe.from_dict({"ways": 5})
    with pytest.raises(ConfigError, match="unknown augmentation 'blur'"):
        FewShotRecipe.from_dict({"augment": {"blur": {}}})


# ---------------------------------------------------------------- episodes


def test_pools_hold_disjoint_classes_with_all_their_images(mnist5k):
    pools = class_pools(mnist5k, "mnist5k")
    assert set(pools) == {"train", "test"}  # no meta-val classes at this scale
    assert pools["train"].classes == tuple("01234") and pools["test"].classes == tuple("56789")
    assert pools["train"].counts.tolist() == pools["test"].counts.tolist() == [500] * 5  # train + test split
    digits = [int(mnist5k.classes[y]) for y in mnist5k.y_train]
    zeros = pools["train"].images[pools["train"].members[0, :400]]  # class 0's training images come first
    assert torch.equal(zeros, torch.from_numpy(mnist5k.x_train[np.array(digits) == 0].transpose(0, 3, 1, 2)))
    padded = class_pools(mnist5k, "mnist5k", pad_to=32)["test"]
    assert padded.image_shape == (1, 32, 32)
    assert torch.equal(padded.images[:, :, 2:30, 2:30], pools["test"].images) and padded.images[:, :, :2].sum() == 0


def test_sampler_draws_exact_disjoint_seeded_episodes(mnist5k):
    pool = class_pools(mnist5k, "mnist5k")["test"]

    def draw(seed):
        return sample_episodes(pool, way=3, shot=2, query=4, episodes=50,
                               generator=torch.Generator().manual_seed(seed))

    episodes = draw(0)
    assert episodes.support.shape == (50, 6, 1, 28, 28) and episodes.query.shape == (50, 12, 1, 28, 28)
    assert episodes.support_labels[0].tolist() == [0, 0, 1, 1, 2, 2]
    assert episodes.query_labels[0].tolist() == [0] * 4 + [1] * 4 + [2] * 4
    for e in range(50):
        classes = episodes.classes[e]
        assert len(set(classes.tolist())) == 3  # no class twice
        support, query = set(episodes.support_index[e].tolist()), set(episodes.query_index[e].tolist())
        assert len(support) == 6 and len(query) == 12 and not support & query  # no image both
        # every image is of the class its label names
        assert torch.equal(pool.labels[episodes.support_index[e]], classes[episodes.support_labels[e]])
        assert torch.equal(pool.labels[episodes.query_index[e]], classes[episodes.query_labels[e]])
    assert torch.equal(episodes.support_index, draw(0).support_index)  # seeded
    assert not torch.equal(episodes.query_index, draw(1).query_index)
    with pytest.raises(ConfigError, match="way 6 exceeds"):
        sample_episodes(pool, way=6, shot=1, query=1, episodes=1, generator=torch.Generator())


def test_sampler_handles_classes_of_unequal_size():
    labels = torch.tensor([0] * 3 + [1] * 7)
    pool = ClassPool.from_tensors(torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1), labels, ("a", "b"))
    episodes = sample_episodes(pool, way=2, shot=1, query=2, episodes=200, generator=torch.Generator().manual_seed(0))
    assert (episodes.support_index >= 0).all() and (episodes.query_index >= 0).all()  # never a padding slot
    assert set(episodes.query_index[episodes.classes.gather(1, episodes.query_labels) == 0].tolist()) == {0, 1, 2}
    with pytest.raises(ConfigError, match="shot \\+ query = 4 exceeds the 3"):
        sample_episodes(pool, way=2, shot=2, query=2, episodes=1, generator=torch.Generator())


def test_episode_augmentation_is_batched_seeded_and_rejects_label_mixing(mnist5k):
    pool = class_pools(mnist5k, "mnist5k")["train"]
    episodes = sample_episodes(pool, way=5, shot=1, query=2, episodes=2, generator=torch.Generator().manual_seed(0))
    augmentations = build_episode_augmentations({"crop": {"padding": 4, "mode": "constant"}, "jitter": {}})
    a = augment_episodes(episodes, augmentations, torch.Generator().manual_seed(3))
    b = augment_episodes(episodes, augmentations, torch.Generator().manual_seed(3))
    assert torch.equal(a.support, b.support) and a.query.shape == episodes.query.shape
    assert not torch.equal(a.query, episodes.query.float()) and 0 <= a.query.min() and a.query.max() <= 255
    with pytest.raises(ConfigError, match="mixes images"):
        build_episode_augmentations({"mixup": {}})


# ---------------------------------------------------------------- models


def test_protonet_logits_match_a_hand_computation():
    model = build_fewshot_model("conv4", in_channels=1, image_size=16)
    with torch.no_grad():
        model.scale.fill_(2.0)
    support = torch.tensor([[[0.0, 0.0], [2.0, 0.0], [0.0, 4.0], [0.0, 2.0]]])  # classes 0, 0, 1, 1
    labels = torch.tensor([[0, 0, 1, 1]])
    prototypes = class_prototypes(support, labels, 2)
    assert prototypes.tolist() == [[[1.0, 0.0], [0.0, 3.0]]]
    query = torch.tensor([[[1.0, 1.0]]])
    # ‖(1,1) − (1,0)‖² = 1, ‖(1,1) − (0,3)‖² = 1 + 4 = 5; / d = 2; × scale 2
    assert model.logits(query, prototypes).tolist() == [[[-1.0, -5.0]]]
    shuffled = class_prototypes(support[:, [3, 0, 2, 1]], labels[:, [3, 0, 2, 1]], 2)
    assert torch.equal(shuffled, prototypes)  # prototypes do not depend on the support order


@pytest.mark.parametrize("size, channels, embedding", [(28, 1, 64), (32, 1, 256), (32, 3, 256), (84, 3, 1600)])
def test_decoder_returns_the_input_shape(size, channels, embedding):
    model = build_fewshot_model("conv4-ae", in_channels=channels, image_size=size)
    x = torch.rand(2, channels, size, size)
    z = model.embed(x)
    assert z.shape == (2, embedding) and model.embedding_dim == embedding
    decoded = model.decode(z)
    assert decoded.shape == x.shape and decoded.min() >= 0  # ReLU output, like pixels in [0, 1]


def test_reconstruction_loss_falls_on_a_fixed_batch(small):
    torch.manual_seed(0)
    pool = class_pools(small, "mnist5k")["train"]
    episodes = sample_episodes(pool, way=5, shot=1, query=1, episodes=1, generator=torch.Generator().manual_seed(0))
    model, method = build_fewshot_model("conv4-ae", in_channels=1, image_size=28), build_method("ae-pretrain")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(10):
        loss = method.loss(model, episodes).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_autoprotonet_with_lambda_zero_is_protonets_loss(small):
    pool = class_pools(small, "mnist5k")["train"]
    episodes = sample_episodes(pool, way=5, shot=1, query=2, episodes=2, generator=torch.Generator().manual_seed(0))
    model = build_fewshot_model("conv4-ae", in_channels=1, image_size=28)
    auto = build_method("autoprotonet", {"lambda_r": 0.0}).loss(model, episodes)
    plain = build_method("protonet").loss(model, episodes)
    assert torch.allclose(auto.loss, plain.loss) and auto.parts["recon"] > 0
    with pytest.raises(ConfigError, match="unknown option"):
        build_method("protonet", {"lambda_r": 1.0})


# ---------------------------------------------------------------- evaluation and refinement


def test_interval_is_1_96_population_std_over_root_n():
    mean, ci95 = interval95([100.0, 80.0, 60.0, 80.0])
    assert mean == 80.0
    assert ci95 == pytest.approx(1.96 * math.sqrt(200.0) / 2)  # std (ddof 0) = √((400 + 0 + 400 + 0) / 4)


def test_evaluation_is_seeded_and_agrees_with_embedding_each_episode(small):
    torch.manual_seed(0)
    pool = class_pools(small, "mnist5k")["test"]
    model = build_fewshot_model("conv4", in_channels=1, image_size=28).eval()
    score = evaluate_fewshot(model, pool, shot=1, episodes=12, seed=5)
    assert score == evaluate_fewshot(model, pool, shot=1, episodes=12, seed=5)
    assert 20.0 < score["acc"] <= 100.0  # far above chance (20%) even untrained: digits differ that much
    accuracies = []  # the slow way: each episode's own forward passes
    with torch.no_grad():
        for batch in fixed_episodes(pool, way=5, shot=1, query=15, episodes=12, seed=5):
            logits = query_logits(model, batch, *embed_episodes(model, batch))
            accuracies += (100.0 * (logits.argmax(2) == batch.query_labels).float().mean(1)).tolist()
    assert score["acc"] == pytest.approx(np.mean(accuracies), abs=1e-4)
    assert score["ci95"] == pytest.approx(interval95(accuracies)[1], abs=1e-4)


def test_interpolation_endpoints_are_the_prototype_and_the_example():
    p, e = torch.tensor([1.0, -2.0, 0.5]), torch.tensor([3.0, 2.0, 0.5])
    path = interpolate(p, e)
    assert path.shape == (11, 3)
    assert torch.equal(path[0], p) and torch.allclose(path[10], e)
    assert torch.allclose(path[7], p + 0.7 * (e - p))


def test_refinement_replaces_only_the_target_prototype(small):
    torch.manual_seed(0)
    pool = class_pools(small, "mnist5k")["test"]
    model = build_fewshot_model("conv4-ae", in_channels=1, image_size=28).eval()
    record, arrays = refinement_case_study(model, pool, val_episodes=20, seed=3)
    assert record == refinement_case_study(model, pool, val_episodes=20, seed=3)[0]  # seeded
    target = record["classes"].index(record["target_class"])
    assert [row["i"] for row in record["per_i"].values()] == list(range(11)) and list(record["per_i"])[7] == "7"
    assert record["before"] == record["per_i"]["0"] and record["after"] == record["per_i"]["7"]
    others = [k for k in range(5) if k != target]
    assert np.allclose(arrays["decoded_before"][others], arrays["decoded_after"][others], atol=1e-6)
    assert not np.allclose(arrays["decoded_before"][target], arrays["decoded_after"][target])
    assert np.allclose(arrays["interpolants"][0], arrays["decoded_before"][target], atol=1e-6)
    assert record["example_index"] != record["support_index"][target]
    assert int(pool.labels[record["example_index"]]) == int(pool.labels[record["support_index"][target]])
    with pytest.raises(ConfigError, match="chosen_i"):
        refinement_case_study(model, pool, chosen_i=11)


def test_decoded_prototypes_are_images_of_the_class_means(small):
    pool = class_pools(small, "mnist5k", pad_to=32)["test"]
    model = build_fewshot_model("conv4-ae", in_channels=1, image_size=32).eval()
    support = pool.images[pool.members[:, :3].flatten()]
    decoded = decode_prototypes(model, support, torch.arange(5).repeat_interleave(3), 5)
    assert decoded.shape == (5, 1, 32, 32) and 0 <= decoded.min() and decoded.max() <= 1
    with pytest.raises(ConfigError, match="no decoder"):
        decode_prototypes(build_fewshot_model("conv4", in_channels=1, image_size=32), support,
                          torch.arange(5).repeat_interleave(3), 5)


# ---------------------------------------------------------------- a whole run, killed and resumed


def test_a_killed_run_resumes_to_the_same_model(small_container, mlflow_uri, tmp_path, monkeypatch):
    import mlflow

    spec = FewShotRunSpec(dataset="mnist5k", method="autoprotonet", recipe="tiny", seed=0)
    whole = train_fewshot_run(spec, TINY, small_container, tmp_path / "whole", progress=False, device="cpu")
    assert sorted(p.name for p in (tmp_path / "whole").iterdir()) == ["metrics.json", "model.pt"]

    def killed_after_epoch_2(*args, on_epoch, **kwargs):
        def log_then_kill(row):
            on_epoch(row)
            if row["epoch"] == 2:
                raise Killed
        return fit_episodes(*args, on_epoch=log_then_kill, **kwargs)

    run_dir = tmp_path / "killed"
    with monkeypatch.context() as patch:
        patch.setattr(run_module, "fit_episodes", killed_after_epoch_2)
        with pytest.raises(Killed):
            train_fewshot_run(spec, TINY, small_container, run_dir, progress=False, device="cpu")
    assert (run_dir / "checkpoint.pt").exists() and not (run_dir / "metrics.json").exists()
    killed_key = (run_dir / "run_key").read_text()

    resumed = train_fewshot_run(spec, TINY, small_container, run_dir, progress=False, device="cpu")
    assert resumed["run_key"] == killed_key  # into the same MLflow run
    assert [row["train_loss"] for row in resumed["history"]] == [row["train_loss"] for row in whole["history"]]
    a, b = (torch.load(d / "model.pt", weights_only=True) for d in (tmp_path / "whole", run_dir))
    assert all(torch.equal(a[k], b[k]) for k in a)  # bitwise on the CPU
    on_disk = json.loads((run_dir / "metrics.json").read_text())
    assert on_disk["epochs"] == len(on_disk["history"]) == 3 and on_disk["selected_epoch"] == 3
    assert on_disk["arch"] == "conv4-ae" and on_disk["classes"]["test"] == list("56789")
    tracking.sync()
    assert mlflow.MlflowClient(mlflow_uri).get_run(tracking.mlflow_run_id(killed_key)).info.status == "FINISHED"

    evaluation = evaluate_fewshot_run(run_dir, small_container, tmp_path / "eval.json", episodes=20, query=5,
                                      device="cpu")
    assert [r["shot"] for r in evaluation["results"].values()] == [1, 5] and all(
        r["episodes"] == 20 for r in evaluation["results"].values())
    assert list(evaluation["results"]) == ["1-shot", "5-shot"]
    refinement = refinement_run(run_dir, small_container, tmp_path / "refinement.json", tmp_path / "refinement.npz",
                                device="cpu", val_episodes=10, queries=5)
    assert refinement["method"] == "autoprotonet" and len(refinement["per_i"]) == 11
    figure_data = prototypes_run({"AP": run_dir}, small_container, tmp_path / "prototypes.npz", device="cpu")
    with np.load(tmp_path / "prototypes.npz") as arrays:
        assert arrays["support"].shape == (5, 5, 1, 28, 28) and arrays["decoded_AP"].shape == (5, 1, 28, 28)
    assert figure_data["models"] == ["AP"] and figure_data["runs"]["AP"]["method"] == "autoprotonet"

    prototypes = prototypes_figure(tmp_path / "prototypes.npz", scale="embedded")
    assert len(prototypes.axes) == 5 * 5 + 5  # a support grid (5 shots × 5 classes) and one model's row
    refined = refinement_figure(tmp_path / "refinement.json", tmp_path / "refinement.npz")
    assert len(refined.axes) == (5 + 1) + 11 + 1  # supports and example, interpolants, the accuracy curve
    save_figure(refined, pdf=tmp_path / "refinement.pdf", png=tmp_path / "refinement.png")
    assert (tmp_path / "refinement.png").stat().st_size > 0


def test_a_finetuned_run_needs_its_pretrained_weights(small_container, mlflow_uri, tmp_path):
    spec = FewShotRunSpec(dataset="mnist5k", method="autoprotonet-ft", recipe="tiny")
    with pytest.raises(ConfigError, match="starts from a 'ae-pretrain' model"):
        train_fewshot_run(spec, TINY, small_container, tmp_path / "ft", progress=False, device="cpu")
