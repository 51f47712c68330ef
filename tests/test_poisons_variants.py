"""Poison variants are ``functools.partial`` of their family: what a variant fixes is not an option."""

from __future__ import annotations

import numpy as np
import pytest

from poisonlab.data.container import ImageDataset
from poisonlab.poisons import POISONS, apply_poison, autoregressive, error_maximizing, error_minimizing, noise
from poisonlab.registry import ConfigError

VARIANTS = [
    ("em", error_minimizing.error_minimizing, {"name": "em", "classwise": False}),
    ("em-class", error_minimizing.error_minimizing, {"name": "em-class", "classwise": True}),
    ("tap", error_maximizing.error_maximizing, {"name": "tap", "targeted": True}),
    ("tap-untargeted", error_maximizing.error_maximizing, {"name": "tap-untargeted", "targeted": False}),
    ("regions-4", noise.regions, {"name": "regions-4", "grid": 2}),
    ("regions-16", noise.regions, {"name": "regions-16", "grid": 4}),
    ("ar", autoregressive.autoregressive, {"name": "ar", "norm": "l2"}),
    ("ar-linf", autoregressive.autoregressive, {"name": "ar-linf", "norm": "linf"}),
]


@pytest.mark.parametrize(("name", "family", "fixed"), VARIANTS)
def test_a_variant_is_its_family_with_keywords_fixed(name, family, fixed):
    variant = POISONS.get(name)
    assert variant.func is family and variant.keywords == fixed
    options = POISONS.options(name)
    assert "epsilon" in options and not set(fixed) & set(options)
    images = np.zeros((4, 8, 8, 1), dtype=np.uint8)
    dataset = ImageDataset(images, np.arange(4) % 2, images, np.arange(4) % 2, np.array(["a", "b"]))
    for keyword in fixed:  # a config cannot turn tap into its untargeted sibling, or rename a poison
        with pytest.raises(ConfigError, match=f"'{name}' got unknown option.*{keyword}"):
            apply_poison(name, dataset, seed=0, params={keyword: fixed[keyword]})



def test_the_poisons_registered_as_needing_a_gpu_are_those_that_train_a_surrogate():
    # The DAG gives a poison the scale's GPU resources by this fact (rules/common.smk poison_resources).
    needs_gpu = {name for name in POISONS.names() if POISONS.facts(name)["gpu"]}
    assert needs_gpu == {name for name in POISONS.names() if "surrogate" in POISONS.options(name)}
    assert needs_gpu == {"em", "em-class", "rem", "tap", "tap-untargeted"}
    assert "num_classes" not in POISONS.options("cuda")  # given by apply_poison, not an option
