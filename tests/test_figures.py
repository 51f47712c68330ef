"""Figures from tiny fake run outputs: what each one draws, and that it is saved as valid pdf and png."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.colors import to_hex
from matplotlib.text import Text

from poisonlab.data.container import ImageDataset
from poisonlab.defenses.sharpening import rsk, rsk_ff
from poisonlab.registry import ConfigError
from poisonlab.reporting import style
from poisonlab.reporting.figures import FIGURES, min_max, save_figure

CLASSES = [f"class{k}" for k in range(10)]


def write_json(path: Path, record: dict) -> str:
    path.write_text(json.dumps(record))
    return str(path)


def assert_saves(fig, folder: Path) -> None:
    """``save_figure`` leaves a pdf and a png with their formats' headers, and no temporary file."""
    save_figure(fig, pdf=folder / "out" / "fig.pdf", png=folder / "out" / "fig.png")
    assert (folder / "out" / "fig.pdf").read_bytes().startswith(b"%PDF-")
    assert (folder / "out" / "fig.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert sorted(path.name for path in (folder / "out").iterdir()) == ["fig.pdf", "fig.png"]


def caption(fig) -> str:
    return fig.get_supxlabel()


def drawn_lines(ax) -> list:
    """Lines with data: seaborn also adds empty ones to the axes as legend entries."""
    return [line for line in ax.lines if len(line.get_xdata())]


@pytest.fixture
def containers(tmp_path) -> tuple[str, str, np.ndarray]:
    """A clean container (10 classes × 2 images, 32×32×3, the second image of each class first) and a
    poisoned copy with a known perturbation per class, small enough never to be clipped."""
    rng = np.random.default_rng(0)
    y_train = np.array(list(range(9, -1, -1)) + list(range(10)))  # first of class k is image 9 − k
    x_train = rng.integers(20, 236, size=(20, 32, 32, 3), dtype=np.uint8)
    deltas = rng.integers(-8, 9, size=(10, 32, 32, 3))
    x_test = rng.integers(0, 256, size=(4, 32, 32, 3), dtype=np.uint8)
    clean = ImageDataset(x_train, y_train, x_test, np.arange(4), CLASSES, meta={"dataset": "toy"})
    poisoned = ImageDataset((x_train + deltas[y_train]).astype(np.uint8), y_train, x_test, np.arange(4), CLASSES,
                            meta={"dataset": "toy", "poison": {"name": "cuda", "seed": 3}})
    clean.save(tmp_path / "clean.npz")
    poisoned.save(tmp_path / "poisoned.npz")
    return str(tmp_path / "clean.npz"), str(tmp_path / "poisoned.npz"), deltas


def test_registered_figures():
    # The papers' packages (attribution, ...) register theirs when imported, so other tests may add names.
    assert {"accuracy-over-epochs", "loss-speed-vs-peak", "dfr-over-epochs", "sharpening-examples",
            "perturbations-per-class"} <= set(FIGURES.names())


def test_unknown_figure_names_the_known_ones():
    with pytest.raises(ConfigError, match="unknown figure 'nope'.*accuracy-over-epochs.*sharpening-examples"):
        FIGURES.get("nope")


def test_unknown_option_is_rejected(tmp_path):
    with pytest.raises(ConfigError, match="unknown option.*colour"):
        FIGURES.build("accuracy-over-epochs", runs={}, colour="red")


def test_missing_input_names_the_path(tmp_path):
    missing = tmp_path / "gone" / "metrics.json"
    with pytest.raises(ConfigError, match=str(missing)):
        FIGURES.build("accuracy-over-epochs", runs={"a": [str(missing)]}, scale="embedded")
    with pytest.raises(ConfigError, match="clean.npz"):
        FIGURES.build("perturbations-per-class", clean=tmp_path / "clean.npz", poisoned=tmp_path / "poisoned.npz",
                      scale="embedded")


def run_folder(tmp_path: Path, poison: str, seed: int = 0, accuracies: list[float] = (30.0, 60.0, 80.0),
               dataset: str = "mnist5k") -> Path:
    """A finished run's folder: metrics.json with its names and a history of ``accuracies``."""
    folder = tmp_path / "runs" / dataset / poison / f"seed{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    history = [{"epoch": e, "train_loss": 1.0, "train_acc": 50.0, "test_acc": acc, "seconds": 1.0}
               for e, acc in enumerate(accuracies, start=1)]
    write_json(folder / "metrics.json", {"dataset": dataset, "poison": poison, "defense": "none", "arch": "smallcnn",
                                         "recipe": "tiny", "seed": seed, "epochs": len(accuracies),
                                         "history": history})
    return folder


