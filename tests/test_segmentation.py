"""robust-seg's library: canvases, loaders, nets, metrics, attacks, robust training through ``fit``, synthesis."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from helpers import Killed

from poisonlab.data import build_dataset
from poisonlab.registry import ConfigError
from poisonlab.segmentation import SEG_ATTACKS, SEG_DATASETS, SEG_MODELS, SEG_PROCEDURES, SYNTHESIS_OPTIMIZERS
from poisonlab.segmentation.data import CLASSES, IGNORE, SegmentationDataset, make_canvases
from poisonlab.segmentation.metrics import confusion, scores, segmentation_metric
from poisonlab.segmentation.models import build_seg_model, load_weights
from poisonlab.segmentation.procedures import MixBatchNorm2d, main_state
from poisonlab.segmentation.robustness import build_attacks, evaluate_robustness, pixel_loss
from poisonlab.segmentation.run import Normalizer, SegRunSpec, device_data, train_segmentation
from poisonlab.segmentation.synthesis import (digit_cells, generate, inpaint, inpainting_tasks, region_quality,
                                              shapeless)
from poisonlab.training import Recipe, build_augmentations, fit

CPU = torch.device("cpu")
NORMALIZE = Normalizer([33.0], [78.0])  # about MNIST's statistics: the exact values do not matter to these tests


@pytest.fixture(scope="module")
def mnist5k():
    return build_dataset("mnist5k")


@pytest.fixture(scope="module")
def canvases(mnist5k):
    return make_canvases(mnist5k, train=96, test=32, seed=0)


@pytest.fixture(scope="module")
def small(mnist5k):
    """Canvases of two cells, few of them: what the training tests can afford on one core."""
    return make_canvases(mnist5k, train=32, test=8, grid=(1, 2), p_digit=0.8, seed=0)


def _tiny(seed: int = 0, procedure: str = "standard", **options):
    torch.manual_seed(seed)
    built = SEG_PROCEDURES.build(procedure, **options)
    return built, built.prepare(build_seg_model("tinyunet", num_classes=len(CLASSES), in_channels=1, **TINY))


TINY = {"width": 4, "depth": 2}


def test_registered_names():
    assert SEG_DATASETS.names() == ["cityscapes", "mnist5k-seg", "voc2012"]
    assert SEG_MODELS.names() == ["deeplabv3-r50", "pspnet50", "tinyunet"]
    assert SEG_PROCEDURES.names() == ["advprop", "sat", "standard"]
    assert SEG_ATTACKS.names() == ["bim", "none", "pgd"]
    assert SYNTHESIS_OPTIMIZERS.names() == ["adam", "pgd-l2"]


# ---------------------------------------------------------------- canvases


def test_canvas_labels_are_a_function_of_the_pixels_and_cells_hold_real_digits(canvases, mnist5k):
    for split, digits in (("train", mnist5k.x_train), ("test", mnist5k.x_test)):
        x, m = getattr(canvases, f"x_{split}")[..., 0], getattr(canvases, f"m_{split}")
        assert x.shape == m.shape == (len(x), 56, 56)
        cells_x = x.reshape(-1, 2, 28, 2, 28).transpose(0, 1, 3, 2, 4).reshape(-1, 28, 28)
        cells_m = m.reshape(-1, 2, 28, 2, 28).transpose(0, 1, 3, 2, 4).reshape(-1, 28, 28)
        own = {hashlib.sha1(d.tobytes()).digest() for d in digits[..., 0]}
        other_digits = mnist5k.x_test if split == "train" else mnist5k.x_train
        other = {hashlib.sha1(d.tobytes()).digest() for d in other_digits[..., 0]}
        for cell_x, cell_m in zip(cells_x, cells_m):
            classes = np.unique(cell_m[cell_m > 0])
            assert len(classes) <= 1  # one digit a cell
            if cell_x.any():
                key = hashlib.sha1(cell_x.tobytes()).digest()
                assert key in own and key not in other  # train digits on train canvases only, and vice versa
                assert np.array_equal(cell_m > 0, cell_x >= 128)  # labels = f(pixels): the stroke is on
            else:
                assert not cell_m.any()
        assert 0.03 < (m > 0).mean() < 0.15  # the design note measured 7.8% foreground


def test_canvases_are_seeded_and_survive_the_container(canvases, mnist5k, tmp_path):
    again = make_canvases(mnist5k, train=96, test=32, seed=0)
    other = make_canvases(mnist5k, train=96, test=32, seed=1)
    assert np.array_equal(again.x_train, canvases.x_train) and np.array_equal(again.m_test, canvases.m_test)
    assert not np.array_equal(other.x_train, canvases.x_train)
    assert np.array_equal(make_canvases(mnist5k, train=10, test=32, seed=0).x_test, canvases.x_test)
    canvases.save(tmp_path / "seg.npz")
    loaded = SegmentationDataset.load(tmp_path / "seg.npz")
    assert np.array_equal(loaded.m_train, canvases.m_train) and loaded.meta == canvases.meta
    assert loaded.y_train.dtype == np.int64 and list(loaded.classes) == list(CLASSES)
    with pytest.raises(ConfigError, match="m_train must be uint8 label maps of shape"):
        SegmentationDataset(canvases.x_train, canvases.y_train, canvases.x_test, canvases.y_test, CLASSES,
                            m_train=canvases.m_train[:, :10], m_test=canvases.m_test)


# ---------------------------------------------------------------- paper-scale loaders


def _voc_tree(root, sizes):
    from PIL import Image

    for folder in ("JPEGImages", "SegmentationClassAug", "ImageSets/Segmentation"):
        (root / folder).mkdir(parents=True)
    for i, (image_size, label_size) in enumerate(sizes):
        Image.new("RGB", image_size, (i * 40, 0, 0)).save(root / "JPEGImages" / f"im{i}.jpg")
        label = np.full(label_size[::-1], 15, np.uint8)
        label[0] = IGNORE
        Image.fromarray(label).save(root / "SegmentationClassAug" / f"im{i}.png")
    for split in ("train_aug", "val"):
        (root / "ImageSets/Segmentation" / f"{split}.txt").write_text("\n".join(f"im{i}" for i in range(len(sizes))))


def test_voc_loader_reads_resizes_and_checks_the_layout(tmp_path):
    _voc_tree(tmp_path / "VOC2012", [((40, 30), (40, 30)), ((30, 40), (30, 40))])
    data = SEG_DATASETS.build("voc2012", path=str(tmp_path), size=24, base_size=32)
    assert data.x_train.shape == (2, 24, 24, 3) and data.m_test.shape == (2, 24, 24)
    assert set(np.unique(data.m_train)) <= {15, IGNORE} and data.y_train.tolist() == [15, 15]
    with pytest.raises(ConfigError, match="split list val2.txt"):
        SEG_DATASETS.build("voc2012", path=str(tmp_path), test_split="val2")
    _voc_tree(tmp_path / "bad", [((40, 30), (20, 30))])
    with pytest.raises(ConfigError, match="im0.jpg is 40×30 but its label im0.png is 20×30"):
        SEG_DATASETS.build("voc2012", path=str(tmp_path / "bad"))


def test_cityscapes_maps_label_ids_to_train_ids(tmp_path):
    from PIL import Image

    for split in ("train", "val"):
        (tmp_path / "leftImg8bit" / split / "aachen").mkdir(parents=True)
        (tmp_path / "gtFine" / split / "aachen").mkdir(parents=True)
        Image.new("RGB", (2048, 1024)).save(tmp_path / "leftImg8bit" / split / "aachen" / "a_0_leftImg8bit.png")
        ids = np.zeros((1024, 2048), np.uint8)
        ids[:512], ids[512:] = 7, 26  # road → 0, car → 13; the rest (id 0, unlabeled) would be 255
        Image.fromarray(ids).save(tmp_path / "gtFine" / split / "aachen" / "a_0_gtFine_labelIds.png")
    data = SEG_DATASETS.build("cityscapes", path=str(tmp_path), size=32, base_size=32)
    assert set(np.unique(data.m_train)) == {0, 13}
    with pytest.raises(ConfigError, match="leftImg8bit/test"):
        SEG_DATASETS.build("cityscapes", path=str(tmp_path), test_split="test")


# ---------------------------------------------------------------- nets and checkpoints


def test_paper_nets_give_full_resolution_logits_and_load_a_ddc_at_style_checkpoint(tmp_path):
    torch.manual_seed(0)
    psp = build_seg_model("pspnet50", num_classes=21, in_channels=3).eval()
    with torch.no_grad():
        assert psp(torch.rand(1, 3, 33, 41)).shape == (1, 21, 33, 41)
    # hszhao's train.py saves DataParallel names and the auxiliary head.
    state = {f"module.{k}": v + 1 if v.is_floating_point() else v for k, v in psp.state_dict().items()}
    state["module.aux.4.weight"] = torch.zeros(21, 256, 1, 1)
    torch.save({"epoch": 50, "state_dict": state}, tmp_path / "train_epoch_50.pth")
    loaded = load_weights(build_seg_model("pspnet50", num_classes=21, in_channels=3), tmp_path / "train_epoch_50.pth",
                          "pspnet50")
    assert torch.equal(loaded.layer0[0].weight, psp.layer0[0].weight + 1)
    with pytest.raises(ConfigError, match="does not fit 'pspnet50'.*of another shape"):
        load_weights(build_seg_model("pspnet50", num_classes=19, in_channels=3), tmp_path / "train_epoch_50.pth",
                     "pspnet50")
    deeplab = build_seg_model("deeplabv3-r50", num_classes=21, in_channels=3).eval()
    with torch.no_grad():
        assert deeplab(torch.rand(1, 3, 32, 32)).shape == (1, 21, 32, 32)


# ---------------------------------------------------------------- metrics


def test_miou_and_pixel_accuracy_match_a_hand_computation():
    labels = torch.tensor([[0, 0, 1, 1], [2, 2, 2, IGNORE]])
    predicted = torch.tensor([[0, 1, 1, 1], [2, 2, 0, 1]])
    # IoU = I / (labelled + predicted − I): class 0 1 / (2 + 2 − 1), class 1 2 / (2 + 3 − 2), class 2 2 / (3 + 2 − 2).
    result = scores(confusion(predicted, labels, 3))
    assert result["miou"] == pytest.approx(100 * (1 / 3 + 2 / 3 + 2 / 3) / 3)
    assert result["pixel_acc"] == pytest.approx(100 * 5 / 7)  # the ignored pixel counts nowhere
    from torchmetrics.functional.classification import multiclass_jaccard_index

    reference = multiclass_jaccard_index(predicted.flatten(), labels.flatten(), 3, ignore_index=IGNORE)
    assert result["miou"] == pytest.approx(100 * reference.item())
    # A class absent from labels and predictions is left out of the mean, not averaged in as 0.
    assert scores(confusion(predicted, labels, 4))["miou"] == pytest.approx(result["miou"])


def test_region_quality_scores_each_box_as_torchmetrics_does():
    """PSNR and SSIM of the masks' bounding boxes only: pixels outside a box change nothing, and inside it the
    numbers are torchmetrics' (kornia computes them, for its import time)."""
    from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

    generator = torch.Generator().manual_seed(0)
    original = torch.rand(2, 1, 32, 32, generator=generator)
    result = (original + 0.2 * torch.randn(2, 1, 32, 32, generator=generator)).clamp(0, 1)
    masks = torch.zeros(2, 1, 32, 32, dtype=torch.bool)
    masks[0, :, 2:16, 3:19] = True
    masks[1, :, 10:30, 12:25] = True
    quality = region_quality(result, original, masks)
    outside = result.where(masks, torch.rand(2, 1, 32, 32, generator=generator))
    assert region_quality(outside, original, masks) == quality
    boxes = [(slice(2, 16), slice(3, 19)), (slice(10, 30), slice(12, 25))]
    crops = [(result[i, :, rows, cols][None], original[i, :, rows, cols][None]) for i, (rows, cols) in enumerate(boxes)]
    assert quality["psnr"] == pytest.approx(np.mean([peak_signal_noise_ratio(a, b, data_range=1.0) for a, b in crops]),
                                            rel=1e-5)
    assert quality["ssim"] == pytest.approx(
        np.mean([structural_similarity_index_measure(a, b, data_range=1.0) for a, b in crops]), rel=1e-5)


