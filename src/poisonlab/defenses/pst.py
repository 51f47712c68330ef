"""Progressive Staged Training (PST), after Dang et al., "Unlearnable Examples Give a False Sense of Data
Privacy: Understanding and Relearning" (arXiv 2306.02064; first titled "Flew Over Learning Trap: Learn
Unlearnable Samples by Progressive Staged Training").

No code was released, and the stored copies of the paper reachable from here
hold its abstract and third-party summaries, not its method section: the
idea below is the paper's, every number and formula is chosen here.

From the paper (abstract and summaries):
- A model on unlearnable examples learns image and perturbation features
  together at first, then is trapped into the perturbation features because
  its shallow layers learn them and pass the harmful activations on to the
  deeper layers.
- An activation-cluster measurement (ACM) on shallow layers quantifies that
  trap: how strongly their activations cluster by class.
- The remedy is staged, self-adaptive training: when the measurement signals
  that perturbation features take over, the shallow layers' learning is
  slowed (a layer-wise learning-rate schedule) or frozen, stage by stage.

Chosen here (each number is an option; defaults given):
- The statistic: the Calinski–Harabasz index of a stage's output, flattened
  per image and grouped by label: (between-class scatter / (K − 1)) /
  (within-class scatter / (N − K)), about 1 when activations do not cluster
  by class, growing as they do. Flattened, not pooled, so spatial
  perturbations (patches, one pixel) count. Taken in eval mode on
  ``sample_size`` = 512 training images drawn once from the run's generator.
- The trigger: a stage's index relative to the untrained network's (epoch 1's
  measurement): the inputs carry the perturbation from the start; the trap is
  the network learning to amplify it. Before each epoch, among the stages
  still at full speed, the deepest whose index rose more than ``rise`` = 10%
  is found, and it and every stage before it are slowed (a stage fed by a
  still-learning one could not stay clean). Stages only advance, up to
  ``max_depth`` = 2 body stages and never the body's last (the head and its
  input always learn).
- Slowing: ``slowdown`` = 0 (frozen) times each optimizer step of the slowed
  parameters, p ← p_before + slowdown·(p_after − p_before), by optimizer step
  hooks. For SGD and Adam that is exactly a per-layer learning rate, weight
  decay included, and it survives the recipe's LambdaLR rewriting every
  group's rate. Batch-norm statistics of a frozen stage still follow the data
  (the loop puts the whole model in train mode).

Measured (smallcnn, 8 epochs, crop + flip, the 2,000/1,000 CIFAR-10 subset;
test accuracy %, seeds 0/1/2; "same stream" is PST with a rise that never
fires, so the run draws the same random numbers):

    data       same stream        pst               undefended (seed 0)
    clean      47.6 48.3 48.5     44.3 45.7 44.0    48.7
    ar         24.5 30.6 25.9     44.3 43.1 47.1    34.4
    ops        38.6 47.0 35.8     43.9 43.7 46.5    39.6
    cuda       32.3 (seed 0)      36.0 (seed 0)     32.8
    regions-4  37.5 (seed 0)      40.2 (seed 0)     39.0

At this scale the trigger fired before epoch 2 on every run, clean data
included (in the first epoch the first block's index moved by -4% to +30%,
the second's by +13% to +89%), so these numbers show freezing the two
shallow blocks after one epoch: it recovers most of AR and OPS, little of
CUDA and regions-4, and costs clean training 3-4.5 points. With rise 0.3, or a trigger on the first
full-speed stage alone, AR's block 1 rose only when the trap was complete
(epoch 7-8) and PST did not help. Freezing one stage after epoch 1 and the
next after epoch 2 gave AR 46.5/45.7/47.3 and clean 46.3 (seed 0).

Everything the defense remembers (sample, starting values, stage, every
measurement) is in ``state``, so a resumed run stages exactly as an
uninterrupted one.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable
from typing import Annotated

import torch
from torch import nn

from poisonlab.checks import Count, Number, Positive
from poisonlab.defenses.base import DEFENSES
from poisonlab.registry import ConfigError
from poisonlab.training.procedure import EpochContext, TrainingDefense

logger = logging.getLogger(__name__)

MEASURE_BATCH = 256  # images a forward pass of the measurement: bounds the activations held at once


@DEFENSES.register("pst")
def progressive_staged_training(*, rise: Positive = 0.1, slowdown: Annotated[float, Number(ge=0, lt=1)] = 0.0,
                                max_depth: Count = 2, sample_size: Count = 512) -> TrainingDefense:
    """Freeze (or slow, by ``slowdown``: 0 freezes) the shallow stages once their activations start clustering
    by class more than at the start."""

    state: dict = {"depth": 0, "start": [], "history": []}
    hooked: weakref.WeakSet = weakref.WeakSet()

    def on_epoch_start(ctx: EpochContext) -> None:
        stages = shallow_stages(ctx.model, max_depth)
        if ctx.optimizer not in hooked:
            slow_stages(ctx.optimizer, stages, lambda: state["depth"], slowdown)
            hooked.add(ctx.optimizer)
        if "sample" not in state:
            count = min(sample_size, len(ctx.data.x_train))
            state["sample"] = torch.randperm(len(ctx.data.x_train), generator=ctx.generator,
                                             device=ctx.generator.device)[:count].cpu()
        clustering = measure(ctx.model, stages, ctx.data, state["sample"])
        advance(state, clustering, rise, ctx.epoch)

    return TrainingDefense(on_epoch_start=on_epoch_start, state=state)


# ---------------------------------------------------------------- measurement


def class_clustering(activations: torch.Tensor, labels: torch.Tensor, num_classes: int) -> float:
    """The Calinski–Harabasz index of the activations (flattened per image) grouped by label; about 1 by chance."""
    return _ClusterSums(num_classes, activations.device).add(activations, labels).index()


class _ClusterSums:
    """Running per-class sums, so the measurement can go batch by batch through a large sample."""

    def __init__(self, num_classes: int, device: torch.device) -> None:
        self.num_classes = num_classes
        self.class_sums: torch.Tensor | None = None
        self.counts = torch.zeros(num_classes, dtype=torch.float64, device=device)
        self.square_sum = torch.zeros((), dtype=torch.float64, device=device)

    def add(self, activations: torch.Tensor, labels: torch.Tensor) -> _ClusterSums:
        flat = activations.flatten(1).double()
        if self.class_sums is None:
            self.class_sums = flat.new_zeros(self.num_classes, flat.shape[1])
        self.class_sums.index_add_(0, labels, flat)
        self.counts += torch.bincount(labels, minlength=self.num_classes).double()
        self.square_sum += flat.square().sum()
        return self

    def index(self) -> float:
        """(between-class scatter / (K − 1)) / (within-class scatter / (N − K)), K the classes present."""
        present = self.counts > 0
        n, k = self.counts.sum(), int(present.sum())
        if k < 2 or n <= k:
            return 0.0
        grand = self.class_sums.sum(0).square().sum() / n
        between = (self.class_sums[present].square().sum(1) / self.counts[present]).sum() - grand
        within = self.square_sum - grand - between
        if within <= 0:
            return float("inf") if between > 0 else 0.0
        return float((between / (k - 1)) / (within / (n - k)))


def shallow_stages(model: nn.Module, max_depth: int) -> list[nn.Module]:
    """The stages PST may slow: the first ``max_depth`` of the body, never its last."""
    stages = getattr(model, "stages", None)
    if stages is None:
        raise ConfigError(f"defense 'pst' needs a poisonlab Classifier (a model with stages); "
                          f"got {type(model).__name__}")
    return list(stages)[:min(max_depth, len(stages) - 1)]


@torch.no_grad()
def measure(model: nn.Module, stages: list[nn.Module], data, sample: torch.Tensor) -> list[float]:
    """The class clustering of each shallow stage's output on the sample, in eval mode (running BN statistics)."""
    was_training = model.training
    model.eval()
    device = data.x_train.device
    sums = [_ClusterSums(data.num_classes, device) for _ in stages]
    for batch in sample.to(device).split(MEASURE_BATCH):
        hidden, labels = data.normalize(data.x_train[batch]), data.y_train[batch]
        for stage, stage_sums in zip(stages, sums):
            hidden = stage(hidden)
            stage_sums.add(hidden, labels)
    model.train(was_training)
    return [stage_sums.index() for stage_sums in sums]


