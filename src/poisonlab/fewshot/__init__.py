"""Few-shot learning for the AutoProtoNet paper: class splits, episodes, Conv-4 ProtoNet/AutoProtoNet, runs.

Importing this package fills its registries: ``SPLITS`` (class splits as facts), ``FEWSHOT_ARCHS``
(``conv4``, ``conv4-ae``), ``METHODS`` (``protonet``, ``autoprotonet``, ``ae-pretrain``, ``autoprotonet-ft``)
and ``EPISODE_AUGMENTATIONS`` (``jitter``; ``crop`` and ``flip`` come from ``training.augment``).
``figures`` is not imported here: matplotlib is only needed by the figure jobs.
"""

from __future__ import annotations

from poisonlab.fewshot.episodes import EPISODE_AUGMENTATIONS, Episodes, fixed_episodes, sample_episodes
from poisonlab.fewshot.evaluate import evaluate_fewshot, interval95
from poisonlab.fewshot.methods import METHODS, build_method
from poisonlab.fewshot.models import FEWSHOT_ARCHS, ProtoNet, build_fewshot_model
from poisonlab.fewshot.run import FewShotRunSpec, evaluate_fewshot_run, load_fewshot_model, train_fewshot_run
from poisonlab.fewshot.splits import SPLITS, ClassPool, ClassSplit, class_pools
from poisonlab.fewshot.train import FewShotRecipe, fit_episodes

__all__ = [
    "EPISODE_AUGMENTATIONS", "FEWSHOT_ARCHS", "METHODS", "SPLITS", "ClassPool", "ClassSplit", "Episodes",
    "FewShotRecipe", "FewShotRunSpec", "ProtoNet", "build_fewshot_model", "build_method", "class_pools",
    "evaluate_fewshot", "evaluate_fewshot_run", "fit_episodes", "fixed_episodes", "interval95",
    "load_fewshot_model", "sample_episodes", "train_fewshot_run",
]
