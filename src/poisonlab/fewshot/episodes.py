"""N-way K-shot Q-query episodes drawn on the device from a ``ClassPool``, a batch of them at a time.

One draw of E episodes is three tensor operations, with no DataLoader and no Python per image: a random
permutation of the pool's classes a episode (its first N are the episode's classes), random scores over
each chosen class's members (``ClassPool.members``; padding scored last), and an argsort whose first K are
the support and next Q the queries. So within an episode no image is both support and query and no class
appears twice; episodes of one draw are independent. Every random number comes from the caller's
``torch.Generator``: a seed fixes the episodes, and a checkpointed generator state resumes them exactly.

The repository's loader (Gidaris & Komodakis' ``FewShotDataloader``) also labels an episode's classes 0..N-1
in the order drawn, K supports then Q queries a class; we keep that class-major order (the ProtoNet head
does not depend on it).

Augmentation is batched over all images of a draw (supports and queries together, as the repository's
per-image transforms apply to both): the project's registered ``crop`` and ``flip``
(``training.augment``) plus ``jitter`` here, the repository's ColorJitter(0.4, 0.4, 0.4).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from poisonlab.fewshot.splits import ClassPool
from poisonlab.registry import ConfigError, Registry
from poisonlab.training.augment import AUGMENTATIONS, Augmentation

# Few-shot's own augmentations; a name not here is looked up in training.augment's AUGMENTATIONS.
EPISODE_AUGMENTATIONS: Registry[Callable[..., Augmentation]] = Registry("episode augmentation")

# Mixing augmentations blend images and soft targets; an episode's labels are class positions, not targets.
LABEL_MIXING = ("mixup", "cutmix")

# ITU-R 601 luma, as torchvision's rgb_to_grayscale.
_LUMA = (0.299, 0.587, 0.114)


@dataclass
class Episodes:
    """E episodes of N classes: raw pixels (uint8, or float32 after jitter) and labels 0..N-1.

    ``support`` (E, N·K, C, H, W), ``query`` (E, N·Q, C, H, W); ``*_index`` index the pool's images and
    ``classes`` (E, N) its classes, so a result can name the images it was computed from.
    """

    support: torch.Tensor
    support_labels: torch.Tensor
    query: torch.Tensor
    query_labels: torch.Tensor
    support_index: torch.Tensor
    query_index: torch.Tensor
    classes: torch.Tensor

    @property
    def way(self) -> int:
        return self.classes.shape[1]

    @property
    def shot(self) -> int:
        return self.support.shape[1] // self.way

    def __len__(self) -> int:
        return self.support.shape[0]


def check_episode_shape(pool: ClassPool, *, way: int, shot: int, query: int, min_shot: int = 1) -> None:
    """Raise ConfigError when ``pool`` cannot give an episode of this shape (before any job runs).

    ``min_shot=0`` admits query-only episodes (the refinement's validation sets, whose prototypes are given).
    """
    for field, value, minimum in (("way", way, 1), ("shot", shot, min_shot), ("query", query, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ConfigError(f"episode {field} must be an integer >= {minimum}; got {value!r}")
    if way > pool.num_classes:
        raise ConfigError(f"episode way {way} exceeds the {pool.num_classes} classes of the pool "
                          f"({', '.join(pool.classes)})")
    smallest = int(pool.counts.min())
    if shot + query > smallest:
        raise ConfigError(f"episode shot + query = {shot + query} exceeds the {smallest} images of the pool's "
                          f"smallest class")


def sample_episodes(pool: ClassPool, *, way: int, shot: int, query: int, episodes: int,
                    generator: torch.Generator) -> Episodes:
    """``episodes`` independent N-way K-shot Q-query episodes from ``pool``, drawn from ``generator``."""
    check_episode_shape(pool, way=way, shot=shot, query=query, min_shot=0)
    device, draws = pool.images.device, generator.device
    classes = torch.rand(episodes, pool.num_classes, generator=generator, device=draws).argsort(1)[:, :way]
    classes = classes.to(device)
    members = pool.members[classes]  # (E, N, M), -1 past a class's last image
    scores = torch.rand(members.shape, generator=generator, device=draws).to(device)
    scores = scores.masked_fill(members < 0, 2.0)  # padding sorts after every real member (scores < 1)
    chosen = members.gather(2, scores.argsort(2)[..., :shot + query])  # (E, N, K+Q)
    support_index = chosen[..., :shot].reshape(episodes, way * shot)
    query_index = chosen[..., shot:].reshape(episodes, way * query)
    labels = torch.arange(way, device=device)
    return Episodes(
        support=pool.images[support_index],
        support_labels=labels.repeat_interleave(shot).expand(episodes, -1),
        query=pool.images[query_index],
        query_labels=labels.repeat_interleave(query).expand(episodes, -1),
        support_index=support_index,
        query_index=query_index,
        classes=classes,
    )


def fixed_episodes(pool: ClassPool, *, way: int, shot: int, query: int, episodes: int, seed: int,
                   chunk: int = 50):
    """The same ``episodes`` episodes for a given seed, yielded ``chunk`` at a time (memory stays small at 84 px).

    The evaluation set of a model: every model evaluated with one seed sees the same episodes.
    """
    generator = torch.Generator(device="cpu").manual_seed(seed)  # CPU draws: the same episodes on any device
    for start in range(0, episodes, chunk):
        yield sample_episodes(pool, way=way, shot=shot, query=query, episodes=min(chunk, episodes - start),
                              generator=generator)


# ---------------------------------------------------------------- augmentation


@EPISODE_AUGMENTATIONS.register("jitter")
def color_jitter(*, brightness: float = 0.4, contrast: float = 0.4, saturation: float = 0.4) -> Augmentation:
    """torchvision's ColorJitter(brightness, contrast, saturation) on a batch, one factor an image.

    Each factor is uniform in [max(0, 1 − s), 1 + s], as torchvision draws it; brightness scales, contrast
    blends towards the image's mean grey, saturation towards its grey image (a no-op on one channel). The
    order is fixed (brightness, contrast, saturation) where torchvision permutes it per image: a documented
    simplification. Pixels stay in [0, 255], as float32.
    """
    for name, strength in (("brightness", brightness), ("contrast", contrast), ("saturation", saturation)):
        if strength < 0:
            raise ConfigError(f"jitter.{name} must be >= 0; got {strength}")

    def factors(strength: float, n: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
        low = max(0.0, 1.0 - strength)
        u = torch.rand(n, generator=generator, device=generator.device).to(device)
        return (low + (1.0 + strength - low) * u).view(n, 1, 1, 1)

    def grey(x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            return x
        weights = torch.tensor(_LUMA, device=x.device).view(1, 3, 1, 1)
        return (x * weights).sum(1, keepdim=True)

    def apply(x, y, generator):
        x = x.float()
        n = len(x)
        x = (x * factors(brightness, n, generator, x.device)).clamp(0, 255)
        mean = grey(x).mean((1, 2, 3), keepdim=True)
        c = factors(contrast, n, generator, x.device)
        x = (c * x + (1 - c) * mean).clamp(0, 255)
        s = factors(saturation, n, generator, x.device)
        return (s * x + (1 - s) * grey(x)).clamp(0, 255), y

    return apply


def build_episode_augmentations(spec: dict[str, dict] | None) -> list[Augmentation]:
    """``{"crop": {"padding": 4, "mode": "constant"}, "jitter": {}, "flip": {}}`` → augmentations, in order."""
    built = []
    for name, options in (spec or {}).items():
        if name in LABEL_MIXING:
            raise ConfigError(f"episode augmentation '{name}' mixes images of different classes, which an "
                              f"episode's labels cannot follow; allowed: crop, flip, cutout, jitter")
        registry = EPISODE_AUGMENTATIONS if name in EPISODE_AUGMENTATIONS else AUGMENTATIONS
        built.append(registry.build(name, **(options or {})))
    return built


def augment_episodes(episodes: Episodes, augmentations: list[Augmentation], generator: torch.Generator) -> Episodes:
    """Every image of ``episodes`` augmented as one batch; labels and indices unchanged."""
    if not augmentations:
        return episodes
    e, n_support = episodes.support.shape[:2]
    images = torch.cat([episodes.support.flatten(0, 1), episodes.query.flatten(0, 1)])
    unused_targets = images.new_zeros((len(images), 0), dtype=torch.float32)  # the registry's mixing slot
    for augment in augmentations:
        images, unused_targets = augment(images, unused_targets, generator)
    support, query = images.split([e * n_support, len(images) - e * n_support])
    return Episodes(support.unflatten(0, (e, n_support)), episodes.support_labels,
                    query.unflatten(0, (e, -1)), episodes.query_labels,
                    episodes.support_index, episodes.query_index, episodes.classes)
