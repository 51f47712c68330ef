"""The AR poisons (``ar``, ``ar-linf``) and CUDA (``cuda``): budgets, class structure, determinism, errors, effect."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from poisonlab.data.container import ImageDataset
from poisonlab.poisons import POISONS, apply_poison, to_uint8
from poisonlab.poisons.autoregressive import (
    DEFAULT_COEFFICIENTS_PATH,
    PUBLISHED,
    ar_fill,
    ar_perturbations,
    impulse_responses,
    load_published,
    search_coefficients,
    separation,
    start_positions,
)
from poisonlab.poisons.convolution import convolve_classwise, cuda_filters
from poisonlab.poisons.lsp import CIFAR_L2, lsp_perturbation
from poisonlab.registry import ConfigError

HAVE_PUBLISHED = all((DEFAULT_COEFFICIENTS_PATH / name).is_file() for name in PUBLISHED.values())
needs_published = pytest.mark.skipif(not HAVE_PUBLISHED,
                                     reason=f"published AR coefficients absent from {DEFAULT_COEFFICIENTS_PATH}")


def toy(n: int = 200, classes: int = 10, shape: tuple[int, int, int] = (32, 32, 3), seed: int = 0) -> ImageDataset:
    """Random mid-grey images (64..192), so an L2-1 or 8/255 perturbation is never clamped."""
    rng = np.random.default_rng(seed)
    x = rng.integers(64, 193, size=(n, *shape), dtype=np.uint8)
    y = np.arange(n) % classes
    return ImageDataset(x, y, x[:20], y[:20], [str(k) for k in range(classes)])


# ---------------------------------------------------------------- AR: the process


@needs_published
def test_published_coefficients_are_10_and_100_processes_of_3_channels_by_8():
    for classes in (10, 100):
        raw = torch.load(DEFAULT_COEFFICIENTS_PATH / PUBLISHED[(classes, 3)], weights_only=True)
        coefficients = load_published(classes, 3)
        assert coefficients.shape == (classes, 3, 3, 3)
        assert torch.equal(coefficients, torch.stack(list(raw)))
        assert torch.all(coefficients[:, :, 2, 2] == 0)  # the current pixel: 8 free coefficients a channel
        assert torch.allclose(coefficients.sum((2, 3)), torch.ones(classes, 3), atol=1e-3)


def test_row_fill_is_the_window_recursion_in_raster_order():
    g = torch.Generator().manual_seed(0)
    maps = torch.randn(2, 3, 12, 10, generator=g, dtype=torch.float64)
    coefficients = torch.randn(2, 3, 3, 3, generator=g, dtype=torch.float64) / 4
    expected = maps.clone()
    for i in range(10):  # the definition: each pixel the weighted sum of its 3×3 window, current pixel 0
        for j in range(8):
            window = expected[:, :, i : i + 3, j : j + 3] * coefficients
            expected[:, :, i + 2, j + 2] = window.sum((2, 3)) - window[:, :, 2, 2]
    filled = ar_fill(maps.permute(2, 3, 0, 1).reshape(12, 10, 6).clone(),
                     coefficients.permute(2, 3, 0, 1).reshape(3, 3, 6))
    assert torch.allclose(filled.view(12, 10, 2, 3).permute(2, 3, 0, 1), expected, rtol=0, atol=1e-12)


@needs_published
def test_impulse_responses_reproduce_the_raster_fill_of_a_randn_map():
    coefficients = load_published(10, 3)
    g = torch.Generator().manual_seed(0)
    maps = torch.randn(36, 36, 2, 3, generator=g)
    labels = torch.tensor([0, 7])
    filled = ar_fill(maps.clone().view(36, 36, 6), coefficients[labels].permute(2, 3, 0, 1).reshape(3, 3, 6))
    expected = filled[4:, 4:].reshape(1024, 2, 3).permute(1, 2, 0)
    starts = maps.view(36 * 36, 2, 3)[start_positions(32, 32)].permute(1, 2, 0)  # only these are read
    responses = impulse_responses(coefficients, 32, 32)[labels]
    fast = torch.einsum("ncs,ncsp->ncp", starts, responses)
    assert (fast - expected).abs().max() <= 1e-5 * expected.abs().max()


# ---------------------------------------------------------------- AR: budgets and structure


@needs_published
def test_ar_noise_has_exact_l2_norm_and_the_saved_images_close_to_it():
    labels = torch.arange(50) % 10
    delta = ar_perturbations(labels, load_published(10, 3), (50, 3, 32, 32), torch.Generator().manual_seed(0),
                             norm=2, epsilon=1.0)
    assert torch.allclose(delta.flatten(1).norm(dim=1), torch.ones(50), rtol=1e-5)
    poisoned = apply_poison("ar", toy(), seed=0)
    # After uint8 rounding: ±0.5/255 a pixel adds ~0.06 in quadrature, so the L2 norm stays within 0.02 of 1.
    assert np.allclose(poisoned.extras["perturbation_l2"], 1.0, atol=0.02)


@needs_published
def test_ar_linf_noise_has_exact_linf_norm_and_stays_in_budget():
    delta = ar_perturbations(torch.arange(50) % 10, load_published(10, 3), (50, 3, 32, 32),
                             torch.Generator().manual_seed(0), norm=float("inf"), epsilon=8 / 255)
    assert torch.allclose(delta.abs().flatten(1).amax(1), torch.full((50,), 8 / 255), rtol=1e-6)
    poisoned = apply_poison("ar-linf", toy(), seed=0)
    assert poisoned.extras["perturbation_linf"].max() <= 8 / 255 + 1e-6  # rounding keeps |255 δ| ≤ 8
    assert poisoned.extras["perturbation_linf"].min() >= 7 / 255  # every image moved by about the budget


@pytest.mark.parametrize("channels", [3, 1])
def test_ar_noise_is_samplewise_from_one_process_a_class(channels):
    classes, per_class, size = 10, 4, 32 if channels == 3 else 28
    coefficients = (load_published(10, 3) if channels == 3 and HAVE_PUBLISHED
                    else search_coefficients(classes, channels, size, size, torch.Generator().manual_seed(0)))
    labels = torch.arange(classes).repeat_interleave(per_class)
    delta = ar_perturbations(labels, coefficients, (len(labels), channels, size, size),
                             torch.Generator().manual_seed(0), norm=2, epsilon=1.0)
    # Sample-wise: two images of one class share no noise (correlation well below 1).
    same_class = F.cosine_similarity(delta[0::per_class].flatten(1), delta[1::per_class].flatten(1), dim=1)
    assert same_class.abs().max() < 0.9
    # Class-wise process: class k's prediction-error filter leaves ~0 of every class-k image's noise
    # (float rounding only) and at least 5% of the noise of any other class.
    response = separation(coefficients, delta.view(classes, per_class, channels, size, size))
    assert response.diagonal().max() < 1e-2
    assert (response + torch.eye(classes)).min() > 0.05


def test_coefficient_search_gives_stable_separable_processes_and_is_seeded():
    found = search_coefficients(10, 1, 28, 28, torch.Generator().manual_seed(0))
    assert found.shape == (10, 1, 3, 3) and torch.all(found[:, :, 2, 2] == 0)
    assert torch.allclose(found.sum((2, 3)), torch.ones(10, 1), atol=1e-5)
    assert torch.equal(found, search_coefficients(10, 1, 28, 28, torch.Generator().manual_seed(0)))
    assert not torch.equal(found, search_coefficients(10, 1, 28, 28, torch.Generator().manual_seed(1)))
    noise = ar_perturbations(torch.arange(10), found, (10, 1, 28, 28), torch.Generator().manual_seed(0),
                             norm=2, epsilon=1.0)
    assert noise.isfinite().all()


# ---------------------------------------------------------------- CUDA


def test_cuda_filters_follow_the_paper():
    filters = cuda_filters(10, 3, 0.3, torch.Generator().manual_seed(0))
    assert filters.shape == (10, 3, 3)
    flat = filters.flatten(1)
    assert torch.all((flat == 1).sum(1) == 1)  # one entry a filter set to 1
    others = flat[flat != 1]
    assert others.min() >= 0 and others.max() <= 0.3  # the rest U(0, p_b)
    assert torch.unique(flat, dim=0).shape[0] == 10


def recovered_filters(clean: torch.Tensor, poisoned: torch.Tensor, kernel_size: int = 3) -> torch.Tensor:
    """Each image's filter by least squares (poisoned ∝ Σ taps × shifted clean), scaled so its peak is 1."""
    n, _, height, width = clean.shape
    pad = kernel_size // 2
    padded = F.pad(clean, (pad, pad, pad, pad))
    shifts = [padded[:, :, r : r + height, c : c + width].flatten(1)
              for r in range(kernel_size) for c in range(kernel_size)]
    solution = torch.linalg.lstsq(torch.stack(shifts, 2).double(), poisoned.flatten(1).double().unsqueeze(2)).solution
    taps = solution.squeeze(2)
    return taps / taps.amax(1, keepdim=True)


