"""The dataset container every stage reads and writes (DESIGN.md, Contracts).

``data/clean/{dataset}.npz`` holds ``x_train``, ``x_test`` as uint8
(N, H, W, C), ``y_train``, ``y_test`` as int64, ``classes`` as str, and
``meta``: a JSON string with the source checksum and how the data was made.
Poisoned and sanitized containers have the same keys; their ``x_train`` may
be float16 pixel values where a defense leaves the uint8 grid (orthogonal projection).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from poisonlab.atomic import save_npz
from poisonlab.registry import ConfigError

ARRAY_KEYS = ("x_train", "y_train", "x_test", "y_test", "classes")


@dataclass
class ImageDataset:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)
    # Per-training-image arrays a stage adds (a poison's perturbation norms), saved under their names.
    extras: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.y_train = np.asarray(self.y_train, dtype=np.int64)
        self.y_test = np.asarray(self.y_test, dtype=np.int64)
        self.classes = np.asarray(self.classes, dtype=str)
        self.validate()

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of one image."""
        return tuple(self.x_train.shape[1:])  # type: ignore[return-value]

    @property
    def source_checksum(self) -> str:
        return str(self.meta.get("source_checksum", ""))

    def validate(self) -> None:
        """Raise ConfigError naming the first field that breaks the contract."""
        for split in ("train", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if x.ndim != 4:
                raise ConfigError(f"x_{split} must be (N, H, W, C); got shape {x.shape}")
            if x.dtype not in (np.uint8, np.float16):
                raise ConfigError(f"x_{split} must be uint8 (or float16 pixel values); got {x.dtype}")
            if len(x) != len(y):
                raise ConfigError(f"x_{split} has {len(x)} images but y_{split} has {len(y)} labels")
            if len(y) and (y.min() < 0 or y.max() >= len(self.classes)):
                raise ConfigError(
                    f"y_{split} must lie in [0, {len(self.classes) - 1}] for {len(self.classes)} classes"
                )
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise ConfigError(
                f"train images are {self.x_train.shape[1:]} but test images are {self.x_test.shape[1:]}"
            )
        if self.x_test.dtype != np.uint8:
            raise ConfigError(f"x_test must be uint8; got {self.x_test.dtype}")
        for key, values in self.extras.items():
            if key in (*ARRAY_KEYS, "meta") or len(values) != len(self.x_train):
                raise ConfigError(f"extra array '{key}' must be new and have one entry a training image")

    def save(self, path: str | os.PathLike) -> None:
        save_npz(
            path,
            x_train=self.x_train,
            y_train=self.y_train,
            x_test=self.x_test,
            y_test=self.y_test,
            classes=self.classes,
            meta=np.array(json.dumps(self.meta, sort_keys=True)),
            **self.extras,
        )

    @classmethod
    def load(cls, path: str | os.PathLike) -> ImageDataset:
        if not os.path.exists(path):
            raise ConfigError(f"dataset container {path} does not exist")
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in ARRAY_KEYS if k not in npz.files]
            if missing:
                raise ConfigError(f"{path} lacks {', '.join(missing)}; a container has {', '.join(ARRAY_KEYS)}")
            meta = json.loads(str(npz["meta"])) if "meta" in npz.files else {}
            extras = {k: npz[k] for k in npz.files if k not in (*ARRAY_KEYS, "meta")}
            return cls(**{k: npz[k] for k in ARRAY_KEYS}, meta=meta, extras=extras)
