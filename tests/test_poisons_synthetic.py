"""Synthetic poisons: LSP, OPS, regions-4/16 and class-wise random noise (budgets, structure, determinism, effect)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from poisonlab.data.container import ImageDataset
from poisonlab.poisons import POISONS, apply_poison
from poisonlab.poisons.lsp import CIFAR_L2, lsp_perturbation
from poisonlab.poisons.ops import search_pixels
from poisonlab.registry import ConfigError

SYNTHETIC = ["lsp", "ops", "regions-4", "regions-16", "random-noise"]
LINF_POISONS = ["regions-4", "regions-16", "random-noise", "random-noise-bernoulli"]
HALF_STEP = 0.5 / 255  # what rounding to uint8 may add to a perturbation


def random_dataset(n: int = 200, size: int = 32, channels: int = 3, num_classes: int = 10, seed: int = 0,
                   grey: bool = False) -> ImageDataset:
    """Random uint8 images, every class present; ``grey`` makes every pixel 128 so nothing is clamped."""
    rng = np.random.default_rng(seed)
    shape = (n, size, size, channels)
    x = np.full(shape, 128, np.uint8) if grey else rng.integers(0, 256, shape, dtype=np.uint8)
    y = np.arange(n) % num_classes
    return ImageDataset(x, y, x[:10], y[:10], [str(k) for k in range(num_classes)])


def perturbation(poisoned: ImageDataset, clean: ImageDataset) -> np.ndarray:
    return poisoned.x_train.astype(np.int64) - clean.x_train.astype(np.int64)


# ---------------------------------------------------------------- LSP

def test_lsp_perturbation_has_exact_l2_norm_and_constant_patches():
    labels = torch.arange(300) % 10
    delta = lsp_perturbation(labels, torch.Size((300, 3, 32, 32)), num_classes=10,
                             generator=torch.Generator().manual_seed(0), patch_size=8, epsilon=CIFAR_L2)
    assert CIFAR_L2 == pytest.approx(1.3041, abs=1e-4)  # the authors' sqrt(3072)·6/255
    norms = delta.flatten(1).norm(dim=1).double()
    torch.testing.assert_close(norms, torch.full_like(norms, CIFAR_L2), rtol=1e-5, atol=0)
    # Constant on every 8×8 patch: the 4×4×3 grid of features upsampled.
    patches = delta.view(300, 3, 4, 8, 4, 8)
    assert torch.equal(patches, patches[:, :, :, :1, :, :1].expand_as(patches))


def test_lsp_perturbations_are_separable_by_class():
    """Sample-wise draws from one cluster a class (as the original): nearest class mean recovers every label."""
    labels = torch.arange(500) % 10
    delta = lsp_perturbation(labels, torch.Size((500, 3, 32, 32)), num_classes=10,
                             generator=torch.Generator().manual_seed(1), patch_size=8, epsilon=CIFAR_L2).flatten(1)
    assert not torch.equal(delta[0], delta[10])  # two images of class 0 get different points of its cluster
    means = torch.stack([delta[labels == k].mean(0) for k in range(10)])
    assert torch.equal(torch.cdist(delta, means).argmin(1), labels)


def test_lsp_saved_l2_is_the_budget_after_quantisation(cifar_subset):
    poisoned = apply_poison("lsp", cifar_subset, seed=0)
    l2 = poisoned.extras["perturbation_l2"]
    # Clamping at 0 and 255 removes a little on some images; flooring to the uint8 grid, as the original
    # stores it, moves each entry by less than one step, so no image ends further than that over all
    # 3,072 entries from the budget (triangle inequality).
    assert l2.mean() == pytest.approx(CIFAR_L2, rel=0.03)
    assert l2.max() <= CIFAR_L2 + 2 * HALF_STEP * np.sqrt(3072)


# ---------------------------------------------------------------- L∞ class-wise noise

@pytest.mark.parametrize("name", LINF_POISONS)
def test_linf_noise_within_budget_after_quantisation(name):
    clean = random_dataset()
    for epsilon in (8 / 255, 0.3):
        poisoned = apply_poison(name, clean, seed=0, params={"epsilon": epsilon})
        assert poisoned.extras["perturbation_linf"].max() <= epsilon + HALF_STEP + 1e-6


@pytest.mark.parametrize("name", LINF_POISONS)
def test_linf_noise_is_classwise(name):
    """On mid-grey images nothing is clamped, so the saved difference is the class's noise, rounded."""
    clean = random_dataset(grey=True)
    delta = perturbation(apply_poison(name, clean, seed=0, params={"epsilon": 16 / 255}), clean)
    labels = clean.y_train
    for k in range(10):
        assert (delta[labels == k] == delta[labels == k][0]).all()  # identical within a class
    assert len({delta[labels == k][0].tobytes() for k in range(10)}) == 10  # different across classes
    assert np.abs(delta).max() <= 16


