"""Training-procedure defenses: PGD adversarial training (at-*) and Progressive Staged Training (pst)."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch
from helpers import Killed, quadrant_dataset, quick_test_accuracy

from poisonlab.data.container import ImageDataset
from poisonlab.defenses import DEFENSES, EpochContext, build_defense
from poisonlab.defenses.adversarial import BUDGETS, pgd_attack
from poisonlab.defenses.pst import advance, class_clustering
from poisonlab.models import build_model
from poisonlab.poisons.base import single_thread
from poisonlab.registry import ConfigError
from poisonlab.training import DeviceData, Recipe, fit
from poisonlab.training.procedure import soft_cross_entropy

AT_NAMES = ["at-linf-4", "at-linf-8", "at-linf-16", "at-l2"]
RECIPE = Recipe.from_dict({"epochs": 4, "batch_size": 32, "lr": 0.05, "schedule": "cosine",
                           "augment": {"crop": {"padding": 1}, "flip": {}}})


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small ops: on a shared 2-core machine two threads' fork/join cost more than the ops (PGD on 64 8×8
    images, measured under load: 0.24 s on one thread, 8.3 s on two)."""
    with single_thread():
        yield




def _pattern_dataset(n=256, seed=0) -> ImageDataset:
    """Channel 1 carries a fixed random pattern per class (a class-wise 'poison'); channels 0 and 2 are noise."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 4
    x = rng.integers(0, 50, size=(n, 8, 8, 3), dtype=np.uint8)
    patterns = rng.integers(0, 2, size=(4, 8, 8), dtype=np.uint8) * 200
    x[..., 1] += patterns[y]
    return ImageDataset(x, y, x[:64], y[:64], classes=np.array(list("abcd")))


def _model():
    torch.manual_seed(0)
    return build_model("smallcnn", num_classes=4, in_channels=3, image_size=8)


def _device_data(dataset):
    return DeviceData.from_container(dataset, torch.device("cpu"))


def _weights(model):
    return {name: tensor.clone() for name, tensor in model.state_dict().items()}


@pytest.fixture(scope="module")
def trained():
    """A smallcnn fitted for 4 epochs on the quadrant task, and its data."""
    data = _device_data(quadrant_dataset(channels=3))
    model = _model()
    fit(model, data, RECIPE, seed=0, progress=False)
    return model, data


# ---------------------------------------------------------------- adversarial training


def test_registered_names():
    assert {*AT_NAMES, "pst"} <= set(DEFENSES.names())
    defaults = {name: inspect.signature(DEFENSES.get(name)).parameters for name in AT_NAMES}
    assert [defaults[name]["epsilon"].default for name in AT_NAMES] == [4 / 255, 8 / 255, 16 / 255, 0.75]
    assert all(defaults[name]["steps"].default == 10 for name in AT_NAMES)


@pytest.mark.parametrize("name", AT_NAMES)
def test_pgd_raises_the_loss_and_stays_in_its_budget(trained, name):
    model, data = trained
    model.eval()
    norm, epsilon = BUDGETS[name]
    x_raw, labels = data.x_train[:64], data.y_train[:64]
    x01, targets = x_raw.float() / 255, torch.nn.functional.one_hot(labels, 4).float()

    def attack(steps):
        return pgd_attack(model, x01, targets, data.normalize, norm=norm, epsilon=epsilon, steps=steps,
                          step_size=1.5 * epsilon / 10, generator=torch.Generator().manual_seed(0))

    def loss(x):
        with torch.no_grad():
            return soft_cross_entropy(model(data.normalize(x * 255)), targets).item()

    x_adv, random_start = attack(10), attack(0)
    assert loss(x_adv) > loss(random_start) > 0 and loss(x_adv) > loss(x01)
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    change = (x_adv - x01).flatten(1)
    if norm == "linf":
        assert change.abs().max() <= epsilon + 1e-6
    else:
        assert change.norm(dim=1).max() <= epsilon + 1e-5

    model.train()  # the objective as fit calls it: the adversarial batch's loss is above the clean batch's
    objective = build_defense(name).objective
    adversarial_loss, logits = objective(model, x_raw, targets, data.normalize, torch.Generator().manual_seed(0))
    assert logits.shape == (64, 4)
    assert adversarial_loss.item() > soft_cross_entropy(model(data.normalize(x_raw)), targets).item()


@pytest.mark.parametrize("name,options,match", [
    ("at-linf-8", {"epsilon": 0}, r"defense 'at-linf-8': epsilon must be > 0 and <= 1.0; got 0"),
    ("at-l2", {"epsilon": -0.5}, r"defense 'at-l2': epsilon must be > 0; got -0.5"),
    ("at-linf-4", {"epsilon": 4}, r"defense 'at-linf-4': epsilon must be > 0 and <= 1.0; got 4"),
    ("at-linf-16", {"steps": 0}, r"defense 'at-linf-16': steps must be an integer >= 1; got 0"),
    ("at-l2", {"steps": 2.5}, r"steps must be an integer >= 1; got 2.5"),
    ("at-linf-8", {"step_size": 0}, r"defense 'at-linf-8': step_size must be > 0; got 0"),
    ("at-linf-8", {"eps": 0.1}, r"unknown option\(s\) eps; allowed: epsilon, steps, step_size"),
    ("at-linf-5", {}, r"unknown defense 'at-linf-5'; known defenses: .*at-linf-4"),
])
def test_bad_adversarial_options_are_rejected(name, options, match):
    with pytest.raises(ConfigError, match=match):
        build_defense(name, options)


def test_adversarial_fit_is_seeded():
    data = _device_data(quadrant_dataset(channels=3, n_train=128))
    recipe = Recipe.from_dict({**RECIPE.to_dict(), "epochs": 2})
    weights = []
    for seed in (0, 0, 1):
        model = _model()
        result = fit(model, data, recipe, seed=seed, progress=False, defense=build_defense("at-linf-8"))
        weights.append(torch.cat([p.flatten() for p in model.state_dict().values() if p.is_floating_point()]))
    assert result.history[-1]["train_loss"] > 0
    assert torch.equal(weights[0], weights[1])
    assert not torch.equal(weights[0], weights[2])


# ---------------------------------------------------------------- progressive staged training


def test_class_clustering_is_the_calinski_harabasz_index_of_the_labels():
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(600) % 4
    centres = torch.randn(4, 3, 5, 5, generator=generator) * 3
    noise = torch.randn(600, 3, 5, 5, generator=generator)
    clustered = class_clustering(centres[labels] + noise, labels, 4)
    # (between scatter / (K − 1)) / (within scatter / (N − K)), written out:
    flat = (centres[labels] + noise).flatten(1).double()
    means = torch.stack([flat[labels == k].mean(0) for k in range(4)])
    between = 150 * (means - flat.mean(0)).square().sum()
    within = (flat - means[labels]).square().sum()
    assert clustered == pytest.approx(float(between / 3 / (within / 596)), rel=1e-9)
    assert clustered > 100
    assert class_clustering(noise, labels, 4) == pytest.approx(1, abs=0.3)  # unrelated to the labels: chance
    assert class_clustering(torch.ones(600, 8), labels, 4) == 0.0
    # A class absent from the sample counts for nothing.
    assert class_clustering(centres[labels] + noise, labels, 10) == clustered


def test_stages_advance_through_the_deepest_full_speed_stage_that_clusters():
    def depths(measurements):
        state, seen = {"depth": 0, "start": [], "history": []}, []
        for epoch, clustering in enumerate(measurements, 1):
            advance(state, clustering, rise=0.3, epoch=epoch)
            seen.append(state["depth"])
        assert state["start"] == measurements[0] and state["history"] == measurements
        return seen

    # Epoch 1 sets the start; a 20% drift is under rise 0.3; a slowed stage is not looked at again; no going back.
    assert depths([[1.0, 1.0], [1.2, 1.2], [2.0, 1.1], [0.5, 1.2], [0.5, 2.0], [9.0, 0.1]]) == [0, 0, 1, 1, 2, 2]
    # A deeper stage clustering slows the shallower ones that feed it too.
    assert depths([[1.0, 1.0], [0.9, 1.5], [9.0, 9.0]]) == [0, 2, 2]


def _context(model, optimizer, data, epoch, defense):
    return EpochContext(model, optimizer, data, epoch, torch.Generator().manual_seed(0), defense.state)


def test_pst_measures_shallow_activations_and_slows_the_stage_that_clusters():
    """A first conv blind to the class channel, then one that sees only it: its stage and the next cluster."""
    data = _device_data(_pattern_dataset())
    model = _model()
    conv = model.stages[0][0].weight
    sees_class = conv.detach().clone()
    sees_class[:, [0, 2]] = 0
    with torch.no_grad():
        conv[:, 1] = 0
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    defense = build_defense("pst", {"sample_size": 200})
    defense.on_epoch_start(_context(model, optimizer, data, 1, defense))
    blind, = defense.state["history"]
    assert blind[0] < 2 and defense.state["depth"] == 0 and len(defense.state["sample"]) == 200

    with torch.no_grad():
        conv.copy_(sees_class)
    defense.on_epoch_start(_context(model, optimizer, data, 2, defense))
    seeing = defense.state["history"][1]
    assert seeing[0] > 20 * blind[0] and seeing[1] > 1.3 * blind[1]
    assert defense.state["depth"] == 2  # both stages cluster now; smallcnn's third block is past max_depth 2
    defense.on_epoch_start(_context(model, optimizer, data, 3, defense))
    assert defense.state["depth"] == 2 and len(defense.state["history"]) == 3
    assert model.training  # the measurement's eval mode is undone


def _steps_with_pst(slowdown, depth, steps):
    """``steps`` SGD steps (momentum, weight decay, the recipe's LambdaLR) with ``stages[:depth]`` slowed."""
    data = _device_data(quadrant_dataset(channels=3, n_train=64))
    model = _model()
    optimizer = RECIPE.make_optimizer(model.parameters())
    scheduler = RECIPE.make_scheduler(optimizer, steps_per_epoch=2)
    defense = build_defense("pst", {"slowdown": slowdown})
    defense.on_epoch_start(_context(model, optimizer, data, 1, defense))
    defense.state["depth"] = depth
    before = _weights(model)
    for _ in range(steps):
        loss = soft_cross_entropy(model(data.normalize(data.x_train)),
                                  torch.nn.functional.one_hot(data.y_train, 4).float())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
    return before, _weights(model)


def test_frozen_stage_does_not_move_and_slowed_stage_moves_by_the_factor():
    before, after = _steps_with_pst(slowdown=0.0, depth=1, steps=3)
    for name, tensor in before.items():
        if name.startswith("body.block1.") and tensor.is_floating_point() and "running" not in name:
            assert torch.equal(tensor, after[name]), name  # weight decay and momentum included
    assert not torch.equal(before["body.block2.0.weight"], after["body.block2.0.weight"])

    _, full = _steps_with_pst(slowdown=0.5, depth=0, steps=1)
    _, slowed = _steps_with_pst(slowdown=0.5, depth=1, steps=1)
    for name in ("body.block1.0.weight", "body.block1.1.weight"):
        assert torch.allclose(slowed[name] - before[name], 0.5 * (full[name] - before[name]), atol=1e-7), name
    assert torch.equal(slowed["body.block2.0.weight"], full["body.block2.0.weight"])


def test_pst_needs_a_classifier_and_valid_options():
    defense = build_defense("pst")
    plain = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(192, 4))
    context = EpochContext(plain, torch.optim.SGD(plain.parameters(), lr=0.1), None, 1, torch.Generator(),
                           defense.state)
    with pytest.raises(ConfigError, match="defense 'pst' needs a poisonlab Classifier .*got Sequential"):
        defense.on_epoch_start(context)
    for options, match in [({"rise": 0}, "rise must be > 0"), ({"slowdown": 1}, "slowdown must be >= 0 and < 1; got 1"),
                           ({"max_depth": 0}, "max_depth must be an integer >= 1"),
                           ({"sample_size": 1.5}, "sample_size must be an integer >= 1")]:
        with pytest.raises(ConfigError, match=f"defense 'pst': {match}"):
            build_defense("pst", options)