def test_crop_and_flip_move_label_maps_with_their_images():
    x = torch.arange(64.0).view(1, 1, 8, 8).repeat(4, 1, 1, 1)  # each pixel's value names where it came from
    maps = (torch.arange(64).view(8, 8) % 3).expand(4, 8, 8)
    targets = torch.nn.functional.one_hot(maps, 3).movedim(-1, 1).float()
    for spec in ({"crop": {"padding": 2}}, {"flip": {"p": 1.0}}):
        (augment,) = build_augmentations(spec)
        out_x, out_t = augment(x, targets, torch.Generator().manual_seed(3))
        labelled = out_t.sum(1) > 0  # the crop's shifted-in border has no label
        assert torch.equal(out_t.argmax(1)[labelled], out_x[:, 0].long()[labelled] % 3), spec
        assert not torch.equal(out_x, x)
        assert labelled.all() == ("flip" in spec)


# ---------------------------------------------------------------- attacks


def test_attacks_raise_the_loss_and_stay_in_budget(canvases):
    _, model = _tiny()
    data = device_data(canvases, CPU)
    x01, maps = data.x_test[:8].float() / 255, data.y_test[:8]
    model.eval()
    clean_loss = pixel_loss(model(NORMALIZE(x01 * 255)), maps).sum()
    for name, attack in build_attacks({"bim-4": {"attack": "bim", "steps": 4},
                                       "pgd-5": {"attack": "pgd", "steps": 5, "restarts": 2}},
                                      epsilon=0.1, step_size=0.03).items():
        adversarial = attack(model, x01, maps, NORMALIZE, torch.Generator().manual_seed(0))
        assert (adversarial - x01).abs().max() <= 0.1 + 1e-6, name
        assert adversarial.min() >= 0 and adversarial.max() <= 1
        assert pixel_loss(model(NORMALIZE(adversarial * 255)), maps).sum() > clean_loss, name
    results, examples = evaluate_robustness(model, data.x_test[:8], maps, NORMALIZE, num_classes=11, keep=2,
                                            attacks=build_attacks({"clean": {"attack": "none"}, "bim-2": {
                                                "attack": "bim", "steps": 2}}, epsilon=0.1, step_size=0.05))
    assert results["bim-2"]["pixel_acc"] <= results["clean"]["pixel_acc"]
    assert examples["bim-2"]["predictions"].shape == (2, 56, 56)