# ---------------------------------------------------------------- stages


def advance(state: dict, clustering: list[float], rise: float, epoch: int) -> None:
    """Record this epoch's measurement; slow through the deepest stage whose clustering passed (1 + rise)× its start.

    Only stages still at full speed are looked at, and stages only advance: a stage fed by a faster one
    could not stay clean while its input keeps learning, so every stage before a clustering one is slowed too.
    """
    if not state["start"]:
        state["start"] = list(clustering)  # the untrained network: the reference for every later epoch
    state["history"].append(list(clustering))
    risen = [stage for stage in range(state["depth"], len(clustering))
             if clustering[stage] > (1 + rise) * state["start"][stage]]
    if risen:
        state["depth"] = risen[-1] + 1
        logger.info("pst: before epoch %d, class clustering of stages %s rose more than %.0f%% from the start: "
                    "slowing stages[:%d]", epoch, risen, 100 * rise, state["depth"])


def slow_stages(optimizer: torch.optim.Optimizer, stages: list[nn.Module], depth: Callable[[], int],
                slowdown: float) -> None:
    """Scale each of ``optimizer``'s steps of ``stages[:depth()]`` by ``slowdown``, ``depth()`` read at every step."""
    before: list[tuple[torch.Tensor, torch.Tensor]] = []

    def remember(optimizer, args, kwargs) -> None:
        slowed = [p for stage in stages[:depth()] for p in stage.parameters() if p.requires_grad]
        before[:] = [(p, p.detach().clone()) for p in slowed]

    @torch.no_grad()
    def scale(optimizer, args, kwargs) -> None:
        for p, old in before:
            p.copy_(old.lerp_(p, slowdown))
        before.clear()

    optimizer.register_step_pre_hook(remember)
    optimizer.register_step_post_hook(scale)
