"""The trainer: batched augmentations, recipes from config, resumable and deterministic training."""

from __future__ import annotations

import dataclasses
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import Killed, quadrant_dataset
from poisonlab.registry import ConfigError
from poisonlab.training import AUGMENTATIONS, DeviceData, Recipe, build_augmentations, fit
from poisonlab.training import precision as precision_module


def _batch(b=16, c=3, h=8, w=8, k=4):
    x = torch.rand(b, c, h, w, generator=torch.Generator().manual_seed(1))
    y = torch.nn.functional.one_hot(torch.arange(b) % k, k).float()
    return x, y


def _generator(seed=0):
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- augmentations


def test_registered_augmentations():
    assert AUGMENTATIONS.names() == ["affine", "color-jitter", "crop", "cutmix", "cutout", "flip", "mixup", "rotate"]


def test_crop_is_a_shifted_window_of_the_padded_image():
    x, y = _batch()
    (crop,) = build_augmentations({"crop": {"padding": 2, "mode": "constant"}})
    out, y_out = crop(x, y, _generator())
    assert out.shape == x.shape and torch.equal(y_out, y)
    padded = torch.nn.functional.pad(x, (2,) * 4)
    for image, window in zip(padded, out):
        matches = [torch.equal(image[:, i:i + 8, j:j + 8], window) for i in range(5) for j in range(5)]
        assert any(matches)
    assert not torch.equal(out, x)  # 16 images: some moved


def test_default_crop_fills_with_zeros_where_torchvision_random_crop_does(monkeypatch):
    """The originals' RandomCrop(32, padding=4) (fill 0), image by image, on the offsets our crop drew."""
    import torchvision.transforms as T

    x = torch.randint(1, 256, (16, 3, 32, 32), dtype=torch.uint8, generator=_generator(2))  # no natural zeros
    (crop,) = build_augmentations({"crop": {"padding": 4}})
    out, _ = crop(x, torch.zeros(16, 10), _generator())
    assert out.dtype == torch.uint8
    # Our crop draws 2B shifts in [-4, 4] (rows, then columns); torchvision's window of the padded
    # image starts at shift + 4.
    shift = torch.randint(9, (32,), generator=_generator()) - 4
    tops = iter(zip((shift[:16] + 4).tolist(), (shift[16:] + 4).tolist()))
    monkeypatch.setattr(T.RandomCrop, "get_params", staticmethod(lambda img, size: (*next(tops), *size)))
    reference = T.RandomCrop(32, padding=4)
    for image, window in zip(x, out):
        assert torch.equal(reference(image), window)
    zero_share = (out == 0).float().mean().item()
    assert 0.05 < zero_share < 0.25  # ~13.5% on average: the black border the reflect mode never had


def test_flip_mirrors_some_images_and_keeps_the_rest():
    x, y = _batch(b=64)
    (flip,) = build_augmentations({"flip": {}})
    out, _ = flip(x, y, _generator())
    flipped = torch.tensor([torch.equal(o, i.flip(-1)) for o, i in zip(out, x)])
    kept = torch.tensor([torch.equal(o, i) for o, i in zip(out, x)])
    assert torch.all(flipped | kept) and 10 < flipped.sum() < 54


def test_cutout_zeroes_one_square_per_image():
    x, y = _batch(h=32, w=32)
    x = x + 0.1  # no natural zeros
    (cut,) = build_augmentations({"cutout": {"size": 8}})
    out, _ = cut(x, y, _generator())
    zeros = (out == 0).all(1)  # (B, H, W)
    areas = zeros.flatten(1).sum(1)
    assert torch.all(areas > 0) and torch.all(areas <= 64)
    assert torch.all((areas == 64) | (areas < 64))


@pytest.mark.parametrize("name", ["mixup", "cutmix"])
def test_mixing_keeps_target_mass_and_mixes_labels(name):
    x, y = _batch(b=32)
    (mix,) = build_augmentations({name: {"alpha": 1.0}})
    out, targets = mix(x, y, _generator(3))
    assert out.shape == x.shape
    assert torch.allclose(targets.sum(1), torch.ones(32))
    assert (targets.max(1).values < 1).any()


def test_same_generator_state_gives_the_same_batch():
    x, y = _batch()
    augs = build_augmentations({"crop": {"padding": 4}, "flip": {}, "cutout": {"size": 4}, "mixup": {"alpha": 0.4}})

    def run(seed):
        g, out, t = _generator(seed), x, y
        for a in augs:
            out, t = a(out, t, g)
        return out, t

    assert torch.equal(run(5)[0], run(5)[0]) and torch.equal(run(5)[1], run(5)[1])
    assert not torch.equal(run(5)[0], run(6)[0])


