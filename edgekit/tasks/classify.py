"""Classification: top-1/top-5 agreement with FP32 (all and confident samples), top-1/top-5 with labels.

The numbers are those of `compare` in edgekit/stages/validate.py (same arithmetic, float32, the same
"confident" threshold), so moving validate onto tasks changes no classifier's report.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from edgekit.core.errors import InvalidInputError
from edgekit.tasks.base import (
    Outputs,
    Task,
    check_pairs,
    result,
    rounded,
    shape_text,
    softmax,
    squeezed,
    stack_output,
    task_metric,
)
from edgekit.tasks.generic import output_metrics

CONFIDENT_PROB = 0.3  # FP32 top-1 probability that makes a sample "confident" (DESIGN.md)


def agreement(ref: np.ndarray, got: np.ndarray) -> dict:
    """Top-1/top-5 agreement of (samples, classes) scores with the FP32 scores, all and confident."""
    top1_ref, top1_got = ref.argmax(1), got.argmax(1)
    agree = top1_ref == top1_got
    k = min(5, ref.shape[1])
    top5_got = np.argsort(-got, axis=1)[:, :k]
    top5 = np.mean([t in row for t, row in zip(top1_ref, top5_got)])
    confident = softmax(ref).max(1) >= CONFIDENT_PROB
    return {
        "top1_agreement": round(float(agree.mean()), 6),
        "top5_agreement": round(float(top5), 6),
        "confident_samples": int(confident.sum()),
        "top1_agreement_confident": round(float(agree[confident].mean()), 6) if confident.any() else None,
    }


def label_accuracy(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Top-1 and top-5 accuracy of (samples, classes) scores against integer labels."""
    k = min(5, scores.shape[1])
    top5 = np.argsort(-scores, axis=1)[:, :k]
    return float(np.mean(scores.argmax(1) == labels)), float(np.mean([t in row for t, row in zip(labels, top5)]))


class ClassifyTask(Task):
    """The first output is the class scores (logits or probabilities); `truth` = per-sample labels."""

    name = "classify"
    metric_name = "top1"

    def check(self, output_shapes, output_names) -> None:
        dims = squeezed(output_shapes[0])
        if None not in dims and int(np.prod(dims)) < 2:
            raise InvalidInputError(
                f"classify: output '{output_names[0]}' ({shape_text(output_shapes[0])}) holds one value per "
                "sample, not class scores", hint="use --task generic for a regression output")

    def evaluate(self, reference: Outputs, candidate: Outputs, output_names: Sequence[str], truth=None) -> dict:
        check_pairs(reference, candidate, output_names)
        self.check([np.shape(reference[0][0])], output_names)
        ref, got = stack_output(reference, 0), stack_output(candidate, 0)
        if ref.shape != got.shape:
            raise InvalidInputError(f"classify: output '{output_names[0]}' has {got.shape[1]} values per sample in "
                                    f"the candidate, {ref.shape[1]} in the FP32 reference")
        metrics = agreement(ref, got)
        labels = None if truth is None or any(t is None for t in truth) else np.asarray(truth)
        if labels is not None and len(labels) != len(ref):
            raise InvalidInputError(f"classify: {len(labels)} labels for {len(ref)} samples")
        if labels is not None:
            ref_top1, ref_top5 = label_accuracy(ref, labels)
            top1, top5 = label_accuracy(got, labels)
            metrics.update(top1_accuracy=rounded(top1), top5_accuracy=rounded(top5),
                           reference_top1_accuracy=rounded(ref_top1), reference_top5_accuracy=rounded(ref_top5))
            value, reference_value = top1, ref_top1
        else:  # against FP32: agreement on the confident samples, what DESIGN.md judges int8 by
            value = metrics["top1_agreement_confident"]
            value = metrics["top1_agreement"] if value is None else value
            reference_value = 1.0
        metrics["ground_truth"] = labels is not None
        metrics["outputs"] = output_metrics(reference, candidate, output_names)
        return result(self.name, task_metric(self.metric_name, value, reference_value, metrics["top1_agreement"]),
                      metrics)
