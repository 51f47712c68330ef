"""Few-shot class splits: which classes meta-train, meta-validate and meta-test, as facts with their sources.

A split names classes (by the dataset's class names, so a container's label order does not matter) and is
registered under the dataset it applies to. ``class_pools`` turns a split and a loaded ``ImageDataset`` into
one ``ClassPool`` a phase: the images of that phase's classes, relabelled 0..C-1, as one uint8 NCHW tensor
on the device (the sampler's input; no DataLoader).

Each phase takes all images of its classes, from the container's training and test splits alike: the
container's split is a classifier's, while few-shot learning splits by class, and CIFAR-FS and miniImageNet
hold all 600 images of each class (CIFAR-100's 500 + 100) in whichever phase the class is.

The splits:

- ``mnist5k`` (embedded): digits 0–4 meta-train, 5–9 meta-test; no meta-val (10 classes do not leave enough
  for a third set), so a run keeps its last epoch instead of the repository's best-on-val (design note §5.1).
- ``cifar10-jpeg`` (natural images): airplane…deer meta-train, dog…truck meta-test (design note §5.2).
- ``cifar-fs`` (paper): Bertinetto et al.'s 64/16/20 CIFAR-100 classes, as CIFAR-FS (the MetaOptNet pickles the
  repository reads are made from these lists).
- ``mini-imagenet`` (paper): Ravi & Larochelle's 64/16/20 ImageNet synsets (600 images each).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from poisonlab.data.container import ImageDataset
from poisonlab.registry import ConfigError, Registry

PHASES = ("train", "val", "test")


@dataclass(frozen=True)
class ClassSplit:
    """Class names a phase; ``val`` is empty where there are too few classes for a meta-validation set."""

    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]
    source: str

    def __post_init__(self) -> None:
        named = [*self.train, *self.val, *self.test]
        if len(set(named)) != len(named):
            raise ValueError(f"a class split names a class in two phases: {sorted(named)}")

    def classes(self, phase: str) -> tuple[str, ...]:
        if phase not in PHASES:
            raise ConfigError(f"few-shot phase must be one of {', '.join(PHASES)}; got '{phase}'")
        return getattr(self, phase)


SPLITS: Registry[ClassSplit] = Registry("class split")


def _add(name: str, split: ClassSplit) -> None:
    SPLITS.register(name)(split)


_add("mnist5k", ClassSplit(
    train=tuple("01234"), val=(), test=tuple("56789"),
    source="design note ../shared/papers/autoprotonet.md §5.1 (chosen here; MNIST has no standard few-shot split)",
))
_add("cifar10-jpeg", ClassSplit(
    train=("airplane", "automobile", "bird", "cat", "deer"), val=(),
    test=("dog", "frog", "horse", "ship", "truck"),
    source="design note §5.2: CIFAR-10's first five classes meta-train, the last five meta-test (chosen here)",
))

# Bertinetto et al. (ICLR 2019), cifar100/splits/bertinetto/{train,val,test}.txt of the CIFAR-FS archive; copied
# from tristandeleu/pytorch-meta torchmeta/datasets/assets/cifar100/cifar-fs/{train,val,test}.json @ ac3c48e5.
_add("cifar-fs", ClassSplit(
    train=(
        "dolphin", "seal", "aquarium_fish", "ray", "trout", "orchid", "sunflower", "tulip", "bottle", "bowl", "can",
        "cup", "plate", "apple", "mushroom", "orange", "pear", "clock", "keyboard", "chair", "couch", "bee",
        "caterpillar", "cockroach", "bear", "lion", "tiger", "wolf", "bridge", "castle", "house", "road",
        "skyscraper", "cloud", "forest", "mountain", "elephant", "kangaroo", "porcupine", "possum", "raccoon",
        "skunk", "lobster", "spider", "boy", "girl", "dinosaur", "lizard", "snake", "turtle", "hamster", "mouse",
        "rabbit", "shrew", "squirrel", "oak_tree", "palm_tree", "pine_tree", "willow_tree", "bus", "train",
        "lawn_mower", "streetcar", "tank",
    ),
    val=(
        "beaver", "otter", "flatfish", "shark", "lamp", "television", "beetle", "butterfly", "sea", "camel",
        "cattle", "crab", "crocodile", "maple_tree", "motorcycle", "tractor",
    ),
    test=(
        "whale", "poppy", "rose", "sweet_pepper", "telephone", "bed", "table", "wardrobe", "leopard", "plain",
        "chimpanzee", "fox", "snail", "worm", "baby", "man", "woman", "bicycle", "pickup_truck", "rocket",
    ),
    source="Bertinetto et al. 2019 CIFAR-FS split, via tristandeleu/pytorch-meta "
           "torchmeta/datasets/assets/cifar100/cifar-fs/*.json @ ac3c48e5889645a2d05dd9a13b35aa2d986c0bec",
))

# Ravi & Larochelle (ICLR 2017), data/miniImagenet/{train,val,test}.csv of twitter/meta-learning-lstm @ 0df7fc74:
# the synsets in the csv files' label column (600 images each; 38,400 / 9,600 / 12,000 rows).
_add("mini-imagenet", ClassSplit(
    train=tuple("""
        n01532829 n01558993 n01704323 n01749939 n01770081 n01843383 n01910747 n02074367 n02089867 n02091831
        n02101006 n02105505 n02108089 n02108551 n02108915 n02111277 n02113712 n02120079 n02165456 n02457408
        n02606052 n02687172 n02747177 n02795169 n02823428 n02966193 n03017168 n03047690 n03062245 n03207743
        n03220513 n03337140 n03347037 n03400231 n03476684 n03527444 n03676483 n03838899 n03854065 n03888605
        n03908618 n03924679 n03998194 n04067472 n04243546 n04251144 n04258138 n04275548 n04296562 n04389033
        n04435653 n04443257 n04509417 n04515003 n04596742 n04604644 n04612504 n06794110 n07584110 n07697537
        n07747607 n09246464 n13054560 n13133613""".split()),
    val=tuple("""
        n01855672 n02091244 n02114548 n02138441 n02174001 n02950826 n02971356 n02981792 n03075370 n03417042
        n03535780 n03584254 n03770439 n03773504 n03980874 n09256479""".split()),
    test=tuple("""
        n01930112 n01981276 n02099601 n02110063 n02110341 n02116738 n02129165 n02219486 n02443484 n02871525
        n03127925 n03146219 n03272010 n03544143 n03775546 n04146614 n04149813 n04418357 n04522168 n07613480
        """.split()),
    source="Ravi & Larochelle 2017 split, twitter/meta-learning-lstm data/miniImagenet/*.csv "
           "@ 0df7fc747a219b7dd04e846d75eb8164483b304b",
))


@dataclass
class ClassPool:
    """One phase's images on the device: ``images`` uint8 (N, C, H, W), ``labels`` 0..C-1, and the class names.

    ``members`` is (C, M) indices into ``images``, one row a class, padded with -1 where a class has fewer
    than M images; ``counts`` is each row's length. The sampler draws from it without any Python per image.
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]
    members: torch.Tensor
    counts: torch.Tensor

    @classmethod
    def from_arrays(cls, images: np.ndarray, labels: np.ndarray, classes: tuple[str, ...],
                    device: torch.device | str, pad_to: int | None = None) -> ClassPool:
        """(N, H, W, C) uint8 images with labels 0..C-1 → a pool on ``device``, zero-padded to ``pad_to`` px."""
        x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))).to(device)
        if pad_to is not None:
            x = _pad_to(x, pad_to)
        return cls.from_tensors(x, torch.from_numpy(np.asarray(labels, dtype=np.int64)).to(device), classes)

    @classmethod
    def from_tensors(cls, x: torch.Tensor, y: torch.Tensor, classes: tuple[str, ...]) -> ClassPool:
        """NCHW images and labels 0..C-1 already on their device → a pool (images and labels are not copied)."""
        device = x.device
        counts = torch.bincount(y, minlength=len(classes))
        if (counts == 0).any():
            empty = [classes[i] for i in torch.nonzero(counts == 0).flatten().tolist()]
            raise ConfigError(f"few-shot pool: class(es) {', '.join(empty)} have no images")
        members = torch.full((len(classes), int(counts.max())), -1, dtype=torch.int64, device=device)
        order = torch.argsort(y, stable=True)  # indices grouped by class, in image order within a class
        rank = torch.arange(len(y), device=device) - torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
        members[y[order], rank] = order
        return cls(x, y, tuple(classes), members, counts)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return tuple(self.images.shape[1:])  # type: ignore[return-value]