def test_cuda_blurs_every_image_of_a_class_with_the_same_filter():
    images, labels = torch.rand(60, 3, 32, 32, generator=torch.Generator().manual_seed(1)), torch.arange(60) % 10
    poisoned = POISONS.get("cuda")(images, labels, num_classes=10, generator=torch.Generator().manual_seed(0))
    assert poisoned.min() >= 0 and torch.allclose(poisoned.amax((1, 2, 3)), torch.ones(len(images)))
    found = recovered_filters(images, poisoned)
    filters = cuda_filters(10, 3, 0.3, torch.Generator().manual_seed(0)).flatten(1).double()
    # Within a class the drawn filter, up to the uint8 floor the poison stores (±1/255 a pixel).
    assert torch.allclose(found, filters[labels], atol=2e-3)
    assert torch.unique(filters, dim=0).shape[0] == 10  # and different across classes


@pytest.mark.parametrize("name", ["cuda", "lsp"])
def test_cuda_and_lsp_store_floor_x_255_as_their_originals(name):
    """The originals cast x·255 to uint8 (a truncation); apply_poison's rounding must keep that floor."""
    images, labels = torch.rand(60, 3, 32, 32, generator=torch.Generator().manual_seed(1)), torch.arange(60) % 10
    if name == "cuda":
        unquantised = convolve_classwise(images, labels, cuda_filters(10, 3, 0.3, torch.Generator().manual_seed(0)))
    else:
        delta = lsp_perturbation(labels, images.shape, num_classes=10, generator=torch.Generator().manual_seed(0),
                                 patch_size=8, epsilon=CIFAR_L2)
        unquantised = (images + delta).clamp(0, 1)
    poisoned = POISONS.get(name)(images, labels, num_classes=10, generator=torch.Generator().manual_seed(0))
    stored = torch.from_numpy(to_uint8(poisoned)).permute(0, 3, 1, 2)
    assert torch.equal(stored, unquantised.mul(255).floor().to(torch.uint8))
    rounded = torch.from_numpy(to_uint8(unquantised)).permute(0, 3, 1, 2)
    assert 0.3 < (stored != rounded).float().mean() < 0.7  # about half the values one level below rounding