def line_colours(ax) -> dict[str, str]:
    return {line.get_label(): to_hex(line.get_color()) for line in drawn_lines(ax)}


def test_accuracy_over_epochs_is_a_mean_line_per_label(tmp_path):
    runs = {"clean": [str(run_folder(tmp_path, "clean", 0, [30, 60, 80]) / "metrics.json"),
                      str(run_folder(tmp_path, "clean", 1, [40, 70, 90]) / "metrics.json")],
            "cuda": [str(run_folder(tmp_path, "cuda", 0, [10, 12, 15]) / "metrics.json")]}
    fig = FIGURES.build("accuracy-over-epochs", runs=runs, scale="embedded")
    ax = fig.axes[0]
    lines = drawn_lines(ax)
    assert len(fig.axes) == 1 and len(lines) == 2
    np.testing.assert_allclose(lines[0].get_xdata(), [1, 2, 3])
    np.testing.assert_allclose(lines[0].get_ydata(), [35, 65, 85])  # mean over the two seeds
    np.testing.assert_allclose(lines[1].get_ydata(), [10, 12, 15])
    (clean_band,) = ax.collections  # one seed of cuda: no band
    lowest, highest = clean_band.get_paths()[0].vertices[:, 1].min(), clean_band.get_paths()[0].vertices[:, 1].max()
    assert (lowest, highest) == pytest.approx((35 - np.std([30, 40], ddof=1), 85 + np.std([80, 90], ddof=1)))
    assert ax.get_ylabel() == "clean test accuracy (%)"
    assert sorted(text.get_text() for text in ax.texts) == ["clean", "cuda"]  # each line labelled at its end
    assert line_colours(ax) == {"clean": style.style_of("poison", "clean").colour,
                                "cuda": style.style_of("poison", "cuda").colour}
    assert caption(fig) == "mnist5k (embedded scale) · model smallcnn · 3 epochs, recipe tiny · 2 seeds (0, 1); " \
                           "mean ± sd over seeds"
    assert_saves(fig, tmp_path)


def test_more_than_eight_lines_are_split_into_a_panel_a_family_with_clean_in_each(tmp_path):
    poisons = ["clean", "em", "em-class", "rem", "tap", "tap-untargeted", "regions-4", "regions-16", "random-noise",
               "lsp", "ops", "ar", "ar-linf", "cuda"]
    runs = {poison.upper(): [str(run_folder(tmp_path, poison, 0, [50.0 + k] * 3) / "metrics.json")]
            for k, poison in enumerate(poisons)}
    fig = FIGURES.build("accuracy-over-epochs", runs=runs, scale="embedded")
    panels = {ax.get_title(): [line.get_label() for line in drawn_lines(ax)] for ax in fig.axes}
    assert panels == {
        "error-minimizing": ["CLEAN", "EM", "EM-CLASS", "REM"],
        "error-maximizing": ["CLEAN", "TAP", "TAP-UNTARGETED"],
        "synthetic noise": ["CLEAN", "REGIONS-4", "REGIONS-16", "RANDOM-NOISE", "LSP", "OPS"],
        "autoregressive and convolution": ["CLEAN", "AR", "AR-LINF", "CUDA"],
    }
    assert len({line.get_color() for ax in fig.axes for line in drawn_lines(ax) if line.get_label() == "CLEAN"}) == 1
    assert_saves(fig, tmp_path)
    fig.draw_without_rendering()
    for ax in fig.axes:  # end labels of close lines (here 1 point apart) are moved apart, not stacked
        boxes = [text.get_window_extent() for text in ax.texts]
        assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:]), ax.get_title()


def peak_run(tmp_path: Path, poison: str, seed: int, loss: float, acc: float) -> str:
    folder = run_folder(tmp_path, poison, seed)
    return write_json(folder / "peak.json", {"peak_test_acc": acc, "peak_epoch": 3, "mean_train_loss": loss,
                                             "epochs_to_loss_threshold": None, "mean_train_acc": 50.0})


def test_loss_speed_vs_peak_places_a_labelled_mean_point_per_label(tmp_path):
    runs = {"clean": [peak_run(tmp_path, "clean", 0, 1.0, 90.0), peak_run(tmp_path, "clean", 1, 1.2, 80.0)],
            "ar": [peak_run(tmp_path, "ar", 0, 0.1, 20.0)]}
    fig = FIGURES.build("loss-speed-vs-peak", runs=runs, scale="embedded")
    ax = fig.axes[0]
    points = {line.get_marker(): (line.get_xdata()[0], line.get_ydata()[0], to_hex(line.get_color()))
              for line in ax.lines if line.get_marker() in style.MARKERS}  # not the error bars' caps
    clean, ar = style.style_of("poison", "clean"), style.style_of("poison", "ar")
    assert points == {clean.marker: (pytest.approx(1.1), pytest.approx(85.0), clean.colour),
                      ar.marker: (pytest.approx(0.1), pytest.approx(20.0), ar.colour)}
    assert {text.get_text(): text.xy for text in ax.texts} == {"clean": pytest.approx((1.1, 85.0)),
                                                               "ar": pytest.approx((0.1, 20.0))}
    assert ax.get_xlabel().startswith("mean training loss over epochs")
    assert caption(fig).startswith("mnist5k (embedded scale) · model smallcnn · 3 epochs")
    assert_saves(fig, tmp_path)


