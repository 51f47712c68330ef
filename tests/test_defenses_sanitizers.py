"""The data-level defenses (``jpeg-<q>``, ``grayscale``, ``bdr``, ``blur``, ``ortho``): properties, errors, effect."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import quick_test_accuracy
from torchvision.io import decode_jpeg, encode_jpeg

from poisonlab.data.container import ImageDataset
from poisonlab.defenses import DEFENSES, Sanitizer, apply_sanitizer, build_defense, is_sanitizer
from poisonlab.defenses.projection import class_basis, fit_linear
from poisonlab.registry import ConfigError

SANITIZERS = ["jpeg-10", "grayscale", "bdr", "blur", "ortho"]


def smooth_images(n: int = 8, channels: int = 3, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Photo-like float images on the uint8 grid: smooth colour blobs plus a little pixel noise."""
    g = torch.Generator().manual_seed(seed)
    blobs = F.interpolate(torch.rand(n, channels, 4, 4, generator=g), size=size, mode="bicubic", align_corners=False)
    noisy = blobs + 0.03 * torch.randn(n, channels, size, size, generator=g)
    return noisy.clamp(0, 1).mul(255).round().div(255)


def sanitize(name: str, images: torch.Tensor, labels: torch.Tensor | None = None, *, seed: int = 0,
             options: dict | None = None) -> torch.Tensor:
    labels = torch.arange(len(images)) % 10 if labels is None else labels
    sanitizer = build_defense(name, options)
    return sanitizer.apply(images, labels, num_classes=10, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", SANITIZERS)
def test_every_sanitizer_keeps_shape_and_dtype_and_stays_in_range(name):
    images = smooth_images()
    cleaned = sanitize(name, images)
    assert isinstance(build_defense(name), Sanitizer)
    assert cleaned.shape == images.shape and cleaned.dtype == torch.float32
    if name != "ortho":  # the projection leaves [0, 1] by design (off_grid)
        assert cleaned.min() >= 0 and cleaned.max() <= 1


# ---------------------------------------------------------------- JPEG


@pytest.mark.parametrize("channels", [3, 1])
def test_jpeg_is_torchvision_round_trip_of_the_uint8_image(channels):
    images = smooth_images(channels=channels)
    uint8 = list(images.mul(255).round().to(torch.uint8))
    expected = torch.stack(decode_jpeg(encode_jpeg(uint8, quality=25))).float() / 255
    assert torch.equal(sanitize("jpeg-25", images), expected)


def test_jpeg_error_falls_as_quality_rises():
    images = smooth_images()
    errors = [(sanitize(f"jpeg-{q}", images) - images).square().mean().item() for q in (5, 10, 50, 95)]
    assert errors == sorted(errors, reverse=True) and errors[-1] < errors[0] / 10


@pytest.mark.parametrize("name, quality", [("jpeg-0", "0"), ("jpeg-101", "101")])
def test_jpeg_quality_outside_1_to_100_is_rejected(name, quality):
    with pytest.raises(ConfigError, match=rf"defense '{name}': quality must be an integer in 1\.\.100; got {quality}"):
        build_defense(name)


# ---------------------------------------------------------------- grayscale


def test_grayscale_is_the_luma_on_every_channel():
    images = smooth_images()
    gray = sanitize("grayscale", images)
    luma = 0.299 * images[:, 0] + 0.587 * images[:, 1] + 0.114 * images[:, 2]
    for channel in range(3):
        assert torch.allclose(gray[:, channel], luma, atol=1e-6)


def test_grayscale_leaves_single_channel_images_unchanged():
    images = smooth_images(channels=1)
    assert torch.equal(sanitize("grayscale", images), images)


# ---------------------------------------------------------------- bit-depth reduction


@pytest.mark.parametrize("bits", [1, 2, 3])
def test_bdr_keeps_the_high_bits_so_at_most_2_to_the_bits_levels_remain(bits):
    images = smooth_images()
    reduced = sanitize("bdr", images, options={"bits": bits})
    levels = reduced.mul(255).round().to(torch.uint8)
    high_bits = images.mul(255).round().to(torch.uint8) & (0xFF << (8 - bits) & 0xFF)  # torchvision's posterize
    assert torch.equal(levels, high_bits)
    assert len(levels.unique()) <= 2**bits


def test_bdr_default_is_2_bits():
    assert len(sanitize("bdr", smooth_images()).unique()) <= 4


@pytest.mark.parametrize("bits", [0, 9, 2.5, True])
def test_bdr_bits_outside_1_to_8_are_rejected(bits):
    with pytest.raises(ConfigError, match=r"defense 'bdr': bits must be an integer in 1\.\.8"):
        build_defense("bdr", {"bits": bits})


# ---------------------------------------------------------------- blur


def high_frequency_energy(images: torch.Tensor) -> float:
    """Energy of the differences between neighbouring pixels."""
    return (images.diff(dim=-1).square().sum() + images.diff(dim=-2).square().sum()).item()


def test_blur_removes_high_frequency_energy():
    images = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))  # white noise: mostly high frequency
    blurred = sanitize("blur", images, options={"sigma": 1.0})
    assert high_frequency_energy(blurred) < 0.1 * high_frequency_energy(images)  # in theory about 0.04
    assert torch.allclose(blurred.mean((2, 3)), images.mean((2, 3)), atol=0.01)  # a low-pass keeps the average


