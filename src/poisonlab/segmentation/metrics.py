"""Segmentation scores: a confusion matrix over a whole set, its mIoU and pixel accuracy, in percent.

As hszhao/semseg's ``intersectionAndUnion`` (the companion repository's
evaluation): intersections and unions are summed over every image of the set
before dividing, pixels labelled 255 count nowhere. One choice differs and is
stated: a class that is neither in the labels nor in the predictions of the
set (union 0) is left out of the mean — semseg divides 0 by 1e-10 and averages
the 0 in, which only matters on a set missing a class (a small test subset).
"""

from __future__ import annotations

import torch

from poisonlab.training.loop import DeviceData, autocast


def confusion(predictions: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(K, K) int64 counts: row = label, column = prediction, over every pixel whose label is a class."""
    known = labels < num_classes
    index = labels[known].long() * num_classes + predictions[known].long()
    return torch.bincount(index, minlength=num_classes ** 2).view(num_classes, num_classes).cpu()


def scores(matrix: torch.Tensor) -> dict[str, float]:
    """``miou`` (mean IoU over the classes present in labels or predictions) and ``pixel_acc``, in percent."""
    matrix = matrix.double()
    intersection = matrix.diagonal()
    union = matrix.sum(0) + matrix.sum(1) - intersection
    present = union > 0
    return {"miou": 100.0 * (intersection[present] / union[present]).mean().item() if present.any() else 0.0,
            "pixel_acc": 100.0 * intersection.sum().item() / max(matrix.sum().item(), 1.0)}


def per_class_iou(matrix: torch.Tensor) -> list[float | None]:
    """IoU of each class in percent; None for a class with union 0."""
    matrix = matrix.double()
    intersection = matrix.diagonal()
    union = matrix.sum(0) + matrix.sum(1) - intersection
    return [100.0 * (i / u).item() if u > 0 else None for i, u in zip(intersection, union)]


def predict(model: torch.nn.Module, x_raw: torch.Tensor, normalize, batch_size: int, precision: str = "fp32"
            ) -> torch.Tensor:
    """Arg-max label maps (N, H, W) of raw images in [0, 255], in eval mode."""
    model.eval()
    out = []
    with torch.no_grad(), autocast(x_raw.device, precision):
        for start in range(0, len(x_raw), batch_size):
            out.append(model(normalize(x_raw[start:start + batch_size])).argmax(1))
    return torch.cat(out)


def segmentation_metric(model: torch.nn.Module, data: DeviceData, batch_size: int, precision: str) -> dict[str, float]:
    """``fit``'s test metric for label maps: pixel accuracy as ``test_acc`` (the contract's key) and ``test_miou``.

    One pass over the test set gives both.
    """
    matrix = confusion(predict(model, data.x_test, data.normalize, batch_size, precision), data.y_test,
                       data.num_classes)
    result = scores(matrix)
    return {"test_acc": result["pixel_acc"], "test_miou": result["miou"]}