def test_strong_augmentation_is_seeded_by_the_run_generator_and_keeps_pixels_in_range():
    """The orthogonal projection's retraining: rotation, affine, colour jitter (kornia), cutmix half the time."""
    x = torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8, generator=_generator(1))
    y = torch.nn.functional.one_hot(torch.arange(8) % 4, 4).float()
    augs = build_augmentations({"rotate": {"degrees": 10}, "affine": {"shear": 10, "scale": [0.8, 1.2]},
                                "color-jitter": {"brightness": 0.2, "contrast": 0.2, "saturation": 0.2}})

    def run(seed):
        g, out = _generator(seed), x
        torch.manual_seed(123)  # the global RNG must not matter
        for a in augs:
            out, _ = a(out, y, g)
        return out

    first = run(5)
    assert first.dtype == torch.float32 and first.shape == x.shape
    assert 0 <= first.min() and first.max() <= 255
    assert torch.equal(first, run(5)) and not torch.equal(first, run(6))
    (rotate,) = build_augmentations({"rotate": {"degrees": 10}})
    rotated, _ = rotate(x + 1, y, _generator())  # no natural zeros: the zeros are the rotated-in corners
    assert rotated.dtype == torch.uint8 and (rotated == 0).any()
    assert set(rotated.unique().tolist()) <= set((x + 1).unique().tolist()) | {0}  # nearest: no new values
    (cutmix,) = build_augmentations({"cutmix": {"alpha": 1.0, "p": 0.5}})
    mixed = [not torch.equal(cutmix(x, y, g)[1], y) for g in [_generator()] for _ in range(40)]
    assert 10 < sum(mixed) < 30


@pytest.mark.parametrize("spec,match", [
    ({"shear": {}}, "unknown augmentation 'shear'; known augmentations: affine, color-jitter, crop"),
    ({"cutmix": {"p": 1.5}}, r"cutmix.p must lie in \[0, 1\]"),
    ({"affine": {"scale": [1.2, 0.8]}}, "affine.scale must be"),
    ({"crop": {"padding": -1}}, "crop.padding must be >= 0"),
    ({"cutout": {"length": 3}}, "unknown option.*length.*allowed: size"),
    ({"mixup": {"alpha": 0}}, "mixup.alpha must be > 0"),
])
def test_bad_augmentation_specs_are_rejected(spec, match):
    with pytest.raises(ConfigError, match=match):
        build_augmentations(spec)


# ---------------------------------------------------------------- recipes


@pytest.mark.parametrize("values,match", [
    ({"epochs": 0}, r"recipe: epochs must be an integer >= 1; got 0"),
    ({"optimizer": "lion"}, r"recipe: optimizer must be one of adam, adamw, sgd; got 'lion'"),
    ({"schedule": "poly"}, r"recipe: schedule must be one of constant, cosine, linear, step; got 'poly'"),
    ({"label_smoothing": 1.5}, r"label_smoothing must be >= 0 and < 1; got 1.5"),
    ({"grad_clip": -1}, r"grad_clip must be > 0"),
    ({"lr": "abc"}, r"recipe: lr must be > 0; got 'abc'"),
    ({"learning_rate": 0.1}, r"unknown key\(s\) learning_rate; allowed: epochs, batch_size"),
    ({"augment": {"crop": {"pad": 4}}}, r"crop' got unknown option\(s\) pad"),
    ({"precision": "fp16"}, r"recipe: precision must be one of auto, bf16, fp32; got 'fp16'"),
])
def test_bad_recipes_are_rejected_before_training(values, match):
    with pytest.raises(ConfigError, match=match):
        Recipe.from_dict(values)


def test_step_schedule_drops_at_milestones_and_warmup_ramps():
    recipe = Recipe.from_dict({"epochs": 4, "schedule": "step", "milestones": [2, 3], "gamma": 0.1,
                               "warmup_epochs": 1, "lr": 1.0})
    model = torch.nn.Linear(2, 2)
    optimizer = recipe.make_optimizer(model.parameters())
    scheduler = recipe.make_scheduler(optimizer, steps_per_epoch=2)
    rates = []
    for _ in range(8):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates == pytest.approx([0.5, 1.0, 1.0, 1.0, 0.1, 0.1, 0.01, 0.01])


# ---------------------------------------------------------------- the loop




def _toy_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                               torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten(), torch.nn.Linear(32, 4))


RECIPE = Recipe.from_dict({"epochs": 4, "batch_size": 32, "lr": 0.1, "schedule": "cosine",
                           "augment": {"crop": {"padding": 1}, "mixup": {"alpha": 0.5}}, "label_smoothing": 0.1})