@pytest.mark.parametrize("name, grid", [("regions-4", 2), ("regions-16", 4)])
def test_regions_are_constant_plus_minus_epsilon_cells(name, grid):
    clean = random_dataset(grey=True)
    delta = perturbation(apply_poison(name, clean, seed=0, params={"epsilon": 16 / 255}), clean)
    assert set(np.unique(delta)) == {-16, 16}  # every entry moves by exactly ε, sign random
    side = 32 // grid
    cells = delta.reshape(len(delta), grid, side, grid, side, 3)
    assert (cells == cells[:, :, :1, :, :1]).all()  # one colour offset a region


def test_random_noise_bernoulli_is_zero_or_plus_epsilon_half_the_time():
    """learned-faster's class-wise noise: Bernoulli(½)·ε, never negative (random-noise keeps U(−ε, ε))."""
    clean = random_dataset(grey=True)
    delta = perturbation(apply_poison("random-noise-bernoulli", clean, seed=0, params={"epsilon": 16 / 255}), clean)
    noise = delta[:10].astype(float)  # the ten class images
    assert set(np.unique(noise)) == {0.0, 16.0}
    assert (noise == 16).mean() == pytest.approx(0.5, abs=0.02)


def test_random_noise_fills_the_box():
    clean = random_dataset(grey=True)
    delta = perturbation(apply_poison("random-noise", clean, seed=0, params={"epsilon": 16 / 255}), clean)
    noise = delta[:10].astype(float)  # the ten class images
    assert noise.min() == -16 and noise.max() == 16
    assert abs(noise.mean()) < 0.5 and noise.std() == pytest.approx(32 / np.sqrt(12), rel=0.05)  # uniform


# ---------------------------------------------------------------- OPS

def test_ops_changes_one_pixel_a_class_at_one_colour(cifar_subset):
    poisoned = apply_poison("ops", cifar_subset, seed=0)
    changed = (poisoned.x_train != cifar_subset.x_train).any(axis=3)  # (N, H, W) pixels touched
    assert changed.reshape(len(changed), -1).sum(1).max() == 1  # L0 ≤ 1 pixel an image
    pairs = set()
    for k in range(10):
        members = cifar_subset.y_train == k
        touched = changed[members].any(axis=0)
        assert touched.sum() == 1  # the same position for the whole class
        row, col = np.argwhere(touched)[0]
        colours = np.unique(poisoned.x_train[members, row, col], axis=0)
        assert len(colours) == 1 and set(colours[0]) <= {0, 255}  # one corner of the colour cube
        pairs.add((row, col, tuple(colours[0])))
        assert changed[members].any(axis=(1, 2)).mean() > 0.9  # only images already of that colour there stay
    assert len(pairs) == 10  # no two classes share a pixel and colour