# ---------------------------------------------------------------- AdvProp's batch norm


def test_advprop_sends_only_adversarial_inputs_through_the_auxiliary_batch_norm(canvases):
    procedure, model = _tiny(procedure="advprop", epsilon=0.1, steps=2)
    mixes = [m for m in model.modules() if isinstance(m, MixBatchNorm2d)]
    assert len(mixes) == 6  # two double convs down, one up
    seen = {"main": [], "aux": []}
    first = mixes[0]
    first.aux.register_forward_hook(lambda m, inputs, out: seen["aux"].append(inputs[0].clone()))
    main_forward = torch.nn.BatchNorm2d.forward

    def spy(self, x):
        if self is first:
            seen["main"].append(x.clone())
        return main_forward(self, x)

    data = device_data(canvases, CPU)
    x, targets = data.x_train[:8], data.one_hot(data.y_train[:8])
    model.train()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.nn.BatchNorm2d, "forward", spy)
        procedure.defense.objective(model, x, targets, NORMALIZE, torch.Generator().manual_seed(0))
    # Crafting (2 steps) and training feed the auxiliary statistics the adversarial half only; the main ones
    # see the clean half, once: the first batch norm's input there is the first conv of the clean images.
    assert [len(t) for t in seen["aux"]] == [4, 4, 4] and [len(t) for t in seen["main"]] == [4]
    with torch.no_grad():
        assert torch.allclose(seen["main"][0], model.down[0][0](NORMALIZE(x[:4].float())), atol=1e-5)
    model.eval()
    seen["aux"].clear()
    with torch.no_grad():
        model(NORMALIZE(x.float()))
    assert seen["aux"] == []  # inference: main statistics only
    assert not any(".aux." in key for key in main_state(model))
    build_seg_model("tinyunet", num_classes=11, in_channels=1, **TINY).load_state_dict(main_state(model))


