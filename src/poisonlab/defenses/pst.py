"""Progressive Staged Training (PST), after Dang et al., "Unlearnable Examples Give a False Sense of Data
Privacy: Understanding and Relearning" (arXiv 2306.02064; first titled "Flew Over Learning Trap: Learn
Unlearnable Samples by Progressive Staged Training").

No code was released, and the stored copies of the paper reachable from here
hold its abstract and third-party summaries, not the method section. So:

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

Chosen here (every number below is an option, with the default stated):
- The statistic: η², the between-class share of the variance of a stage's
  flattened output (Σ_k n_k‖μ_k − μ‖² / Σ_i ‖a_i − μ‖²) on a fixed sample of
  ``sample_size`` = 512 training images drawn once from the run's generator,
  model in eval mode. It is 0 when class means coincide and 1 when every
  image sits on its class mean; with random labels it is about
  (K − 1)/(N − 1) (0.018 for K = 10, N = 512). Flattened, not pooled, so
  spatial perturbations (patches, one pixel) count too.
- The trigger: a stage's η² relative to its value before training (epoch 1's
  measurement, the untrained network). The inputs already carry the
  perturbation at initialisation; what marks the trap is the network learning
  to amplify it. Measured with smallcnn on the 2,000-image CIFAR-10 subset
  over 8 epochs, the first block's η² rose ×1.09 on clean data, ×1.6 on CUDA
  (×1.36 by epoch 3) and ×1.28 on AR (at epoch 8, when AR takes over); the
  second block's ×1.33, ×2.3 and ×2.0. The default ``rise`` = 0.3 stays
  above clean training's drift at both depths.
- The stages: stage k slows ``stages[:k]`` of the Classifier by ``slowdown``
  (0.1; 0 freezes). Before each epoch the first stage still at full speed is
  measured; if its η² exceeds (1 + rise)× its start, the next stage begins.
  At most one stage a epoch, up to ``max_depth`` = 2 body stages, never the
  last body stage (the head and its input always learn). Stages only advance.
- Slowing is a factor on each optimizer step of the slowed parameters
  (p ← p_before + slowdown·(p_after − p_before), optimizer step hooks): for SGD
  and Adam that is exactly a per-layer learning rate, weight decay included,
  and it survives the recipe's LambdaLR rewriting every group's rate. A
  frozen stage's weights do not move; its batch-norm statistics still follow
  the data (the loop puts the whole model in train mode).

Everything the defense remembers (sample, starting values, stage, every
measurement) is in ``state``, so a resumed run stages exactly as an
uninterrupted one.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable

import torch
from torch import nn

from poisonlab.defenses.base import DEFENSES, check_positive
from poisonlab.registry import ConfigError
from poisonlab.training.procedure import EpochContext, TrainingDefense

logger = logging.getLogger(__name__)

MEASURE_BATCH = 256


@DEFENSES.register("pst")
def progressive_staged_training(*, rise: float = 0.1, slowdown: float = 0.0, max_depth: int = 2,
                                sample_size: int = 512) -> TrainingDefense:
    """Slow or freeze the shallow stages, one more each time the next one's activations start clustering by class."""
    check_positive("pst", "rise", rise)
    if isinstance(slowdown, bool) or not isinstance(slowdown, (int, float)) or not 0 <= slowdown < 1:
        raise ConfigError(f"defense 'pst': slowdown must lie in [0, 1) (0 freezes); got {slowdown!r}")
    for option, value in (("max_depth", max_depth), ("sample_size", sample_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"defense 'pst': {option} must be an integer >= 1; got {value!r}")

    state: dict = {"depth": 0, "start": [], "history": []}
    hooked: weakref.WeakSet = weakref.WeakSet()

    def on_epoch_start(ctx: EpochContext) -> None:
        stages = shallow_stages(ctx.model, max_depth)
        if ctx.optimizer not in hooked:
            slow_stages(ctx.optimizer, stages, lambda: (state["depth"], slowdown))
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
        self.num_classes, self.device = num_classes, device
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
    """The class clustering of each shallow stage's output on the sample, in eval mode (running batch-norm statistics)."""
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
    """Record this epoch's measurement; slow through the deepest stage whose clustering rose past (1 + rise)× its start.

    Only stages still at full speed are looked at, and stages only advance: a stage fed by a faster one
    could not stay clean while its input keeps learning, so everything below a clustering stage is slowed too.
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


def slow_stages(optimizer: torch.optim.Optimizer, stages: list[nn.Module],
                setting: Callable[[], tuple[int, float]]) -> None:
    """Scale each optimizer step of ``stages[:depth]`` by ``slowdown``, (depth, slowdown) read at every step."""
    before: list[tuple[torch.Tensor, torch.Tensor]] = []

    def slowed() -> list[torch.Tensor]:
        depth, _ = setting()
        return [p for stage in stages[:depth] for p in stage.parameters() if p.requires_grad]

    def remember(optimizer, args, kwargs) -> None:
        before[:] = [(p, p.detach().clone()) for p in slowed()]

    @torch.no_grad()
    def scale(optimizer, args, kwargs) -> None:
        _, slowdown = setting()
        for p, old in before:
            p.copy_(old.lerp_(p, slowdown))
        before.clear()

    optimizer.register_step_pre_hook(remember)
    optimizer.register_step_post_hook(scale)