def test_scatter_labels_of_close_points_do_not_overlap(tmp_path):
    # The learned-faster case: OPS on top of Clean, the error-min and error-max poisons close by.
    close = {"Clean": ("clean", 0.20, 97.4), "OPS": ("ops", 0.20, 97.2), "Error-Min (class-wise)": ("em-class", 0.21, 97.0),
             "Error-Max": ("tap", 0.22, 97.1), "Error-Min": ("em", 0.21, 96.8), "CUDA": ("cuda", 0.23, 97.3),
             "AR": ("ar", 0.9, 20.0)}
    runs = {label: [peak_run(tmp_path, poison, 0, loss, acc)] for label, (poison, loss, acc) in close.items()}
    fig = FIGURES.build("loss-speed-vs-peak", runs=runs, scale="embedded")
    assert_saves(fig, tmp_path)
    fig.draw_without_rendering()  # labels are checked on the saved layout, at the figure's own dpi
    ax = fig.axes[0]
    boxes = [Text.get_window_extent(text) for text in ax.texts]  # the words, not their leader lines
    assert len(boxes) == len(close)
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    inside = ax.get_window_extent()
    assert all(inside.contains(box.x0, box.y0) and inside.contains(box.x1, box.y1) for box in boxes)


def test_loss_speed_vs_peak_names_a_missing_metric(tmp_path):
    folder = run_folder(tmp_path, "clean")
    path = write_json(folder / "peak.json", {"peak_test_acc": 50.0})
    with pytest.raises(ConfigError, match="peak.json has no metric 'mean_train_loss'"):
        FIGURES.build("loss-speed-vs-peak", runs={"a": [path]}, scale="embedded")


def dfr_run(tmp_path: Path, poison: str) -> str:
    epochs = [{"epoch": e, "test_acc_before": 10.0 * e, "test_acc_after": 50.0 + e} for e in (10, 20, 30)]
    return write_json(run_folder(tmp_path, poison) / "dfr.json", {"train_images": 100, "epochs": epochs,
                                                                  "final": epochs[-1], "best_after": epochs[-1]})


def test_dfr_over_epochs_draws_a_panel_a_run_after_solid_and_before_dashed(tmp_path):
    runs = {"Clean": [dfr_run(tmp_path, "clean")], "CUDA": [dfr_run(tmp_path, "cuda")]}
    fig = FIGURES.build("dfr-over-epochs", runs=runs, scale="embedded")
    assert [ax.get_title() for ax in fig.axes] == ["Clean", "CUDA"]
    after, before = drawn_lines(fig.axes[1])
    np.testing.assert_allclose(after.get_xdata(), [10, 20, 30])
    np.testing.assert_allclose(after.get_ydata(), [60, 70, 80])
    np.testing.assert_allclose(before.get_ydata(), [100, 200, 300])
    assert (after.get_linestyle(), before.get_linestyle()) == ("-", "--")
    assert to_hex(after.get_color()) == to_hex(before.get_color()) == style.style_of("poison", "cuda").colour
    assert [text.get_text() for text in fig.legends[0].get_texts()][1] == "before DFR"
    assert_saves(fig, tmp_path)


def test_a_poison_has_the_same_colour_and_marker_in_every_figure(tmp_path):
    folder = run_folder(tmp_path, "cuda")
    peak = peak_run(tmp_path, "cuda", 0, 0.5, 50.0)
    dfr = dfr_run(tmp_path, "cuda")
    clean = run_folder(tmp_path, "clean")
    looks = set()
    for figure, path in (("accuracy-over-epochs", folder / "metrics.json"), ("loss-speed-vs-peak", peak),
                         ("dfr-over-epochs", dfr)):
        # labelled differently, listed in another order, beside another run: still CUDA's style
        runs = {"clean": [str(clean / "metrics.json") if figure == "accuracy-over-epochs" else
                          peak_run(tmp_path, "clean", 0, 0.1, 90.0) if figure == "loss-speed-vs-peak" else
                          dfr_run(tmp_path, "clean")], f"CUDA in {figure}": [str(path)]}
        fig = FIGURES.build(figure, runs=dict(reversed(runs.items())), scale="embedded")
        looks |= {(to_hex(line.get_color()), line.get_marker()) for ax in fig.axes for line in drawn_lines(ax)
                  if "CUDA" in (line.get_label() + ax.get_title())}
    cuda = style.style_of("poison", "cuda")
    assert looks == {(cuda.colour, cuda.marker)}


