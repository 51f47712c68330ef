"""Photos to immunize and edit: a label-free container, scikit-image's PNG photos, a user's folder.

The container is a new, minimal kind (``PhotoSet``), not ``data.container.ImageDataset`` with dummy
labels: that contract requires a train/test split and class labels, which editing has neither of,
and lacks the per-image inpainting masks and prompts editing needs. Keys of the ``.npz``:

- ``images``: uint8 (N, H, W, 3); ``names``: str (N,), each image's source name;
- ``masks`` (optional): bool (N, H, W), True where an inpainting edit repaints (diffusers' and
  PhotoGuard's convention: white = repaint); ``prompts`` (optional): str (N,), one edit prompt each;
- ``meta``: a JSON string — where the images came from, their licences and checksums, and what a
  stage did to them (immunizer and its options, JPEG quality).

Sources (``PHOTOSETS``):

- ``skimage-photos``: the RGB photos scikit-image ships as PNG inside its wheel, so never JPEG-
  compressed (a JPEG source would confound a JPEG experiment) and present on a fresh machine.
  Checked in scikit-image 0.26.0: of its RGB photos, ``rocket``, ``retina`` and
  ``hubble_deep_field`` are JPEG files (left out), ``color.png`` is a synthetic colour wheel (left
  out); the rest, with the licences their docstrings state, are in ``SKIMAGE_PHOTOS``. Each is
  centre-cropped to a square and resized (Lanczos, as PhotoGuard's ``preprocess``) to ``size``.
- ``folder``: a user's images for the paper scale (``*.png``, ``*.jpg``…), with optional masks in
  ``masks/<stem>.png`` (thresholded at 0.5, PhotoGuard's ``prepare_mask_and_masked_image``) and
  prompts in ``prompts.yaml`` (``{stem: prompt}``). Resized so the short side is ``size``, then
  centre-cropped (PhotoGuard's img2img demo: ``Resize(512)`` then ``CenterCrop(512)``).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from poisonlab.atomic import save_npz
from poisonlab.registry import ConfigError, Registry

# name → (file in skimage/data, licence as scikit-image's docstring states it). Ordered so that the
# smallest sets (the embedded scale's first few) hold no person: the cat, the coffee cup, the motorcycle.
SKIMAGE_PHOTOS: dict[str, tuple[str, str]] = {
    "chelsea": ("chelsea.png", "CC0 (photographer Stefan van der Walt)"),
    "coffee": ("coffee.png", "CC0 (photographer Rachel Michetti)"),
    "motorcycle_left": ("motorcycle_left.png", "Middlebury 2014 stereo benchmark; no licence stated in scikit-image"),
    "astronaut": ("astronaut.png", "public domain (NASA; Eileen Collins)"),
    "ihc": ("ihc.png", "no known copyright restrictions (CMMI microscopy)"),
    "motorcycle_right": ("motorcycle_right.png",
                         "Middlebury 2014 stereo benchmark; no licence stated in scikit-image"),
}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


@dataclass
class PhotoSet:
    images: np.ndarray
    names: np.ndarray
    masks: np.ndarray | None = None
    prompts: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.names = np.asarray(self.names, dtype=str)
        if self.prompts is not None:
            self.prompts = np.asarray(self.prompts, dtype=str)
        if self.images.ndim != 4 or self.images.shape[-1] != 3 or self.images.dtype != np.uint8:
            raise ConfigError(f"images must be uint8 (N, H, W, 3); got {self.images.dtype} {self.images.shape}")
        n, h, w, _ = self.images.shape
        if self.names.shape != (n,):
            raise ConfigError(f"names must have one entry an image ({n}); got shape {self.names.shape}")
        if self.masks is not None and (self.masks.dtype != bool or self.masks.shape != (n, h, w)):
            raise ConfigError(f"masks must be bool (N, H, W) = {(n, h, w)}; got {self.masks.dtype} {self.masks.shape}")
        if self.prompts is not None and self.prompts.shape != (n,):
            raise ConfigError(f"prompts must have one entry an image ({n}); got shape {self.prompts.shape}")

    def __len__(self) -> int:
        return len(self.images)

    def tensor(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """The images as float32 (N, 3, H, W) in [0, 1]."""
        return torch.from_numpy(self.images).to(device).permute(0, 3, 1, 2).float().div(255)

    def mask_tensor(self, device: torch.device | str = "cpu") -> torch.Tensor | None:
        """The masks as bool (N, 1, H, W), True where an edit repaints; None without masks."""
        return None if self.masks is None else torch.from_numpy(self.masks).to(device)[:, None]

    def with_images(self, images: torch.Tensor | np.ndarray, **meta: Any) -> PhotoSet:
        """The same photos (names, masks, prompts) with new pixels — [0, 1] floats rounded to uint8 —
        and ``meta`` added to the record of what was done to them."""
        if isinstance(images, torch.Tensor):
            images = images.detach().clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        return replace(self, images=np.ascontiguousarray(images), meta={**self.meta, **meta})

    def save(self, path: str | os.PathLike) -> None:
        optional = {k: v for k, v in (("masks", self.masks), ("prompts", self.prompts)) if v is not None}
        save_npz(path, images=self.images, names=self.names, meta=np.array(json.dumps(self.meta, sort_keys=True)),
                 **optional)

    @classmethod
    def load(cls, path: str | os.PathLike) -> PhotoSet:
        if not os.path.exists(path):
            raise ConfigError(f"photo set {path} does not exist")
        with np.load(path, allow_pickle=False) as npz:
            if "images" not in npz.files or "names" not in npz.files:
                raise ConfigError(f"{path} is not a photo set: it needs images and names")
            return cls(images=npz["images"], names=npz["names"],
                       masks=npz["masks"] if "masks" in npz.files else None,
                       prompts=npz["prompts"] if "prompts" in npz.files else None,
                       meta=json.loads(str(npz["meta"])) if "meta" in npz.files else {})


PHOTOSETS: Registry[Callable[..., PhotoSet]] = Registry("photo set")


def build_photos(name: str, **options: Any) -> PhotoSet:
    """Photo set ``name`` with its loader's options; ConfigError on an unknown name or option."""
    return PHOTOSETS.build(name, **options)