# ---------------------------------------------------------------- synthesis


def test_inpainting_moves_only_the_hole_and_generation_lowers_the_loss(canvases):
    _, model = _tiny()
    data = device_data(canvases, CPU)
    index, masks, cells = inpainting_tasks(data.y_test, 4, hole=12)
    assert masks.sum((1, 2, 3)).tolist() == [144] * 4 and torch.equal(cells[:, 3], cells[:, 3].clamp(0, 9))
    original, target = data.x_test[index].float() / 255, data.y_test[index]
    model.eval()
    for optimizer, lr in (("adam", 0.05), ("pgd-l2", 0.5)):
        result = inpaint(model, original, target, masks, NORMALIZE, optimizer=optimizer, steps=5, lr=lr)
        assert torch.equal(result[~masks.expand_as(result)], original[~masks.expand_as(original)]), optimizer
        assert not torch.equal(result[masks], original[masks]) and 0 <= result.min() and result.max() <= 1
    target = data.y_test[:4]
    generator = torch.Generator().manual_seed(0)
    start = torch.rand(4, 1, 56, 56, generator=torch.Generator().manual_seed(0))
    made = generate(model, target, NORMALIZE, channels=1, generator=generator, steps=10, lr=0.05)
    with torch.no_grad():
        assert pixel_loss(model(NORMALIZE(made * 255)), target).sum() < pixel_loss(
            model(NORMALIZE(start * 255)), target).sum()
    assert len(digit_cells(target)) == int((target.reshape(4, 2, 28, 2, 28).amax((2, 4)) > 0).sum())


