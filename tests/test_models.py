"""The model zoo's contract: every arch is body → feature_dim → linear head, built from config sizes."""

from __future__ import annotations

import pytest
import torch

from poisonlab.models import MODELS, Classifier, build_model
from poisonlab.registry import ConfigError

ARCHS = ["densenet121", "mobilenetv2", "resnet18", "resnet9", "smallcnn", "tinycnn", "vgg16", "vit-small"]
# (in_channels, image_size, num_classes): MNIST-shaped and CIFAR-shaped inputs.
SHAPES = [(1, 28, 10), (3, 32, 7)]


def _build(arch: str, in_channels: int = 3, image_size: int = 32, num_classes: int = 10) -> Classifier:
    torch.manual_seed(0)
    return build_model(arch, num_classes=num_classes, in_channels=in_channels, image_size=image_size)


def test_registered_names_are_exactly_the_design_archs() -> None:
    assert MODELS.names() == ARCHS


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize(("in_channels", "image_size", "num_classes"), SHAPES)
def test_logits_and_features_have_the_right_shapes(
    arch: str, in_channels: int, image_size: int, num_classes: int
) -> None:
    model = _build(arch, in_channels, image_size, num_classes).eval()
    x = torch.randn(2, in_channels, image_size, image_size)
    with torch.no_grad():
        features = model.body(x)
        logits = model(x)
    assert isinstance(model.head, torch.nn.Linear)
    assert model.feature_dim == model.head.in_features
    assert features.shape == (2, model.feature_dim)
    assert logits.shape == (2, num_classes)
    torch.testing.assert_close(logits, model.head(features))


@pytest.mark.parametrize("arch", ARCHS)
def test_stages_partition_the_body_and_compose_to_it(arch: str) -> None:
    model = _build(arch).eval()
    stage_params = [id(p) for stage in model.stages for p in stage.parameters()]
    assert sorted(stage_params) == sorted(id(p) for p in model.body.parameters())
    assert len(set(stage_params)) == len(stage_params), "a parameter is shared by two stages"
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = model.body(x)
        for stage in model.stages:
            x = stage(x)
    torch.testing.assert_close(x, expected)


@pytest.mark.parametrize("arch", ["resnet18", "densenet121", "mobilenetv2"])
def test_small_images_get_a_stride_1_stem(arch: str) -> None:
    with torch.no_grad():
        assert _build(arch).stages[0](torch.randn(2, 3, 32, 32)).shape[-1] == 32
        # STL-10's 96 px too, as the AR repository's ResNet-18; larger images get the ImageNet stem.
        assert _build(arch, image_size=96).stages[0](torch.randn(2, 3, 96, 96)).shape[-1] == 96
        assert _build(arch, image_size=128).stages[0](torch.randn(2, 3, 128, 128)).shape[-1] < 128


@pytest.mark.parametrize("arch", ["smallcnn", "resnet18"])
def test_backward_reaches_every_parameter(arch: str) -> None:
    model = _build(arch, in_channels=1, image_size=28)
    loss = torch.nn.functional.cross_entropy(model(torch.randn(4, 1, 28, 28)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_unknown_arch_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError) as error:
        build_model("resnet50", num_classes=10, in_channels=3, image_size=32)
    assert all(arch in str(error.value) for arch in ARCHS)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize(
    ("field", "value"),
    [("num_classes", 0), ("in_channels", 0), ("in_channels", 2.5), ("image_size", 4), ("image_size", -32)],
)
def test_bad_sizes_name_the_field(arch: str, field: str, value: object) -> None:
    sizes = {"num_classes": 10, "in_channels": 3, "image_size": 32, field: value}
    with pytest.raises(ConfigError, match=field):
        build_model(arch, **sizes)


def test_vgg16_rejects_images_its_five_pools_cannot_halve() -> None:
    with pytest.raises(ConfigError, match="image_size"):
        _build("vgg16", image_size=16)


def test_vit_rejects_sizes_it_cannot_patch() -> None:
    with pytest.raises(ConfigError, match="image_size.*multiple"):
        _build("vit-small", image_size=30)