def test_cuda_keeps_a_black_image_black_and_the_size():
    images = torch.zeros(2, 1, 9, 7)
    out = convolve_classwise(images, torch.tensor([0, 1]), cuda_filters(2, 5, 0.3, torch.Generator().manual_seed(0)))
    assert out.shape == images.shape and torch.equal(out, images)


# ---------------------------------------------------------------- determinism and errors


@pytest.mark.parametrize("name, params, shape", [
    ("ar", {}, (32, 32, 3)),
    ("ar-linf", {}, (32, 32, 3)),
    ("ar", {"epsilon": 3.0}, (28, 28, 1)),
    ("cuda", {}, (32, 32, 3)),
    ("cuda", {"kernel_size": 9, "blur_parameter": 0.06}, (28, 28, 1)),
])
def test_same_seed_same_bytes_other_seed_other_bytes(name, params, shape):
    if name.startswith("ar") and shape[2] == 3 and not HAVE_PUBLISHED:
        pytest.skip("published AR coefficients absent")
    data = toy(n=60, shape=shape)
    first = apply_poison(name, data, seed=3, params=params).x_train
    assert np.array_equal(first, apply_poison(name, data, seed=3, params=params).x_train)
    assert not np.array_equal(first, apply_poison(name, data, seed=4, params=params).x_train)


