"""``trak``: TRAK scores from the ``traker`` package (MadryLab, the TRAK paper's own code) over M checkpoints.

The paper compares against TRAK "trained using code available at MadryLab/trak" (the repository's
README). On a GPU, traker projects gradients with ``fast_jl`` (CUDA only); on the CPU it needs its
``BasicProjector``, which has a pitfall (design note ``ssl-attribution.md`` §2, measured): when
``proj_dim`` fits in one block (``block_size`` defaults to 100), ``finalize_features`` frees the
projection matrix and the scoring pass then fails with ``AttributeError: 'BasicProjector' object has
no attribute 'proj_matrix'``. So the CPU projector is built here with a block size below
``proj_dim`` — at least two blocks, each regenerated from its seed when used — and ``proj_dim`` < 2
is refused. On CUDA with ``fast_jl`` installed (``pip install traker[fast]``, compiled against the
local CUDA), traker's own ``CudaProjector`` is used instead. The model output is traker's ``image_classification`` margin, log p/(1−p) of the label.
Label it "TRAK (M=…)" in tables: a handful of small checkpoints is not the tuned TRAK of the paper.
"""

from __future__ import annotations

import tempfile
import time

import numpy as np
import torch
from torch import nn

from poisonlab.attribution.attributors import ATTRIBUTORS, Attribution, AttributionInputs, measure_cost, rank
from poisonlab.registry import ConfigError

BASIC_BLOCK_SIZE = 100  # traker's default; the projector uses fewer when proj_dim is small


class _Normalized(nn.Module):
    """The attributed model behind its input normalisation: traker feeds it raw pixels as floats."""

    def __init__(self, model: nn.Module, normalize) -> None:
        super().__init__()
        self.model = model
        self.normalize = normalize

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.normalize(x))


def projector_block_size(proj_dim: int) -> int:
    """A block size giving at least two blocks (the single-block pitfall above)."""
    if proj_dim < 2:
        raise ConfigError(f"trak.proj_dim must be >= 2 on the CPU projector; got {proj_dim}")
    return min(BASIC_BLOCK_SIZE, proj_dim // 2)


def trak_scores(build_model, checkpoints: list[dict], normalize, x_train: np.ndarray, y_train: np.ndarray,
                x_targets: np.ndarray, y_targets: np.ndarray, *, proj_dim: int = 512, batch_size: int = 100,
                seed: int = 0, device: str = "cpu") -> np.ndarray:
    """TRAK scores (T, N) of every training image for every target, over ``checkpoints`` (state dicts)."""
    from trak import TRAKer
    from trak.projectors import BasicProjector, ProjectionType

    if not checkpoints:
        raise ConfigError("trak needs at least one checkpoint (trak.checkpoints >= 1)")
    model = _Normalized(build_model(), normalize).to(device).eval()
    grad_dim = sum(p.numel() for p in model.parameters())

    def images(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).float().to(device)

    def batches(x: np.ndarray, y: np.ndarray):
        for start in range(0, len(x), batch_size):
            yield [images(x[start:start + batch_size]), torch.as_tensor(y[start:start + batch_size]).to(device)]

    with tempfile.TemporaryDirectory(prefix="trak-") as save_dir:
        projector = None  # on CUDA with fast_jl installed, traker's own CudaProjector (rademacher, fp16)
        if torch.device(device).type != "cuda" or not _has_fast_jl():
            projector = BasicProjector(grad_dim=grad_dim, proj_dim=proj_dim, seed=seed,
                                       proj_type=ProjectionType.normal, device=device,
                                       block_size=projector_block_size(proj_dim), dtype=torch.float32)
        traker = TRAKer(model=model, task="image_classification", train_set_size=len(x_train), save_dir=save_dir,
                        device=device, projector=projector, proj_dim=proj_dim, projector_seed=seed,
                        use_half_precision=projector is None, logging_level=40)
        for model_id, state in enumerate(checkpoints):
            traker.load_checkpoint(_wrapped(state), model_id=model_id)
            for batch in batches(x_train, y_train):
                traker.featurize(batch=batch, num_samples=len(batch[1]))
        traker.finalize_features()
        for model_id, state in enumerate(checkpoints):
            traker.start_scoring_checkpoint(exp_name="targets", checkpoint=_wrapped(state), model_id=model_id,
                                            num_targets=len(x_targets))
            for batch in batches(x_targets, y_targets):
                traker.score(batch=batch, num_samples=len(batch[1]))
        scores = traker.finalize_scores(exp_name="targets")
    return np.asarray(scores, np.float64).T  # traker returns (N, T)


def _has_fast_jl() -> bool:
    try:
        import fast_jl  # noqa: F401
    except ImportError:
        return False
    return True


def _wrapped(state: dict) -> dict:
    return {f"model.{key}": value for key, value in state.items()}


@ATTRIBUTORS.register("trak")
def trak(inputs: AttributionInputs, *, k: int = 1280, proj_dim: int = 512, batch_size: int = 100, seed: int = 0,
         device: str = "cpu", label_conditioned: bool = True) -> Attribution:
    inputs.need("trak", "x_train", "x_targets", "checkpoints", "build_model", "normalize")
    started = time.perf_counter()
    scores = trak_scores(inputs.build_model, inputs.checkpoints, inputs.normalize, inputs.x_train, inputs.y_train,
                         inputs.x_targets, inputs.target_labels, proj_dim=proj_dim, batch_size=batch_size,
                         seed=seed, device=device)
    topk, top_scores = rank(scores, inputs.y_train, inputs.target_labels, k, label_conditioned)
    # What TRAK keeps: projected features of every training image, one set per checkpoint.
    kept = len(inputs.checkpoints) * len(inputs.y_train) * proj_dim * 4
    return Attribution(topk, top_scores, measure_cost(inputs, started, kept, models=len(inputs.checkpoints)),
                       signed=True)
