"""robust-seg: segmentation data, nets, robust training, robustness under attack and synthesis by gradients.

Each kind has a registry whose names are config values, wildcards and table rows:
``SEG_DATASETS`` (mnist5k-seg, voc2012, cityscapes), ``SEG_MODELS`` (tinyunet,
pspnet50, deeplabv3-r50), ``SEG_PROCEDURES`` (standard, sat, advprop),
``SEG_ATTACKS`` (none, bim, pgd) and ``SYNTHESIS_OPTIMIZERS`` (adam, pgd-l2).
The jobs a DAG rule calls are in ``poisonlab.segmentation.run``; the figures in
``poisonlab.segmentation.figures``. Design note: ``../shared/papers/robust-seg.md``.
"""

from __future__ import annotations

from poisonlab.segmentation.data import SegmentationDataset, make_canvases
from poisonlab.segmentation.datasets import SEG_DATASETS
from poisonlab.segmentation.models import SEG_MODELS, build_seg_model, load_weights
from poisonlab.segmentation.procedures import SEG_PROCEDURES
from poisonlab.segmentation.robustness import SEG_ATTACKS
from poisonlab.segmentation.synthesis import SYNTHESIS_OPTIMIZERS

__all__ = ["SEG_ATTACKS", "SEG_DATASETS", "SEG_MODELS", "SEG_PROCEDURES", "SYNTHESIS_OPTIMIZERS",
           "SegmentationDataset", "build_seg_model", "load_weights", "make_canvases"]