@pytest.mark.parametrize("name, params, message", [
    ("ar", {"epsilon": -1.0}, "epsilon must be > 0"),
    ("ar", {"epsilon": 0.0}, "epsilon must be > 0"),
    ("ar-linf", {"epsilon": 2.0}, "epsilon must be > 0 and <= 1.0"),
    ("ar", {"coefficients": "learned"}, "coefficients must be one of auto, published, search"),
    ("cuda", {"kernel_size": 4}, "kernel_size must be an odd integer"),
    ("cuda", {"kernel_size": 0}, "kernel_size must be an odd integer"),
    ("cuda", {"blur_parameter": 0.0}, "blur_parameter must be > 0 and <= 1.0"),
    ("cuda", {"blur_parameter": 1.5}, "blur_parameter must be > 0 and <= 1.0"),
])
def test_bad_options_stop_with_a_message_naming_them(name, params, message):
    with pytest.raises(ConfigError, match=message):
        apply_poison(name, toy(n=20), seed=0, params=params)


def test_published_coefficients_that_do_not_exist_stop_with_the_path(tmp_path):
    with pytest.raises(ConfigError, match="exists only for 10 classes × 3 channels, 100 classes × 3 channels"):
        apply_poison("ar", toy(n=21, classes=7), seed=0, params={"coefficients": "published"})
    with pytest.raises(ConfigError, match="got 10 classes × 1 channels"):
        apply_poison("ar", toy(n=20, shape=(28, 28, 1)), seed=0, params={"coefficients": "published"})
    with pytest.raises(ConfigError, match=f"{tmp_path}/params-classes-10-mr-10.pt not found"):
        apply_poison("ar-linf", toy(n=20), seed=0, params={"coefficients_path": str(tmp_path)})


# ---------------------------------------------------------------- effect on natural images


@pytest.mark.parametrize("name", ["ar", "cuda"])
def test_training_on_the_poison_ends_far_below_clean(name, poisoned_cifar, cifar_accuracy,
                                                     clean_cifar_accuracy):
    # Measured (smallcnn, 8 epochs, this 2,000-image subset, one thread): clean 48.7%, ar 34.4%, cuda 32.8%
    # on an AMD EPYC; clean 45.9 / 46.2%, ar 30.2 / 36.7%, cuda 29.4 / 29.8% on an Intel Xeon without / with
    # oneDNN capped at AVX2 (ar-linf 47.8%: at 8/255 its L2 is ~0.35, too weak to bite at this scale). So a
    # drop of 9.5-16.5 points (the papers' ResNet-18 on 50k images falls near chance) where poisons that do
    # not bite here lose under a point (random-noise 45.4%, lsp 45.9% on the capped Xeon). AR's final
    # accuracy moves by points with the CPU's kernels; the bound, 6 points below clean, sits between the two.
    poisoned = poisoned_cifar(name)
    if name == "ar":  # natural images clamp a little of the noise away: measured mean L2 0.991
        assert abs(poisoned.extras["perturbation_l2"].mean() - 1.0) < 0.03
    accuracy = cifar_accuracy(name)
    assert accuracy < clean_cifar_accuracy - 6, (name, accuracy, clean_cifar_accuracy)