def _pad_to(x: torch.Tensor, size: int) -> torch.Tensor:
    """Zero-pad NCHW images to ``size`` px square, centred (MNIST 28 → 32: the Conv-4 then gives 64×2×2, as
    CIFAR-FS does, design note §3)."""
    h, w = x.shape[-2:]
    if size < max(h, w):
        raise ConfigError(f"few-shot pad_to must be >= the image size {max(h, w)}; got {size}")
    top, left = (size - h) // 2, (size - w) // 2
    return torch.nn.functional.pad(x, (left, size - w - left, top, size - h - top))


def class_pools(dataset: ImageDataset, split: str | ClassSplit, device: torch.device | str = "cpu",
                pad_to: int | None = None) -> dict[str, ClassPool]:
    """The pools of ``split`` (a registered name or a ``ClassSplit``) over ``dataset``; a phase with no
    classes (no meta-val) is left out."""
    class_split = SPLITS.get(split) if isinstance(split, str) else split
    known = {name: index for index, name in enumerate(dataset.classes.tolist())}
    missing = [name for phase in PHASES for name in class_split.classes(phase) if name not in known]
    if missing:
        raise ConfigError(f"class split names classes the dataset does not have: {', '.join(missing[:10])}; "
                          f"the dataset's classes: {', '.join(list(known)[:20])}")
    pools = {}
    for phase in PHASES:
        names = class_split.classes(phase)
        if not names:
            continue
        wanted = np.array([known[name] for name in names])
        relabel = np.full(len(known), -1)  # dataset label → position in the phase's listed classes
        relabel[wanted] = np.arange(len(wanted))
        splits = [(dataset.x_train, dataset.y_train), (dataset.x_test, dataset.y_test)]
        keep = [np.isin(y, wanted) for _, y in splits]
        images = np.concatenate([x[k] for (x, _), k in zip(splits, keep)])
        labels = relabel[np.concatenate([y[k] for (_, y), k in zip(splits, keep)])]
        pools[phase] = ClassPool.from_arrays(images, labels, names, device, pad_to)
    return pools
