"""Few-shot training methods by name: which arch each trains, its loss on a batch of episodes, what it starts from.

The repository's models (paper §4, ``scripts/workshop_paper_scripts/``; design note §1.3):

- ``protonet``: the ProtoNet baseline, Conv-4 with the ProtoNet head, cross-entropy on the queries
  (``train.py --network ProtoNet --head ProtoNet``).
- ``autoprotonet`` ("AP"): Conv-4 + decoder, cross-entropy + λ_r · MSE(decoder(query embeddings), queries),
  λ_r = 1 (``train_autoprotonet.py --network AutoProtoNet``).
- ``ae-pretrain`` ("IA"): the same encoder + decoder trained as a plain autoencoder, MSE only
  (``pretrain_autoprotonet.py``, on ImageNet at 84 px, batches of 1,024). Here its batches are the images of
  episodes drawn from the meta-train classes (supports and queries alike): the same trainer, class-balanced
  batches of way · (shot + query) · episodes images. At the paper scale the DAG may feed it an ImageNet pool.
- ``autoprotonet-ft`` ("IAP"): ``autoprotonet``'s loss, starting from an ``ae-pretrain`` model
  (the repository's ``--resume-path``, checkpoints named ``*-pre-fine-autoprotonet-5w5s``).

Label smoothing follows the repository's ``--eps`` (default 0): the true class gets 1 − ε and each other
class ε / (way − 1).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from poisonlab.fewshot.episodes import Episodes
from poisonlab.fewshot.models import ProtoNet, class_prototypes
from poisonlab.registry import ConfigError, Registry


@dataclass
class StepOutput:
    """A batch's loss, the query logits (None for a method that does not classify) and the loss's parts."""

    loss: torch.Tensor
    logits: torch.Tensor | None
    parts: dict[str, torch.Tensor]


@dataclass(frozen=True)
class FewShotMethod:
    name: str
    arch: str
    loss: Callable[[ProtoNet, Episodes], StepOutput]
    starts_from: str | None = None  # the method whose trained model.pt initialises this one


METHODS: Registry[Callable[..., FewShotMethod]] = Registry("few-shot method")


def unit_pixels(x: torch.Tensor) -> torch.Tensor:
    """Raw pixel values in [0, 255] → float in [0, 1], the repository's ``ToTensor`` input, channels_last
    like the models (``build_fewshot_model``)."""
    return (x.float() / 255.0).contiguous(memory_format=torch.channels_last)


def embed_episodes(model: ProtoNet, episodes: Episodes) -> tuple[torch.Tensor, torch.Tensor]:
    """Support and query embeddings, (E, N·K, D) and (E, N·Q, D).

    Two forward passes, supports then queries, as the repository: in training mode each set is its own
    BatchNorm batch.
    """
    e = len(episodes)
    support = model.embed(unit_pixels(episodes.support.flatten(0, 1))).view(e, -1, model.embedding_dim)
    query = model.embed(unit_pixels(episodes.query.flatten(0, 1))).view(e, -1, model.embedding_dim)
    return support, query


def query_logits(model: ProtoNet, episodes: Episodes, support: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    return model.logits(query, class_prototypes(support, episodes.support_labels, episodes.way))


def smoothed_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, eps: float) -> torch.Tensor:
    """Mean cross-entropy over all queries against the repository's smoothed one-hot targets."""
    way = logits.shape[-1]
    log_p = F.log_softmax(logits.reshape(-1, way).float(), dim=1)
    one_hot = F.one_hot(labels.reshape(-1), way).float()
    targets = one_hot * (1 - eps) + (1 - one_hot) * eps / max(way - 1, 1)
    return -(targets * log_p).sum(1).mean()


def reconstruction_loss(model: ProtoNet, embeddings: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """MSE between decoded embeddings (B, D) and the images (B, C, H, W) in [0, 1], computed in float32."""
    return F.mse_loss(model.decode(embeddings).float(), unit_pixels(images))


def _check(method: str, lambda_r: float | None, label_smoothing: float) -> None:
    if lambda_r is not None and lambda_r < 0:
        raise ConfigError(f"few-shot method '{method}': lambda_r must be >= 0; got {lambda_r}")
    if not 0 <= label_smoothing < 1:
        raise ConfigError(f"few-shot method '{method}': label_smoothing must lie in [0, 1); got {label_smoothing}")


@METHODS.register("protonet")
def protonet(*, label_smoothing: float = 0.0) -> FewShotMethod:
    _check("protonet", None, label_smoothing)

    def loss(model: ProtoNet, episodes: Episodes) -> StepOutput:
        logits = query_logits(model, episodes, *embed_episodes(model, episodes))
        ce = smoothed_cross_entropy(logits, episodes.query_labels, label_smoothing)
        return StepOutput(ce, logits, {"ce": ce.detach()})

    return FewShotMethod("protonet", "conv4", loss)


def _autoprotonet_loss(lambda_r: float, label_smoothing: float) -> Callable[[ProtoNet, Episodes], StepOutput]:
    def loss(model: ProtoNet, episodes: Episodes) -> StepOutput:
        support, query = embed_episodes(model, episodes)
        logits = query_logits(model, episodes, support, query)
        ce = smoothed_cross_entropy(logits, episodes.query_labels, label_smoothing)
        # The queries only, as the repository (train_autoprotonet.py): supports are not reconstructed.
        recon = reconstruction_loss(model, query.flatten(0, 1), episodes.query.flatten(0, 1))
        return StepOutput(ce + lambda_r * recon, logits, {"ce": ce.detach(), "recon": recon.detach()})

    return loss


@METHODS.register("autoprotonet")
def autoprotonet(*, lambda_r: float = 1.0, label_smoothing: float = 0.0) -> FewShotMethod:
    _check("autoprotonet", lambda_r, label_smoothing)
    return FewShotMethod("autoprotonet", "conv4-ae", _autoprotonet_loss(lambda_r, label_smoothing))


@METHODS.register("autoprotonet-ft")
def autoprotonet_ft(*, lambda_r: float = 1.0, label_smoothing: float = 0.0) -> FewShotMethod:
    _check("autoprotonet-ft", lambda_r, label_smoothing)
    return FewShotMethod("autoprotonet-ft", "conv4-ae", _autoprotonet_loss(lambda_r, label_smoothing),
                         starts_from="ae-pretrain")


@METHODS.register("ae-pretrain")
def ae_pretrain() -> FewShotMethod:
    def loss(model: ProtoNet, episodes: Episodes) -> StepOutput:
        images = torch.cat([episodes.support.flatten(0, 1), episodes.query.flatten(0, 1)])
        recon = reconstruction_loss(model, model.embed(unit_pixels(images)), images)
        return StepOutput(recon, None, {"recon": recon.detach()})

    return FewShotMethod("ae-pretrain", "conv4-ae", loss)


def build_method(name: str, options: dict | None = None) -> FewShotMethod:
    return METHODS.build(name, **(options or {}))
