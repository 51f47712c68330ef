"""Few-shot accuracy over a fixed, seeded set of test episodes: mean ± 95% interval, as the repository's test.py.

The protocol (``test.py``): 1,000 episodes, 5-way, 1 or 5 shots, 15 queries a class; an episode's accuracy
is the percentage of its queries classified right; the result is the mean and 1.96 · std / √n, where std is
numpy's population standard deviation (ddof 0) of the per-episode accuracies.

The episodes are a function of the seed only (``episodes.fixed_episodes``), so every model evaluated with
one seed sees the same episodes. A model in eval mode embeds each image the same way in every episode
(BatchNorm uses its running statistics), so the pool is embedded once and each episode gathers its
embeddings: 1,000 episodes cost one pass over the pool's images instead of 80,000–100,000 forward passes,
with the same numbers.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from poisonlab.fewshot.episodes import check_episode_shape, fixed_episodes
from poisonlab.fewshot.methods import unit_pixels
from poisonlab.fewshot.models import ProtoNet, class_prototypes
from poisonlab.fewshot.splits import ClassPool
from poisonlab.training.loop import autocast

Z_95 = 1.96
EMBED_BATCH = 100  # images a forward pass when embedding a pool: 2× faster than 500 on a 2-core CPU (cache)


def interval95(accuracies: np.ndarray | list[float]) -> tuple[float, float]:
    """(mean, 1.96 · std / √n) of per-episode accuracies, std with ddof 0 as numpy's default (test.py)."""
    values = np.asarray(accuracies, dtype=np.float64)
    return float(values.mean()), float(Z_95 * values.std() / math.sqrt(len(values)))


@torch.no_grad()
def embed_pool(model: ProtoNet, pool: ClassPool, precision: str = "fp32") -> torch.Tensor:
    """Every image of ``pool`` embedded in eval mode, (N, D) float32."""
    model.eval()
    chunks = []
    with autocast(pool.images.device, precision):
        for images in pool.images.split(EMBED_BATCH):
            chunks.append(model.embed(unit_pixels(images)).float())
    return torch.cat(chunks)


@torch.no_grad()
def episode_accuracies(model: ProtoNet, pool: ClassPool, *, way: int, shot: int, query: int, episodes: int,
                       seed: int, precision: str = "fp32", embeddings: torch.Tensor | None = None) -> np.ndarray:
    """Accuracy (%) of each of the ``episodes`` seeded episodes; ``embeddings`` reuses a pool already embedded."""
    check_episode_shape(pool, way=way, shot=shot, query=query)
    embeddings = embed_pool(model, pool, precision) if embeddings is None else embeddings
    accuracies = []
    for batch in fixed_episodes(pool, way=way, shot=shot, query=query, episodes=episodes, seed=seed):
        prototypes = class_prototypes(embeddings[batch.support_index], batch.support_labels, way)
        logits = model.logits(embeddings[batch.query_index], prototypes)
        accuracies.append(100.0 * (logits.argmax(2) == batch.query_labels).float().mean(1))
    return torch.cat(accuracies).cpu().numpy()


def evaluate_fewshot(model: ProtoNet, pool: ClassPool, *, way: int = 5, shot: int, query: int = 15,
                     episodes: int = 1000, seed: int = 0, precision: str = "fp32",
                     embeddings: torch.Tensor | None = None) -> dict:
    """``way``-way ``shot``-shot accuracy over ``episodes`` seeded episodes: a json-ready record."""
    accuracies = episode_accuracies(model, pool, way=way, shot=shot, query=query, episodes=episodes, seed=seed,
                                    precision=precision, embeddings=embeddings)
    mean, ci95 = interval95(accuracies)
    return {"way": way, "shot": shot, "query": query, "episodes": episodes, "seed": seed, "acc": mean,
            "ci95": ci95, "std": float(accuracies.std()), "classes": list(pool.classes)}
