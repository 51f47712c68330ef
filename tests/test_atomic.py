"""What the pipeline writes, a lab can share and version: the umask's permissions, the same bytes for the same data."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from poisonlab.atomic import atomic_path, save_npz, torch_save, write_json
from poisonlab.data.container import ImageDataset
from poisonlab.reporting.figures import save_figure
from poisonlab.reporting.tables import write_table


@pytest.fixture(params=[0o022, 0o002], ids=["umask022", "umask002"])
def umask(request) -> int:
    previous = os.umask(request.param)
    yield request.param
    os.umask(previous)


def tiny_dataset() -> ImageDataset:
    rng = np.random.default_rng(0)
    return ImageDataset(rng.integers(0, 256, (6, 4, 4, 1), dtype=np.uint8), np.arange(6) % 3,
                        rng.integers(0, 256, (3, 4, 4, 1), dtype=np.uint8), np.arange(3), ["a", "b", "c"],
                        meta={"source_checksum": "x"})


def write_everything(folder: Path) -> list[Path]:
    """One output of every kind the pipeline writes, each through its own writer."""
    from matplotlib.figure import Figure

    tiny_dataset().save(folder / "data" / "clean.npz")
    write_json(folder / "results" / "metrics.json", {"final_test_acc": 90.0})
    torch_save({"weight": torch.ones(3)}, folder / "results" / "model.pt")
    table = pl.DataFrame({"table": ["t"], "row": ["r"], "column": ["c"], "dataset": ["d"], "scale": ["s"],
                          "metric": ["m"], "ours": [1.0], "ours_std": [None], "n_seeds": [1], "reported": [None]})
    tables = folder / "paper" / "tables"
    write_table(table, csv=tables / "t.csv", md=tables / "t.md", tex=tables / "t.tex")
    figure = Figure()
    figure.subplots().plot([0, 1], [1, 0])
    save_figure(figure, pdf=folder / "paper" / "figures" / "f.pdf", png=folder / "paper" / "figures" / "f.png")
    return sorted(path for path in folder.rglob("*") if path.is_file())


def test_every_writer_gives_the_umasks_permissions(tmp_path, umask):
    written = write_everything(tmp_path)
    assert [path.name for path in written] == ["clean.npz", "f.pdf", "f.png", "t.csv", "t.md", "t.tex",
                                               "metrics.json", "model.pt"]
    modes = {path.name: oct(stat.S_IMODE(path.stat().st_mode)) for path in written}
    assert modes == {path.name: oct(0o666 & ~umask) for path in written}  # 0o644 under 022, 0o664 under 002
    folders = {oct(stat.S_IMODE(path.parent.stat().st_mode)) for path in written}
    assert folders == {oct(0o777 & ~umask)}


def test_a_failed_write_leaves_neither_output_nor_temporary(tmp_path):
    target = tmp_path / "metrics.json"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_the_same_weights_written_twice_have_the_same_bytes(tmp_path):
    state = torch.nn.Linear(8, 3).state_dict()
    torch_save(state, tmp_path / "a" / "model.pt")
    torch_save(state, tmp_path / "b" / "model.pt")
    first = (tmp_path / "a" / "model.pt").read_bytes()
    assert (tmp_path / "b" / "model.pt").read_bytes() == first
    torch_save(state, tmp_path / "a" / "model.pt")  # a rerun over the file: its bytes do not change
    assert (tmp_path / "a" / "model.pt").read_bytes() == first
    loaded = torch.load(tmp_path / "a" / "model.pt", weights_only=True)
    assert all(torch.equal(loaded[key], value) for key, value in state.items())


def test_the_same_container_written_later_has_the_same_bytes(tmp_path, monkeypatch):
    dataset = tiny_dataset()
    dataset.save(tmp_path / "first.npz")
    later = time.time() + 3 * 86400  # a zip entry's time has a 2 s resolution: days apart, surely different
    monkeypatch.setattr(time, "time", lambda: later)
    dataset.save(tmp_path / "second.npz")
    assert (tmp_path / "second.npz").read_bytes() == (tmp_path / "first.npz").read_bytes()
    loaded = ImageDataset.load(tmp_path / "second.npz")
    np.testing.assert_array_equal(loaded.x_train, dataset.x_train)
    assert list(loaded.classes) == ["a", "b", "c"] and loaded.meta == {"source_checksum": "x"}


def test_npz_reads_back_every_array(tmp_path):
    arrays = {"x": np.arange(12, dtype=np.float16).reshape(3, 4), "names": np.array(["cat", "dog"]),
              "scalar": np.array(3)}
    save_npz(tmp_path / "a.npz", **arrays)
    with np.load(tmp_path / "a.npz", allow_pickle=False) as npz:
        assert npz.files == list(arrays)
        for key, value in arrays.items():
            np.testing.assert_array_equal(npz[key], value)
            assert npz[key].dtype == value.dtype


def test_the_same_figure_saved_later_has_the_same_bytes(tmp_path):
    from matplotlib.figure import Figure

    figure = Figure()
    figure.subplots().plot([0, 1], [1, 0])
    save_figure(figure, pdf=tmp_path / "a.pdf", png=tmp_path / "a.png")
    time.sleep(1.1)  # a pdf's creation date has a 1 s resolution
    save_figure(figure, pdf=tmp_path / "b.pdf", png=tmp_path / "b.png")
    assert (tmp_path / "a.pdf").read_bytes() == (tmp_path / "b.pdf").read_bytes()
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
