"""Semantic segmentation: per-pixel class maps -> mIoU and pixel agreement vs FP32 (and vs masks).

The class map comes from the first per-pixel output: 1xCxHxW scores (argmax over C; with C = 1 a
binary map, threshold 0.5 for probabilities or 0 for logits, decided on the FP32 outputs) or 1xHxW
class ids. Ground truth (`truth`) is per sample an (H, W) class map, 255 = ignore, as
`edgekit.tasks.labels.read_masks` reads it; a mask of another size is compared with the prediction
resized to it (nearest neighbour).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from edgekit.core.errors import InvalidInputError
from edgekit.tasks.base import Outputs, Task, check_pairs, result, rounded, shape_text, squeezed, task_metric
from edgekit.tasks.generic import output_metrics

IGNORE = 255


def map_output(output_shapes, output_names) -> int:
    """Index of the first output that is a per-pixel map (1xCxHxW or 1xHxW with H, W > 1)."""
    for i, shape in enumerate(output_shapes):
        s = squeezed(shape)
        long = [d is None or d > 1 for d in s[-2:]]
        if len(s) in (2, 3) and len(shape) in (3, 4) and all(long):
            return i
    listed = ", ".join(f"'{n}' ({shape_text(s)})" for n, s in zip(output_names, output_shapes))
    raise InvalidInputError(f"segment: no per-pixel output among {listed}",
                            hint="segment reads 1xCxHxW class scores or 1xHxW class ids")


def class_map(x: np.ndarray, ids: bool, threshold: float) -> np.ndarray:
    """(H, W) int class ids of one sample's output: class ids as given, else argmax (or threshold) of scores."""
    x = np.asarray(x)
    if ids:
        return np.rint(x.reshape(x.shape[-2:])).astype(np.int64)
    x = x.reshape(x.shape[-3:])
    return (x[0] > threshold).astype(np.int64) if x.shape[0] == 1 else x.argmax(0)


def confusion(truth: np.ndarray, pred: np.ndarray, classes: int) -> np.ndarray:
    """(classes, classes + 1) pixel counts, truth x prediction; the last column counts predictions that
    are no class at all (out of range), so they are wrong without inventing classes."""
    keep = (truth != IGNORE) & (truth >= 0) & (truth < classes)
    t, p = truth[keep].astype(np.int64), pred[keep].astype(np.int64)
    p = np.where((p < 0) | (p >= classes), classes, p)
    return np.bincount(t * (classes + 1) + p, minlength=classes * (classes + 1)).reshape(classes, classes + 1)


def miou(cm: np.ndarray) -> tuple[float | None, dict[int, float]]:
    """Mean IoU over the classes present in the truth or the prediction, and the per-class IoU."""
    tp = np.diag(cm).astype(np.float64)
    union = cm.sum(1) + cm[:, :-1].sum(0) - tp
    per_class = {int(k): float(tp[k] / union[k]) for k in np.flatnonzero(union)}
    return (float(np.mean(list(per_class.values()))) if per_class else None), per_class


def resized(pred: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if pred.shape == shape:
        return pred
    rows = (np.arange(shape[0]) * pred.shape[0] / shape[0]).astype(np.int64)
    cols = (np.arange(shape[1]) * pred.shape[1] / shape[1]).astype(np.int64)
    return pred[rows][:, cols]


class SegmentTask(Task):
    name = "segment"
    metric_name = "miou"

    def check(self, output_shapes, output_names) -> None:
        map_output(output_shapes, output_names)

    def evaluate(self, reference: Outputs, candidate: Outputs, output_names: Sequence[str], truth=None) -> dict:
        check_pairs(reference, candidate, output_names)
        index = map_output([np.shape(o) for o in reference[0]], output_names)
        ids = np.ndim(reference[0][index]) == 3  # 1xHxW class ids, else 1xCxHxW scores
        scores = None if ids else np.shape(reference[0][index])[1]
        threshold = 0.0
        if scores == 1:  # one channel: probabilities (threshold 0.5) or logits (0)
            values = np.concatenate([np.asarray(s[index]).ravel() for s in reference])
            threshold = 0.5 if values.min() >= 0 and values.max() <= 1 else 0.0
        ref_maps = [class_map(s[index], ids, threshold) for s in reference]
        got_maps = [class_map(s[index], ids, threshold) for s in candidate]
        if any(r.shape != g.shape for r, g in zip(ref_maps, got_maps)):
            raise InvalidInputError(f"segment: output '{output_names[index]}' differs in size from the FP32 reference")
        masks = None if truth is None else self.checked_masks(truth, len(reference), scores and max(scores, 2))
        classes = max(2, scores or 0, *(int(m.max()) + 1 for m in ref_maps),
                      *(int(m[m != IGNORE].max(initial=0)) + 1 for m in masks or []))
        cm = sum(confusion(r, g, classes) for r, g in zip(ref_maps, got_maps))
        vs_fp32, per_class = miou(cm)
        metrics = {"output": output_names[index], "classes": classes, "miou_vs_fp32": rounded(vs_fp32),
                   "pixel_agreement": rounded(np.trace(cm) / max(cm.sum(), 1)),
                   "per_class_iou_vs_fp32": {str(k): rounded(v) for k, v in per_class.items()}}
        value, reference_value = vs_fp32, 1.0
        if masks is not None:
            ref_cm = sum(confusion(t, resized(r, t.shape), classes) for t, r in zip(masks, ref_maps))
            got_cm = sum(confusion(t, resized(g, t.shape), classes) for t, g in zip(masks, got_maps))
            value, reference_value = miou(got_cm)[0], miou(ref_cm)[0]
            metrics.update(miou=rounded(value), reference_miou=rounded(reference_value),
                           pixel_accuracy=rounded(np.trace(got_cm) / max(got_cm.sum(), 1)),
                           reference_pixel_accuracy=rounded(np.trace(ref_cm) / max(ref_cm.sum(), 1)))
        metrics["ground_truth"] = truth is not None
        metrics["outputs"] = output_metrics(reference, candidate, output_names)
        return result(self.name, task_metric(self.metric_name, value, reference_value, vs_fp32), metrics)

    @staticmethod
    def checked_masks(truth, samples: int, classes: int | None) -> list[np.ndarray]:
        if len(truth) != samples:
            raise InvalidInputError(f"segment: {len(truth)} masks for {samples} samples")
        masks = [np.asarray(t).astype(np.int64).reshape(np.shape(t)[-2:]) for t in truth]
        for i, m in enumerate(masks):
            bad = m[(m != IGNORE) & ((m < 0) | (m >= (classes or IGNORE)))]
            if bad.size:
                raise InvalidInputError(f"segment: mask {i} holds class {int(bad[0])}, the model has {classes} classes")
        return masks