def test_blur_at_the_published_sigma_is_nearly_the_identity():
    # ISS and APBench use GaussianBlur(3, sigma=0.1): a neighbour weighs e^-50 of the centre.
    images = smooth_images()
    assert torch.allclose(sanitize("blur", images), images, atol=1e-6)


@pytest.mark.parametrize("options, field", [({"kernel_size": 4}, "kernel_size"), ({"kernel_size": 1}, "kernel_size"),
                                            ({"sigma": 0}, "sigma"), ({"sigma": -1.0}, "sigma")])
def test_blur_bad_options_are_rejected(options, field):
    with pytest.raises(ConfigError, match=rf"defense 'blur': {field} must be"):
        build_defense("blur", options)


# ---------------------------------------------------------------- orthogonal projection


def separable_toy(n: int = 300, classes: int = 10, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random 3×8×8 images plus a class-wise pattern: a shortcut a linear model finds."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % classes
    patterns = torch.randn(classes, 3, 8, 8, generator=g) * 0.1
    return (0.3 + 0.4 * torch.rand(n, 3, 8, 8, generator=g) + patterns[labels]).clamp(0, 1), labels


def test_ortho_leaves_images_orthogonal_to_the_normalised_class_weights():
    images, labels = separable_toy()
    weights = fit_linear(images.flatten(1), labels, 10, torch.Generator().manual_seed(0))  # what apply fits at seed 0
    basis = class_basis(weights)
    projected = sanitize("ortho", images, labels).flatten(1).double()
    assert torch.allclose(basis.T @ basis, torch.eye(10, dtype=torch.float64), atol=1e-10)
    normalised = F.normalize(weights.double(), dim=1)
    assert torch.allclose(normalised @ basis @ basis.T, normalised, atol=1e-10)  # the basis spans the weights
    assert ((projected @ basis).norm(dim=1) <= 1e-4 * projected.norm(dim=1)).all()


def test_ortho_linear_model_learns_the_class_shortcut():
    images, labels = separable_toy()
    weights = fit_linear(images.flatten(1), labels, 10, torch.Generator().manual_seed(0), batch_size=32)
    assert (images.flatten(1) @ weights.T).argmax(1).eq(labels).float().mean() == 1.0


def test_ortho_is_seeded():
    images, labels = separable_toy()
    first, again = sanitize("ortho", images, labels, seed=0), sanitize("ortho", images, labels, seed=0)
    assert torch.equal(first, again)
    assert not torch.equal(first, sanitize("ortho", images, labels, seed=1))


def test_ortho_through_apply_sanitizer_is_stored_as_float16_with_its_defense_in_meta():
    images, labels = separable_toy(n=100)
    x = images.mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    dataset = ImageDataset(x, labels.numpy(), x[:10], labels.numpy()[:10], [str(k) for k in range(10)])
    cleaned = apply_sanitizer("ortho", dataset, seed=3, options={"epochs": 5})
    assert cleaned.x_train.dtype == np.float16 and cleaned.x_train.shape == x.shape
    assert np.isfinite(cleaned.x_train).all()  # unclamped: projected pixels may leave [0, 255]
    assert cleaned.meta["defense"] == {"name": "ortho", "options": {"epochs": 5}, "seed": 3}
    assert np.array_equal(cleaned.x_test, dataset.x_test)


@pytest.mark.parametrize("options, message", [
    ({"epochs": 0}, "epochs must be an integer >= 1"), ({"batch_size": 1.5}, "batch_size must be an integer >= 1"),
    ({"lr": 0}, "lr must be > 0"), ({"lr": "0.1"}, "lr must be > 0")])
def test_ortho_bad_options_are_rejected(options, message):
    with pytest.raises(ConfigError, match=rf"defense 'ortho': {message}"):
        build_defense("ortho", options)


# ---------------------------------------------------------------- effect on natural images
#
# smallcnn, 8 epochs on the 2,000-image CIFAR-10 subset. Measured (CPU): clean 48.7% with crop+flip,
# 48.5% without. A defense "recovers" a poison when it wins back at least half of the accuracy the
# poison took: accuracy >= poisoned + (clean - poisoned) / 2.
#
# ortho's linear model: the original takes 20 epochs of batches of 1024 on 50,000 images, ~1,000 SGD
# steps; on 2,000 images the same 20 epochs are 40 steps, after which the weights are little more than
# the class means and projecting them out destroys the images (measured: ops 21.6%, lsp-3 10.7%).
# Batches of 40 give the original's ~1,000 steps.
ORTHO_AT_THIS_SCALE = {"batch_size": 40}


def recovered(sanitized: float, poisoned: float, clean: float) -> bool:
    return sanitized >= poisoned + (clean - poisoned) / 2


@pytest.fixture(scope="module")
def clean_accuracy_without_augmentation(cifar_accuracy) -> float:
    return cifar_accuracy("clean", augment=False)


@pytest.fixture(scope="module")
def ops_accuracy(cifar_accuracy, clean_accuracy_without_augmentation) -> float:
    accuracy = cifar_accuracy("ops", augment=False)
    assert accuracy < clean_accuracy_without_augmentation - 15  # it bites: measured 24.6 against 48.5
    return accuracy


def test_jpeg_10_recovers_ar(poisoned_cifar, cifar_accuracy, clean_cifar_accuracy):
    # Measured: clean 48.7, ar 34.4, ar + jpeg-10 45.2 (76% of the drop back); the bound asks 50%.
    poisoned_accuracy = cifar_accuracy("ar")
    assert poisoned_accuracy < clean_cifar_accuracy - 6  # the poison bites (test_poisons_ar_cuda: 9.5-15.7)
    sanitized = quick_test_accuracy(apply_sanitizer("jpeg-10", poisoned_cifar("ar"), seed=0))
    assert recovered(sanitized, poisoned_accuracy, clean_cifar_accuracy), (sanitized, poisoned_accuracy)


@pytest.mark.parametrize("defense, options", [("jpeg-10", None), ("ortho", ORTHO_AT_THIS_SCALE)])
def test_jpeg_10_and_ortho_recover_ops_without_augmentation(defense, options, poisoned_cifar, ops_accuracy,
                                                            clean_accuracy_without_augmentation):
    # Measured without crop/flip: clean 48.5, ops 24.6, ops + jpeg-10 47.5, ops + ortho 46.4 (>= 90% back).
    sanitized = quick_test_accuracy(apply_sanitizer(defense, poisoned_cifar("ops"), seed=0, options=options),
                                    augment=False)
    assert recovered(sanitized, ops_accuracy, clean_accuracy_without_augmentation), (sanitized, ops_accuracy)


def test_ortho_recovers_lsp_at_epsilon_3_without_augmentation(poisoned_cifar, clean_accuracy_without_augmentation):
    # LSP at its CIFAR budget (L2 1.30) does not bite on 2,000 images (48.4 against 48.5); at L2 3 it does.
    # Measured without crop/flip: lsp-3 24.4, lsp-3 + ortho 44.6 (84% back). jpeg-10 does not recover it at
    # this scale (32.1, a third of the drop), so it is not asserted.
    poisoned = poisoned_cifar("lsp", epsilon=3.0)
    poisoned_accuracy = quick_test_accuracy(poisoned, augment=False)
    assert poisoned_accuracy < clean_accuracy_without_augmentation - 15
    sanitized = quick_test_accuracy(apply_sanitizer("ortho", poisoned, seed=0, options=ORTHO_AT_THIS_SCALE),
                                    augment=False)
    assert recovered(sanitized, poisoned_accuracy, clean_accuracy_without_augmentation), (sanitized, poisoned_accuracy)


def test_a_defense_level_on_its_registration_is_what_its_factory_builds():
    # The DAG asks for a sanitized container by the registered level, without building the defense.
    names = [f"{name}-10" if DEFENSES.facts(name)["numbered"] else name for name in DEFENSES.names()]
    assert {name for name in names if is_sanitizer(name)} == {"bdr", "blur", "grayscale", "jpeg-10", "ortho"}
    for name in names:
        assert isinstance(build_defense(name), Sanitizer) == is_sanitizer(name), name
    assert "jpeg-75" in DEFENSES and "jpeg" not in DEFENSES and "at-linf-0" not in DEFENSES