def test_shapeless_targets_keep_each_digit_and_its_box_but_not_its_stroke(canvases):
    maps = torch.from_numpy(canvases.m_test.astype(np.int64))
    boxes = shapeless(maps)
    assert torch.equal(digit_cells(boxes), digit_cells(maps))  # the same digits in the same cells
    assert torch.equal(boxes[maps > 0], maps[maps > 0])  # every stroke pixel keeps its class…
    grown = (boxes > 0) & (maps == 0)
    assert grown.any()  # …and the box around it is filled: the stroke's shape is no longer in the target
    cells = boxes.reshape(len(maps), 2, 28, 2, 28)
    for i, r, c, digit in digit_cells(maps).tolist():
        cell = cells[i, r, :, c]
        rows, cols = torch.nonzero(cell, as_tuple=True)
        assert (cell[rows.min():rows.max() + 1, cols.min():cols.max() + 1] == digit + 1).all()


# ---------------------------------------------------------------- training through fit


RECIPE = Recipe.from_dict({"epochs": 2, "batch_size": 16, "optimizer": "adam", "lr": 0.01, "weight_decay": 0,
                           "schedule": "cosine", "precision": "fp32", "augment": {"crop": {"padding": 2}}})


@pytest.mark.parametrize("procedure", ["standard", "sat"])
def test_training_runs_through_fit_and_resumes_after_a_kill(small, procedure, tmp_path):
    data = device_data(small, CPU)
    built, model = _tiny(procedure=procedure, **({"epsilon": 0.1, "steps": 1} if procedure == "sat" else {}))
    whole = fit(model, data, RECIPE, seed=0, progress=False, defense=built.defense, metric=segmentation_metric)
    assert [row["epoch"] for row in whole.history] == [1, 2] and "test_miou" in whole.history[-1]
    assert whole.history[-1]["train_loss"] < whole.history[0]["train_loss"]

    def kill(row):
        if row["epoch"] == 1:
            raise Killed

    built, killed = _tiny(procedure=procedure, **({"epsilon": 0.1, "steps": 1} if procedure == "sat" else {}))
    with pytest.raises(Killed):
        fit(killed, data, RECIPE, seed=0, progress=False, defense=built.defense, metric=segmentation_metric,
            checkpoint_path=tmp_path / "checkpoint.pt", on_epoch=kill)
    built, resumed = _tiny(procedure=procedure, **({"epsilon": 0.1, "steps": 1} if procedure == "sat" else {}))
    again = fit(resumed, data, RECIPE, seed=0, progress=False, defense=built.defense, metric=segmentation_metric,
                checkpoint_path=tmp_path / "checkpoint.pt")
    assert again.history[-1]["test_miou"] == whole.history[-1]["test_miou"]
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), resumed.state_dict().values()))