def test_a_killed_pst_run_resumes_to_the_same_weights_and_stages(tmp_path):
    data = _device_data(quadrant_dataset(channels=3))
    reference_defense = build_defense("pst")
    reference = _model()
    fit(reference, data, RECIPE, seed=0, progress=False, defense=reference_defense)
    assert reference_defense.state["depth"] == 2  # frozen before the kill: a resume that forgot it would train them

    checkpoint = tmp_path / "checkpoint.pt"

    def kill_after_epoch_2(row):
        if row["epoch"] == 2:
            raise Killed

    with pytest.raises(Killed):
        fit(_model(), data, RECIPE, seed=0, checkpoint_path=checkpoint, on_epoch=kill_after_epoch_2,
            progress=False, defense=build_defense("pst"))
    resumed_defense = build_defense("pst")
    resumed = _model()
    fit(resumed, data, RECIPE, seed=0, checkpoint_path=checkpoint, progress=False, defense=resumed_defense)
    assert resumed_defense.state["history"] == reference_defense.state["history"]
    assert resumed_defense.state["depth"] == reference_defense.state["depth"]
    for name, tensor in reference.state_dict().items():
        assert torch.equal(tensor, resumed.state_dict()[name]), name


# ---------------------------------------------------------------- natural images

# Measured (smallcnn, 8 epochs, crop + flip, seed 0 unless noted; pst.py's docstring has the full table):
# with the crop padded by reflection, undefended AR 34.4% (clean 48.7%) and PST on AR 44.3, 43.1, 47.1 with
# seeds 0, 1, 2, where the same runs without PST's stages reach 24.5, 30.6, 25.9. With the originals' zero
# fill (the crop's default now): undefended AR 32.7% (clean 46.4%), PST on AR 38.1% (fp32) and 38.5% (bf16).
# PST lifts OPS in 2 seeds of 3, barely CUDA (36.0 vs 32.8) or regions-4 (40.2 vs 39.0), and costs clean
# training 3-4.5 points (reflect crop); AR is the case asserted.
# One at-linf-8 epoch costs ~8x an undefended one (11.5 s vs 1.4 s here), so adversarial training gets no
# natural-image test.
PST_ON_AR_AT_LEAST = 36.0


def test_pst_recovers_much_of_what_ar_took(poisoned_cifar):
    accuracy = quick_test_accuracy(poisoned_cifar("ar"), defense=build_defense("pst"))
    assert accuracy > PST_ON_AR_AT_LEAST, f"pst on ar: {accuracy:.1f}% (undefended 32.7%, clean 46.4%)"