def test_perturbations_per_class_shows_each_class_perturbation(containers, tmp_path):
    clean, poisoned, deltas = containers
    fig = FIGURES.build("perturbations-per-class", clean=clean, poisoned=poisoned, scale="embedded", classes_shown=4)
    axes = np.array(fig.axes).reshape(2, 4)
    assert [ax.get_title() for ax in axes[0]] == CLASSES[:4]
    poisoned_images = ImageDataset.load(poisoned).x_train
    for k in range(4):
        np.testing.assert_allclose(axes[0, k].images[0].get_array(), min_max(deltas[k].astype(np.float32)),
                                   atol=1e-6)
        np.testing.assert_allclose(axes[1, k].images[0].get_array(), poisoned_images[9 - k] / 255, atol=1e-6)
    assert_saves(fig, tmp_path)


def test_sharpening_examples_rows_are_the_defenses_own_transforms(containers, tmp_path):
    clean, poisoned, _ = containers
    fig = FIGURES.build("sharpening-examples", clean=clean, poisoned=poisoned, scale="embedded", images_per_row=3,
                        seed=5)
    axes = np.array(fig.axes).reshape(4, 3)
    assert [ax.get_ylabel() for ax in axes[:, 0]] == ["clean", "CUDA", "CUDA + RSK", "CUDA + RSK + FF"]
    assert [ax.get_title() for ax in axes[0]] == CLASSES[:3]
    chosen = [9, 8, 7]  # the first training image of classes 0, 1, 2
    cuda = torch.from_numpy(ImageDataset.load(poisoned).x_train[chosen].astype(np.float32)).permute(0, 3, 1, 2)
    for row, defense in ((2, rsk()), (3, rsk_ff())):
        expected, _ = defense.transforms[0](cuda, torch.tensor([0, 1, 2]), torch.Generator().manual_seed(5))
        expected = np.clip(expected.permute(0, 2, 3, 1).numpy() / 255, 0, 1)
        for column in range(3):
            np.testing.assert_allclose(axes[row, column].images[0].get_array(), expected[column], atol=1e-6)
    np.testing.assert_allclose(axes[0, 0].images[0].get_array(), ImageDataset.load(clean).x_train[9] / 255,
                               atol=1e-6)
    assert_saves(fig, tmp_path)


def test_sharpening_examples_refuses_a_poisoned_set_of_another_size(containers, tmp_path):
    clean, poisoned, _ = containers
    shorter = ImageDataset.load(poisoned)
    shorter.x_train, shorter.y_train = shorter.x_train[:10], shorter.y_train[:10]
    shorter.save(tmp_path / "shorter.npz")
    with pytest.raises(ConfigError, match="shorter.npz does not match"):
        FIGURES.build("sharpening-examples", clean=clean, poisoned=tmp_path / "shorter.npz", scale="embedded")


def test_grayscale_images_are_shown_in_gray(tmp_path):
    rng = np.random.default_rng(1)
    x_train = rng.integers(0, 256, size=(2, 8, 8, 1), dtype=np.uint8)
    gray = ImageDataset(x_train, [0, 1], x_train, [0, 1], ["a", "b"])
    gray.save(tmp_path / "gray.npz")
    fig = FIGURES.build("perturbations-per-class", clean=tmp_path / "gray.npz", poisoned=tmp_path / "gray.npz",
                        scale="embedded")
    image = fig.axes[2].images[0]  # the poisoned row
    assert image.get_array().shape == (8, 8)
    assert image.get_cmap().name == "gray"
    assert_saves(fig, tmp_path)


@pytest.mark.parametrize("figure,rows", [("sharpening-examples", 4), ("perturbations-per-class", 2)])
def test_example_grids_show_every_class_and_say_what_they_show(containers, figure, rows):
    clean, poisoned, _ = containers
    fig = FIGURES.build(figure, clean=clean, poisoned=poisoned, scale="cifar10-small")
    assert len(fig.axes) == rows * len(CLASSES)
    assert [ax.get_title() for ax in fig.axes[:len(CLASSES)]] == CLASSES
    assert caption(fig).startswith("toy (cifar10-small scale) · poison cuda (seed 3) · first training image of each "
                                   "class")