def test_fit_learns_and_records_every_epoch():
    data = DeviceData.from_container(quadrant_dataset(), torch.device("cpu"))
    result = fit(_toy_model(), data, RECIPE, seed=0, progress=False)
    assert [row["epoch"] for row in result.history] == [1, 2, 3, 4]
    assert set(result.history[0]) == {"epoch", "train_loss", "train_acc", "test_acc", "seconds"}
    assert result.final_test_acc > 90
    assert result.peak["test_acc"] == max(row["test_acc"] for row in result.history)


def test_same_seed_same_weights_other_seed_differs():
    data = DeviceData.from_container(quadrant_dataset(), torch.device("cpu"))
    weights = []
    for seed in (0, 0, 1):
        model = _toy_model()
        fit(model, data, RECIPE, seed=seed, progress=False)
        weights.append(torch.cat([p.flatten() for p in model.state_dict().values() if p.is_floating_point()]))
    assert torch.equal(weights[0], weights[1])
    assert not torch.equal(weights[0], weights[2])


@pytest.mark.parametrize("native_bf16", [False, True])
@pytest.mark.parametrize("precision", ["auto", "bf16", "fp32"])
def test_precision_sets_the_forward_dtype_on_the_cpu(precision, native_bf16, monkeypatch):
    # "auto" follows the hardware: bf16 only where the CPU has bf16 units; an explicit value is honoured.
    monkeypatch.setattr(precision_module, "cpu_has_native_bf16", lambda: native_bf16)
    expected = "bf16" if precision == "bf16" or (precision == "auto" and native_bf16) else "fp32"
    data = DeviceData.from_container(quadrant_dataset(), torch.device("cpu"))
    model = _toy_model()
    seen = set()
    model[-1].register_forward_hook(lambda module, inputs, output: seen.add(output.dtype))
    recipe = dataclasses.replace(RECIPE, precision=precision)
    result = fit(model, data, recipe, seed=0, progress=False)
    assert seen == {torch.bfloat16 if expected == "bf16" else torch.float32}  # training steps and test accuracy
    assert result.precision == expected
    assert result.final_test_acc > 90


def test_auto_precision_is_bf16_on_cuda_whatever_the_cpu(monkeypatch):
    monkeypatch.setattr(precision_module, "cpu_has_native_bf16", lambda: False)
    assert precision_module.resolve_precision("auto", "cuda") == "bf16"
    assert precision_module.resolve_precision("fp32", "cuda") == "fp32"


def test_explicit_bf16_on_a_cpu_without_bf16_units_warns_once(monkeypatch, caplog):
    monkeypatch.setattr(precision_module, "cpu_has_native_bf16", lambda: False)
    precision_module._warn_emulated_bf16.cache_clear()
    with caplog.at_level("WARNING", logger=precision_module.__name__):
        for _ in range(3):
            assert precision_module.resolve_precision("bf16", torch.device("cpu")) == "bf16"
        assert precision_module.resolve_precision("auto", "cpu") == "fp32"
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "8-10x slower than fp32" in warnings[0]
    precision_module._warn_emulated_bf16.cache_clear()


def test_native_bf16_check_agrees_with_the_cpu_flags():
    # PyTorch's cpuinfo and the kernel's flags must tell the same story (x86-64 Linux only).
    cpuinfo = Path("/proc/cpuinfo")
    if platform.machine() != "x86_64" or not cpuinfo.exists():
        pytest.skip("x86-64 Linux only")
    flags = set(next(line for line in cpuinfo.read_text().splitlines() if line.startswith("flags")).split())
    onednn_capped = os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper() in precision_module.ONEDNN_ISAS_WITHOUT_BF16
    expected = bool(flags & {"avx512_bf16", "amx_bf16"}) and not onednn_capped
    assert precision_module.cpu_has_native_bf16() == expected


def test_auto_is_fp32_when_onednn_is_capped_below_bf16(monkeypatch):
    # ONEDNN_MAX_CPU_ISA=AVX2 makes oneDNN emulate bf16 even on a CPU with the units: auto must see it.
    precision_module.cpu_has_native_bf16.cache_clear()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "avx2")
    try:
        assert not precision_module.cpu_has_native_bf16()
        assert precision_module.resolve_precision("auto", "cpu") == "fp32"
    finally:
        precision_module.cpu_has_native_bf16.cache_clear()