def test_jobs_train_evaluate_synthesise_and_draw(small, mnist5k, tmp_path, monkeypatch):
    """The DAG's jobs end to end on a tiny scale: two runs (AdvProp, and the standard transfer judge), robustness,
    inpainting and generation judged by a classifier run, and the three figures."""
    from poisonlab.models import build_model
    from poisonlab.segmentation import figures
    from poisonlab.segmentation.run import robustness_run, synthesis_run

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    small.save(tmp_path / "seg.npz")
    recipe = Recipe.from_dict({**RECIPE.to_dict(), "epochs": 1})
    for procedure, seed in (("advprop", 0), ("standard", 1)):
        spec = SegRunSpec(dataset="mnist5k-seg", procedure=procedure, arch="tinyunet", recipe="tiny", seed=seed)
        record = train_segmentation(spec, recipe, tmp_path / "seg.npz", tmp_path / procedure,
                                    procedure_options={"epsilon": 0.1, "steps": 1} if procedure == "advprop" else {},
                                    model_options=TINY, device="cpu", progress=False)
        assert sorted(p.name for p in (tmp_path / procedure).iterdir()) == ["metrics.json", "model.pt"]
        assert record["final_test_miou"] == record["history"][-1]["test_miou"]
    weights = torch.load(tmp_path / "advprop" / "model.pt", weights_only=True)
    build_seg_model("tinyunet", num_classes=11, in_channels=1, **TINY).load_state_dict(weights)  # main BNs only

    torch.manual_seed(0)  # the judge: any classifier run's weights, its record (the arch) and its training container
    (tmp_path / "judge").mkdir()
    torch.save(build_model("tinycnn", num_classes=10, in_channels=1, image_size=28).state_dict(), tmp_path / "judge/model.pt")
    (tmp_path / "judge/metrics.json").write_text(json.dumps({"arch": "tinycnn"}))
    mnist5k.save(tmp_path / "mnist5k.npz")
    robust = robustness_run(tmp_path / "advprop", tmp_path / "seg.npz", tmp_path / "robustness.json",
                            tmp_path / "examples.npz", count=6, epsilon=0.1, step_size=0.05, keep=2,
                            attacks={"clean": {"attack": "none"}, "bim-2": {"attack": "bim", "steps": 2},
                                     "pgd-3": {"attack": "pgd", "steps": 3, "restarts": 2}})
    assert set(robust["results"]) == {"clean", "bim-2", "pgd-3"} and robust["count"] == 6
    judges = {"classifier_path": tmp_path / "judge/model.pt", "classifier_data_path": tmp_path / "mnist5k.npz",
              "transfer_run_dir": tmp_path / "standard"}
    for task in ("inpaint", "generate"):
        out = synthesis_run(tmp_path / "advprop", tmp_path / "seg.npz", tmp_path / f"{task}.json",
                            tmp_path / f"{task}.npz", task=task, steps=3, count=3, **judges)
        assert out["target"] == "box"
        assert 0 <= out["metrics"]["recognisability"] <= 100 and 0 <= out["metrics"]["transfer_miou"] <= 100
    assert {"psnr", "ssim", "recognisability_original"} <= set(json.loads((tmp_path / "inpaint.json").read_text())
                                                               ["metrics"])
    drawn = [figures.segmentation_examples(examples={"advprop": tmp_path / "examples.npz"}, num_classes=11,
                                           caption="test", attack="bim-2", count=2),
             figures.inpainting_examples(arrays={"advprop": tmp_path / "inpaint.npz"}, caption="test", count=2),
             figures.generation_examples(arrays={"advprop": tmp_path / "generate.npz"}, num_classes=11,
                                         caption="test", count=2)]
    assert [len(f.axes) for f in drawn] == [2 * 4, 2 * 3, 2 * 2]
    for figure in drawn:
        figure.savefig(tmp_path / "figure.png")