def _check_size(source: str, size: int) -> None:
    # Multiples of 8: every latent autoencoder here downsamples by 8 (SD's VAE, TAEF2, small-ae).
    if isinstance(size, bool) or not isinstance(size, int) or size < 8 or size % 8:
        raise ConfigError(f"photo set '{source}': size must be a positive multiple of 8; got {size!r}")


def _square(image, size: int, *, resample: int):
    """Resize so the short side is ``size`` (Lanczos for photos), then centre-crop to size × size."""
    from PIL import Image

    w, h = image.size
    scale = size / min(w, h)
    image = image.resize((max(size, round(w * scale)), max(size, round(h * scale))), resample=resample)
    left, top = (image.size[0] - size) // 2, (image.size[1] - size) // 2
    return image.crop((left, top, left + size, top + size))


@PHOTOSETS.register("skimage-photos")
def skimage_photos(*, names: list[str] | None = None, count: int | None = None, size: int = 64) -> PhotoSet:
    """The first ``count`` of ``names`` (default: all of ``SKIMAGE_PHOTOS``, in its order) at ``size`` px."""
    import skimage.data
    from PIL import Image

    _check_size("skimage-photos", size)
    names = list(SKIMAGE_PHOTOS) if names is None else list(names)
    unknown = [n for n in names if n not in SKIMAGE_PHOTOS]
    if unknown or not names:
        raise ConfigError(f"photo set 'skimage-photos': unknown photo(s) {unknown or '(none given)'}; "
                          f"known: {', '.join(SKIMAGE_PHOTOS)}")
    if count is not None:
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= len(names):
            raise ConfigError(f"photo set 'skimage-photos': count must be an integer in 1..{len(names)}; got {count!r}")
        names = names[:count]
    folder = Path(skimage.data.__file__).parent
    images, sources = [], {}
    for name in names:
        file, licence = SKIMAGE_PHOTOS[name]
        path = folder / file
        with Image.open(path) as image:
            images.append(np.asarray(_square(image.convert("RGB"), size, resample=Image.LANCZOS)))
        sources[name] = {"file": file, "licence": licence,
                         "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    return PhotoSet(np.stack(images), names, meta={
        "source": "skimage-photos", "size": size, "scikit_image": skimage.__version__, "photos": sources})


@PHOTOSETS.register("folder")
def folder_photos(*, path: str, size: int = 512) -> PhotoSet:
    """A user's folder of images (+ ``masks/<stem>.png`` and ``prompts.yaml``, each optional)."""
    import yaml
    from PIL import Image

    _check_size("folder", size)
    root = Path(path)
    files = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if root.is_dir() else []
    if not files:
        raise ConfigError(f"photo set 'folder': path {path} must be a folder holding images "
                          f"({', '.join(IMAGE_SUFFIXES)})")
    stems = [p.stem for p in files]
    images, masks = [], []
    for file in files:
        with Image.open(file) as image:
            images.append(np.asarray(_square(image.convert("RGB"), size, resample=Image.LANCZOS)))
    mask_files = [root / "masks" / f"{stem}.png" for stem in stems]
    present = [m.exists() for m in mask_files]
    if any(present) and not all(present):
        missing = [m.name for m, ok in zip(mask_files, present) if not ok]
        raise ConfigError(f"photo set 'folder': masks/ must hold a mask for every image; missing {', '.join(missing)}")
    for mask_file in mask_files if all(present) else []:
        with Image.open(mask_file) as mask:
            masks.append(np.asarray(_square(mask.convert("L"), size, resample=Image.NEAREST)) >= 128)
    prompts = None
    if (root / "prompts.yaml").exists():
        # Keys as strings: YAML reads a stem such as 001 as a number.
        table = {str(k): v for k, v in (yaml.safe_load((root / "prompts.yaml").read_text()) or {}).items()}
        lacking = [s for s in stems if s not in table]
        if lacking:
            raise ConfigError(f"photo set 'folder': prompts.yaml lacks a prompt for {', '.join(lacking)}")
        prompts = [str(table[s]) for s in stems]
    checksums = {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in files}
    return PhotoSet(np.stack(images), stems, masks=np.stack(masks) if masks else None, prompts=prompts,
                    meta={"source": "folder", "path": str(root), "size": size, "sha256": checksums})