def test_a_killed_run_resumes_to_the_same_weights(tmp_path):
    data = DeviceData.from_container(quadrant_dataset(), torch.device("cpu"))
    fingerprint = {"run": "toy"}
    reference = _toy_model()
    fit(reference, data, RECIPE, seed=0, progress=False)

    checkpoint = tmp_path / "checkpoint.pt"

    def kill_after_epoch_2(row):
        if row["epoch"] == 2:
            raise Killed

    with pytest.raises(Killed):
        fit(_toy_model(), data, RECIPE, seed=0, checkpoint_path=checkpoint, fingerprint=fingerprint,
            on_epoch=kill_after_epoch_2, progress=False)
    assert torch.load(checkpoint, weights_only=True)["history"][-1]["epoch"] == 2
    assert not list(tmp_path.glob("*.tmp"))  # the atomic write left no partial file behind

    resumed_model = _toy_model()  # fresh weights: everything must come from the checkpoint
    resumed = fit(resumed_model, data, RECIPE, seed=0, checkpoint_path=checkpoint, fingerprint=fingerprint,
                  progress=False)
    assert [row["epoch"] for row in resumed.history] == [1, 2, 3, 4]
    for name, tensor in reference.state_dict().items():
        assert torch.equal(tensor, resumed_model.state_dict()[name]), name



def test_a_rerun_with_a_changed_configuration_starts_over(tmp_path, caplog):
    # A killed attempt under one recipe, then a rerun under another: the old checkpoint is discarded,
    # and the weights are exactly those of the new configuration trained from scratch.
    data = DeviceData.from_container(quadrant_dataset(), torch.device("cpu"))
    changed = dataclasses.replace(RECIPE, lr=RECIPE.lr / 2)
    reference = _toy_model()
    fit(reference, data, changed, seed=0, progress=False)

    checkpoint = tmp_path / "checkpoint.pt"

    def kill_after_epoch_2(row):
        if row["epoch"] == 2:
            raise Killed

    with pytest.raises(Killed):
        fit(_toy_model(), data, RECIPE, seed=0, checkpoint_path=checkpoint,
            fingerprint={"recipe": RECIPE.to_dict()}, on_epoch=kill_after_epoch_2, progress=False)
    rerun_model = _toy_model()
    with caplog.at_level("WARNING"):
        rerun = fit(rerun_model, data, changed, seed=0, checkpoint_path=checkpoint,
                    fingerprint={"recipe": changed.to_dict()}, progress=False)
    assert [row["epoch"] for row in rerun.history] == [1, 2, 3, 4]
    assert "earlier configuration (changed: recipe); starting over" in caplog.text
    for name, tensor in reference.state_dict().items():
        assert torch.equal(tensor, rerun_model.state_dict()[name]), name


@pytest.mark.parametrize("name, options", [("SGD", {"lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4}),
                                           ("Adam", {"lr": 1e-2, "weight_decay": 1e-4}), ("LBFGS", {"lr": 0.5})])
def test_eager_optimizers_update_as_torchs_own(name, options):
    import copy

    from poisonlab.training import optim

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 12), torch.nn.ReLU(), torch.nn.Linear(12, 3))
    x, y = torch.randn(32, 6), torch.randint(0, 3, (32,))
    results = []
    for cls in (getattr(torch.optim, name), getattr(optim, name)):
        net = copy.deepcopy(model)
        optimizer = cls(net.parameters(), **options)

        def closure():
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(net(x), y)
            loss.backward()
            return loss

        for _ in range(4):
            optimizer.step(closure)
        optimizer.load_state_dict(optimizer.state_dict())  # a checkpoint's round trip
        optimizer.step(closure)
        results.append((list(net.parameters()), optimizer.state_dict()["param_groups"]))
    (torch_params, torch_groups), (eager_params, eager_groups) = results
    assert all(torch.equal(a, b) for a, b in zip(torch_params, eager_params)) and torch_groups == eager_groups


def test_a_training_job_never_imports_torch_dynamo():
    # torch.optim's own classes import it (~1.8 s, half a small job's start-up); poisonlab's recipes do not.
    job = ("import sys, torch\nfrom poisonlab.training import Recipe\n"
           "net = torch.nn.Linear(4, 2)\nfor name in ('sgd', 'adam', 'adamw'):\n"
           "    optimizer = Recipe(optimizer=name).make_optimizer(net.parameters())\n"
           "    scheduler = Recipe().make_scheduler(optimizer, steps_per_epoch=2)\n"
           "    net(torch.randn(3, 4)).sum().backward(); optimizer.step(); scheduler.step(); optimizer.zero_grad()\n"
           "assert 'torch._dynamo' not in sys.modules, 'torch._dynamo was imported'\n")
    done = subprocess.run([sys.executable, "-c", job], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
