"""Detection: decode the head, NMS, then mAP with pycocotools against FP32 detections and ground truth.

The candidate is scored two ways:
- against the FP32 model's own detections as pseudo ground truth (always; what int8 lost), and
- against real ground truth when given (`truth`: per sample (K, 5) x1, y1, x2, y2, class in
  model-input pixels, as `edgekit.tasks.labels` reads them), next to the FP32 model's mAP.
Plus, box by box at the deployed threshold: matched-box mean IoU, recall and precision vs FP32.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from edgekit.core.errors import InvalidInputError
from edgekit.tasks.base import Outputs, Task, check_pairs, result, rounded, task_metric
from edgekit.tasks.coco import CocoDetections, CocoTruth, coco_library
from edgekit.tasks.generic import output_metrics
from edgekit.tasks.heads import Head, box_iou, detections, find_head, fit_head

# Thresholds as Ultralytics `val` and `predict` use them. Scored detections keep everything above
# conf 0.001 (val's default): AP integrates precision over the whole recall range, and cutting the
# list at a deployment threshold would truncate recall and understate mAP. The FP32 pseudo ground
# truth is what a deployed FP32 model would report, predict's default conf 0.25: low-confidence FP32
# boxes are mostly background, and making them "truth" would score int8 on noise. NMS IoU 0.7 and 300
# boxes per image are the defaults of both.
CONF = 0.001
CONF_FP32 = 0.25
IOU = 0.7
MAX_DET = 300
MATCH_IOU = 0.5  # a candidate box "finds" an FP32 box of the same class at this IoU


@dataclass(frozen=True)
class DetectOptions:
    layout: str = "auto"  # auto | yolov8 | yolov5 | end2end | boxes (see edgekit.tasks.heads)
    conf: float = CONF
    conf_fp32: float = CONF_FP32
    iou: float = IOU
    max_det: int = MAX_DET


def match_boxes(fp32: Sequence[np.ndarray], candidate: Sequence[np.ndarray], iou: float = MATCH_IOU) -> dict:
    """Greedy one-to-one matching per image, best candidate score first, same class, IoU >= `iou`.

    Returns mean IoU of the matched pairs, recall (FP32 boxes found) and precision (candidate boxes
    that match an FP32 box)."""
    ious, n_fp32, n_cand = [], 0, 0
    for ref, got in zip(fp32, candidate):
        n_fp32, n_cand = n_fp32 + len(ref), n_cand + len(got)
        if not len(ref) or not len(got):
            continue
        overlap = box_iou(got, ref)
        overlap[got[:, 5][:, None] != ref[:, 5][None, :]] = 0.0
        taken = np.zeros(len(ref), bool)
        for g in np.argsort(-got[:, 4], kind="stable"):
            row = np.where(taken, -1.0, overlap[g])
            best = int(row.argmax())
            if row[best] >= iou:
                taken[best] = True
                ious.append(row[best])
    return {"mean_iou": rounded(np.mean(ious)) if ious else None,
            "recall": rounded(len(ious) / n_fp32) if n_fp32 else None,
            "precision": rounded(len(ious) / n_cand) if n_cand else None,
            "fp32_boxes": n_fp32, "candidate_boxes": n_cand}


@dataclass(frozen=True)
class Fp32Side:
    """What every candidate is scored against, made once: the FP32 detections at the deployed
    threshold (pseudo truth), indexed for COCOeval, the labels indexed, and the FP32 mAP against them."""

    pseudo: list[np.ndarray]
    pseudo_truth: CocoTruth
    truth: CocoTruth | None
    fp32_vs_truth: dict | None


class DetectTask(Task):
    """YOLO-family detectors (see edgekit.tasks.heads for the layouts)."""

    name = "detect"
    metric_name = "map50"

    def __init__(self, options: DetectOptions | None = None):
        self.options = options or DetectOptions()
        self._fp32: tuple | None = None  # the last reference and truth, decoded and scored (a search reuses them)

    def check(self, output_shapes, output_names) -> None:
        find_head(output_shapes, output_names, self.options.layout)

    def head(self, reference: Outputs, output_names: Sequence[str]) -> Head:
        shapes = [np.shape(o) for o in reference[0]]
        return fit_head(find_head(shapes, output_names, self.options.layout), reference)

    def detect(self, head: Head, outs: Outputs) -> list[np.ndarray]:
        o = self.options
        return [detections(head, s, o.conf, o.iou, o.max_det) for s in outs]

    def evaluate(self, reference: Outputs, candidate: Outputs, output_names: Sequence[str], truth=None) -> dict:
        check_pairs(reference, candidate, output_names)
        head, side = self.fp32_side(reference, output_names, truth)
        got_dets = self.detect(head, candidate)
        got = CocoDetections(got_dets)  # indexed once, scored against the FP32 detections and the labels
        deployed = [d[d[:, 4] >= self.options.conf_fp32] for d in got_dets]
        vs_fp32 = side.pseudo_truth.score(got, self.options.max_det)
        matched = match_boxes(side.pseudo, deployed)
        metrics = {"head": head.description,
                   "map50_vs_fp32": rounded(vs_fp32["map50"]) if vs_fp32 else None,
                   "map_vs_fp32": rounded(vs_fp32["map"]) if vs_fp32 else None,
                   "mean_iou_vs_fp32": matched["mean_iou"], "recall_vs_fp32": matched["recall"],
                   "precision_vs_fp32": matched["precision"], "fp32_boxes": matched["fp32_boxes"],
                   "candidate_boxes": matched["candidate_boxes"]}
        value = reference_value = None
        if vs_fp32 is None:
            metrics["note"] = f"the FP32 model detects nothing at conf >= {self.options.conf_fp32}: no pseudo ground truth"
        else:
            value, reference_value = vs_fp32["map50"], 1.0
        ref_gt = side.fp32_vs_truth
        if ref_gt is not None:
            got_gt = side.truth.score(got, self.options.max_det)
            if got_gt is not None:
                metrics.update(map50=rounded(got_gt["map50"]), map=rounded(got_gt["map"]),
                               reference_map50=rounded(ref_gt["map50"]), reference_map=rounded(ref_gt["map"]),
                               per_class_ap50={str(k): rounded(v) for k, v in got_gt["per_class"].items()})
                value, reference_value = got_gt["map50"], ref_gt["map50"]
        metrics["ground_truth"] = "map50" in metrics
        metrics["thresholds"] = {"conf": self.options.conf, "conf_fp32": self.options.conf_fp32,
                                 "iou": self.options.iou, "max_det": self.options.max_det}
        metrics["outputs"] = output_metrics(reference, candidate, output_names)
        return result(self.name, task_metric(self.metric_name, value, reference_value, metrics["map50_vs_fp32"]),
                      metrics)

    def prepare(self, reference: Outputs, output_names: Sequence[str], truth=None) -> None:
        """What can fail is checked now: the head fits, the labels fit it, the mAP library imports. The FP32
        side (its detections, the truths indexed for COCOeval, the FP32 mAP against the labels) is made once, when
        the first candidate is scored. On a second thread beside the candidate's run it measured no faster on
        2 cores (the runtime's threads already take both): 1.53-1.58x validate's time on the test detector,
        against 1.48x made afterwards."""
        head = self.head(reference, output_names)
        checked = None if truth is None else self.checked_truth(truth, len(reference), head)
        coco_library()
        self._fp32 = (reference, truth, head, checked, None)

    def score_fp32(self, head: Head, reference: Outputs, checked) -> "Fp32Side":
        ref_dets = self.detect(head, reference)
        pseudo = [d[d[:, 4] >= self.options.conf_fp32] for d in ref_dets]
        truth = None if checked is None else CocoTruth(checked)
        return Fp32Side(pseudo, CocoTruth([d[:, [0, 1, 2, 3, 5]] for d in pseudo]), truth,
                        None if truth is None else truth.score(CocoDetections(ref_dets), self.options.max_det))

    def fp32_side(self, reference: Outputs, output_names: Sequence[str], truth) -> tuple[Head, "Fp32Side"]:
        """(head, the FP32 side), reused while the caller passes the same reference and truth objects again
        (the accuracy-aware search scores many candidates)."""
        if self._fp32 is None or self._fp32[0] is not reference or self._fp32[1] is not truth:
            self.prepare(reference, output_names, truth)
        reference, truth, head, checked, side = self._fp32
        if side is None:
            side = self.score_fp32(head, reference, checked)
            self._fp32 = (reference, truth, head, checked, side)
        return head, side

    @staticmethod
    def checked_truth(truth, samples: int, head: Head) -> list[np.ndarray]:
        if len(truth) != samples:
            raise InvalidInputError(f"detect: ground truth for {len(truth)} images, but {samples} samples")
        boxes = [np.asarray(t, np.float64).reshape(-1, 5) for t in truth]
        top = max((int(b[:, 4].max()) for b in boxes if len(b)), default=-1)
        if head.classes is not None and top >= head.classes:
            raise InvalidInputError(f"detect: the labels use class {top}, the model ({head.description}) has "
                                    f"{head.classes} classes")
        return boxes