def test_ops_search_maximises_mean_over_std_of_the_deviation():
    """Brute force of the authors' objective (mean/std of |ξ − x| over images and channels, taken pairs excluded)."""
    rng = np.random.default_rng(0)
    x = np.round(np.clip(rng.random((1, 6, 6, 3)) + rng.normal(0, 0.2, (120, 6, 6, 3)), 0, 1) * 255) / 255
    y = np.arange(120) % 4
    expected = []  # (pixel, colour) a class, in class order; a pair once taken is excluded
    for k in range(4):
        best = None
        for pixel, colour in itertools.product(range(36), itertools.product((0, 1), repeat=3)):
            deviation = np.abs(np.array(colour) - x[y == k, pixel // 6, pixel % 6])
            score = deviation.mean() / deviation.std()
            if (pixel, colour) not in expected and (best is None or score > best[0]):
                best = (score, pixel, colour)
        expected.append(best[1:])
    images = torch.from_numpy(x).float().permute(0, 3, 1, 2)
    position, colour = search_pixels(images, torch.from_numpy(y), 4)
    found = [(int(p), tuple(int(v) for v in c)) for p, c in zip(position, colour)]
    assert found == expected


def test_ops_takes_a_stable_pixel_on_a_constant_border():
    """MNIST-like: black borders in every image make a white border pixel infinitely stable."""
    clean = random_dataset(n=100, size=12, channels=1)
    clean.x_train[:, :2] = 0
    poisoned = apply_poison("ops", clean, seed=0)
    delta = perturbation(poisoned, clean)
    assert (delta[:, :2] >= 0).all() and (delta[:, 2:] == 0).all()
    assert (np.abs(delta).reshape(100, -1).sum(1) == 255).all()  # one pixel set to white in every image


# ---------------------------------------------------------------- determinism and errors

@pytest.mark.parametrize("name", SYNTHETIC)
def test_same_seed_same_bytes_other_seed_differs(name):
    clean = random_dataset()
    first = apply_poison(name, clean, seed=3).x_train
    assert np.array_equal(first, apply_poison(name, clean, seed=3).x_train)
    other = apply_poison(name, clean, seed=4).x_train
    if name == "ops":  # a deterministic search of the data: the seed has nothing to change
        assert np.array_equal(first, other)
    else:
        assert not np.array_equal(first, other)


@pytest.mark.parametrize("name, params, message", [
    ("lsp", {"epsilon": -1.0}, "epsilon must be > 0"),
    ("lsp", {"epsilon": 0.0}, "epsilon must be > 0"),
    ("lsp", {"patch_size": 0}, "patch_size must be an integer >= 1"),
    ("lsp", {"patch_size": -8}, "patch_size must be an integer >= 1"),
    ("lsp", {"patch_size": 8.0}, "patch_size must be an integer >= 1"),
    ("lsp", {"patch_size": 5}, "patch_size must be a divisor of the image size 32x32; got 5"),
    ("random-noise", {"epsilon": -8 / 255}, "epsilon must be > 0 and <= 1.0"),
    ("random-noise", {"epsilon": 2.0}, "epsilon must be > 0 and <= 1.0"),
    ("regions-4", {"epsilon": 0.0}, "epsilon must be > 0"),
    ("regions-16", {"epsilon": -0.1}, "epsilon must be > 0"),
    ("ops", {"epsilon": 1.0}, "unknown option"),
    ("regions-16", {"grid": 3}, "unknown option"),
])
def test_bad_options_are_config_errors(name, params, message):
    with pytest.raises(ConfigError, match=message):
        apply_poison(name, random_dataset(n=20), seed=0, params=params)


def test_shape_dependent_errors():
    with pytest.raises(ConfigError, match="'regions-16': grid must be a divisor of the image size 30x30; got 4"):
        apply_poison("regions-16", random_dataset(n=20, size=30), seed=0)
    # One grey 32×32 patch is one feature: two cluster centroids, not ten.
    with pytest.raises(ConfigError, match="patch_size 32 leaves 1 features, too few for 10 classes"):
        apply_poison("lsp", random_dataset(n=20, channels=1), seed=0, params={"patch_size": 32})
    apply_poison("regions-4", random_dataset(n=20, size=30), seed=0)  # 2 divides 30: fine


def test_all_registered():
    assert set(SYNTHETIC) <= set(POISONS.names())


# ---------------------------------------------------------------- effect on natural images

def ridge_train_accuracy(dataset: ImageDataset, ridge: float = 300.0) -> float:
    """Training accuracy (%) of a ridge-regression classifier on the raw pixels (dual form: 2,000 × 2,000 solve)."""
    x = torch.from_numpy(dataset.x_train).double().flatten(1) / 255
    x -= x.mean(0)
    labels = torch.from_numpy(dataset.y_train)
    gram = x @ x.T
    alpha = torch.linalg.solve(gram + ridge * torch.eye(len(gram), dtype=gram.dtype),
                               torch.nn.functional.one_hot(labels, dataset.num_classes).double())
    return 100 * (gram @ alpha).argmax(1).eq(labels).double().mean().item()


@pytest.fixture(scope="module")
def clean_ridge_accuracy(cifar_subset) -> float:
    return ridge_train_accuracy(cifar_subset)


@pytest.mark.parametrize("name", SYNTHETIC)
def test_poison_is_a_linear_shortcut_on_natural_images(name, cifar_subset, clean_ridge_accuracy):
    """The LSP paper's diagnosis: the poison makes natural images linearly separable by class.

    Measured (ridge 300, 2,000 images): clean 58.9%; lsp 97.1, ops 99.0, regions-4 92.7, regions-16 99.7,
    random-noise 99.9. A perturbation that were not class-consistent, or too small to matter next to the
    image content, would leave the poisoned set near the clean level.
    """
    assert clean_ridge_accuracy < 65.0
    assert ridge_train_accuracy(apply_poison(name, cifar_subset, seed=0)) > 88.0


# Measured with smallcnn, 8 epochs, seed 0, on the 2,000/1,000 subset (percent, clean-test accuracy):
#
#                  clean  ops   regions-4  regions-16  lsp   random-noise
#   no augmentation 48.9  24.1  31.8       39.5        47.4  49.2
#   crop + flip     48.7  39.6  39.0       42.8        47.8  48.1
#
# Without augmentation (the LSP authors' default training) OPS and the region poisons bite by a margin worth
# asserting; crop moves OPS's pixel and the regions' borders, so with it the drops shrink to 6-10 points.
# LSP and class-wise random noise do not bite smallcnn at this scale either way (its train accuracy is 73%
# and 61% after 8 epochs: it has not picked the shortcut up yet), so for them only the linear-shortcut test
# above is asserted. Bounds below keep ~5-10 points of margin from the measured drop.
DROP_AT_LEAST = {"ops": 15.0, "regions-4": 10.0, "regions-16": 5.0}


@pytest.mark.parametrize("name", sorted(DROP_AT_LEAST))
def test_poison_degrades_smallcnn_on_natural_images(name, cifar_accuracy):
    clean_accuracy = cifar_accuracy("clean", augment=False)  # smallcnn without crop and flip
    poisoned = cifar_accuracy(name, augment=False)
    assert clean_accuracy > 40.0  # the clean level the drops are read against
    assert poisoned < clean_accuracy - DROP_AT_LEAST[name], f"{name}: {poisoned:.1f}% vs clean {clean_accuracy:.1f}%"
