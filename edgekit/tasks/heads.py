"""YOLO-family detection heads: find the layout from the output shapes, decode, filter, class-wise NMS.

Layouts (batch axis 1 optional, either orientation where it is unambiguous):
- `yolov8`: one output 1x(4+C)xN (YOLOv8/11 `yolo export`): cx, cy, w, h in input pixels, then C
  class scores, no objectness. With a 1xMxHxW mask-prototype output beside it (YOLOv8-seg) the last
  M channels are mask coefficients, not classes.
- `yolov5`: one output 1xNx(5+C): cx, cy, w, h, objectness, C class scores (score = obj x class).
- `end2end`: one output 1xNx6 or Nx6: x1, y1, x2, y2, score, class id (NMS-free / NMS in the graph).
- `boxes`: separate outputs: boxes Nx4 (xyxy or cxcywh, told apart on the FP32 outputs), scores NxC
  or N, and optionally class ids N (then the model did its own NMS).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Sequence

import numpy as np

from edgekit.core.errors import InvalidInputError
from edgekit.tasks.base import shape_text, squeezed

LAYOUTS = ("auto", "yolov8", "yolov5", "end2end", "boxes")
MAX_NMS = 30000  # boxes into NMS at most, highest scores first (Ultralytics' max_nms)
HEAD_HINT = ("detect reads 1x(4+C)xN (YOLOv8/11), 1xNx(5+C) (YOLOv5), 1xNx6 or Nx6 (end-to-end: x1, y1, x2, y2, "
             "score, class) or separate boxes (Nx4) + scores (NxC) outputs")


@dataclass(frozen=True)
class Head:
    """Where the detections are in a model's outputs and how to read them."""

    kind: str  # yolov8 | yolov5 | end2end | boxes
    outputs: tuple[int, ...]  # output indices: (prediction,) or (boxes, scores[, classes])
    classes: int | None  # C; None when the model gives class ids
    channels_first: bool = False  # (channels, N) rather than (N, channels)
    box_format: str = "cxcywh"  # cxcywh | xyxy
    sigmoid: bool = False  # the scores are logits
    score_rank: int = 2  # boxes layout: scores NxC (2) or N (1)
    scores_first: bool = False  # boxes layout: scores CxN
    description: str = ""

    @property
    def needs_nms(self) -> bool:
        return self.kind in ("yolov8", "yolov5") or (self.kind == "boxes" and len(self.outputs) == 2)


def _size(d: int | None) -> int:
    return 1 << 30 if d is None else int(d)  # a dynamic axis counts as long


def find_head(output_shapes: Sequence[Sequence[int | None]], output_names: Sequence[str], layout: str = "auto",
              strict: bool = False) -> Head:
    """The detection head among the outputs; `strict` (for guessing) also asks a one-output head for
    N >= 4 x channels and a last axis that is not a multiple of 32 (a hidden size of token states).

    Raises InvalidInputError naming the outputs when there is none."""
    if layout not in LAYOUTS:
        raise InvalidInputError(f"unknown detection layout '{layout}'", hint=f"one of {', '.join(LAYOUTS)}")
    shapes = [squeezed(s) for s in output_shapes]
    protos = next((s[0] for s in shapes if len(s) == 3 and _size(s[1]) > 1 and _size(s[2]) > 1), 0) or 0
    if layout != "boxes":
        for i, s in enumerate(shapes):
            head = _single_output_head(i, s, _size(protos) if protos else 0, layout, strict)
            if head:
                return replace(head, description=f"output '{output_names[i]}' {shape_text(output_shapes[i])}: "
                                                 + head.description)
    if layout in ("auto", "boxes") and (head := _split_head(shapes, output_names)):
        return head
    listed = ", ".join(f"'{n}' ({shape_text(s)})" for n, s in zip(output_names, output_shapes))
    raise InvalidInputError(f"detect: no detection head among the outputs {listed}", hint=HEAD_HINT)


def _single_output_head(index: int, s: tuple, protos: int, layout: str, strict: bool) -> Head | None:
    if len(s) != 2:
        return None
    a, b = _size(s[0]), _size(s[1])
    if b == 6 and a <= 6 and not strict and layout in ("auto", "end2end"):  # a few end-to-end detections
        return Head("end2end", (index,), None, False, "xyxy", description=f"end-to-end detections, {a} here")
    channels, n = min(a, b), max(a, b)
    if channels < 5 or a == b:
        return None
    # guessing: N >= 4 x channels, and a last axis that is no transformer hidden size (1x16x384 token states)
    if strict and (n < 4 * channels or (b % 32 == 0 and b <= 8192)):
        return None
    first = a < b
    if layout == "end2end" and channels != 6:
        return None
    if layout == "yolov8" or (layout == "auto" and first):
        c = channels - 4 - (protos if channels - 4 - protos >= 1 else 0)
        return Head("yolov8", (index,), c, first, description=f"YOLOv8/11 head, {c} classes, {n} anchors")
    if layout == "end2end" or (layout == "auto" and channels == 6):  # 1xNx6 may still be YOLOv5, 1 class
        return Head("end2end", (index,), None, first, "xyxy", description=f"end-to-end detections, up to {n}")
    c = channels - 5 - (protos if channels - 5 - protos >= 1 else 0)
    return Head("yolov5", (index,), c, first, description=f"YOLOv5 head (objectness), {c} classes, {n} anchors")


def _named(names: Sequence[str], indices: list[int], words: tuple[str, ...]) -> list[int]:
    hits = [i for i in indices if any(w in names[i].lower() for w in words)]
    return hits + [i for i in indices if i not in hits]


def _split_head(shapes: list[tuple], names: Sequence[str]) -> Head | None:
    """Boxes (Nx4 or 4xN) + scores (NxC, CxN or N) + optional class ids (N)."""
    candidates = [i for i, s in enumerate(shapes) if len(s) == 2 and 4 in (s[0], s[1]) and s[0] != s[1]]
    for b in _named(names, candidates, ("box", "bbox")):
        first = shapes[b][0] == 4
        n = shapes[b][1] if first else shapes[b][0]
        rest = [i for i in range(len(shapes)) if i != b]
        for sc in _named(names, rest, ("score", "conf", "prob", "logit", "cls")):
            s = shapes[sc]
            if len(s) == 2 and n in s:
                scores_first = s[1] == n and s[0] != n
                c = s[0] if scores_first else s[1]
                desc = f"boxes '{names[b]}' + scores '{names[sc]}' ({c} classes)"
                return Head("boxes", (b, sc), None if c is None else int(c), first, scores_first=scores_first,
                            description=desc)
            if len(s) == 1 and s[0] == n:
                ids = [i for i in _named(names, rest, ("class", "label", "cls")) if i != sc
                       and len(shapes[i]) == 1 and shapes[i][0] == n]
                desc = f"boxes '{names[b]}' + scores '{names[sc]}'" + (f" + classes '{names[ids[0]]}'" if ids else "")
                return Head("boxes", (b, sc, *ids[:1]), None if ids else 1, first, score_rank=1, description=desc)
    return None


def fit_head(head: Head, reference: Sequence[Sequence[np.ndarray]]) -> Head:
    """Settle what the shapes leave open on the FP32 outputs: Nx6 end-to-end vs YOLOv5 with one class,
    xyxy vs cxcywh boxes, scores as probabilities vs logits. The candidate is then read the same way."""
    if head.kind == "end2end":
        rows = np.concatenate([_rows(s[head.outputs[0]], head.channels_first) for s in reference])
        ids = rows[rows[:, 4] > 0, 5]  # padding rows (score 0) may hold anything
        if ids.size and (np.abs(ids - np.round(ids)).max() > 1e-3 or ids.min() < 0):
            head = replace(head, kind="yolov5", classes=1, box_format="cxcywh",
                           description=head.description.replace("end-to-end detections", "YOLOv5 head, 1 class"))
    if head.kind == "boxes":
        boxes = np.concatenate([_rows(s[head.outputs[0]], head.channels_first) for s in reference])
        xyxy = bool(np.all(boxes[:, 2] >= boxes[:, 0]) and np.all(boxes[:, 3] >= boxes[:, 1]))
        head = replace(head, box_format="xyxy" if xyxy else "cxcywh")
    scores = np.concatenate([_scores(head, s).ravel() for s in reference])
    scores = scores[np.isfinite(scores)]
    if scores.size and (scores.min() < -1e-3 or scores.max() > 1 + 1e-3):
        head = replace(head, sigmoid=True)
    return head


def _rows(x: np.ndarray, channels_first: bool, rank: int = 2) -> np.ndarray:
    """One sample's array without its batch axis: (rows, columns), transposed from channels-first."""
    x = np.asarray(x, np.float64)
    x = x.reshape(x.shape[-rank:]) if x.ndim >= rank else x.reshape((1,) * (rank - x.ndim) + x.shape)
    return x.T if channels_first and rank == 2 else x


def _scores(head: Head, outs: Sequence[np.ndarray]) -> np.ndarray:
    if head.kind == "boxes":
        return _rows(outs[head.outputs[1]], head.scores_first, head.score_rank)
    p = _rows(outs[head.outputs[0]], head.channels_first)
    return p[:, 4] if head.kind == "end2end" else p[:, 4:5 + head.classes] if head.kind == "yolov5" else \
        p[:, 4:4 + head.classes]


def decode(head: Head, outs: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Boxes (N, 4) x1 y1 x2 y2, scores (N, C) or (N,), class ids (N,) or None, for one sample."""
    scores = _scores(head, outs)
    if head.sigmoid:
        scores = 1 / (1 + np.exp(-np.clip(scores, -60, 60)))
    classes = None
    if head.kind == "boxes":
        boxes = _rows(outs[head.outputs[0]], head.channels_first)
        if len(head.outputs) == 3:
            classes = _rows(outs[head.outputs[2]], False, 1)
    else:
        p = _rows(outs[head.outputs[0]], head.channels_first)
        boxes = p[:, :4]
        if head.kind == "end2end":
            classes = p[:, 5]
        elif head.kind == "yolov5":
            scores = scores[:, :1] * scores[:, 1:]  # objectness x class score
    if head.box_format == "cxcywh":
        boxes = np.concatenate([boxes[:, :2] - boxes[:, 2:] / 2, boxes[:, :2] + boxes[:, 2:] / 2], 1)
    return boxes, scores, classes


def detections(head: Head, outs: Sequence[np.ndarray], conf: float, iou: float, max_det: int) -> np.ndarray:
    """(M, 6) x1, y1, x2, y2, score, class of one sample: score > conf, class-wise NMS, best max_det."""
    boxes, scores, classes = decode(head, outs)
    if scores.ndim == 2:  # one label per box, its best class (Ultralytics predict, multi_label=False)
        best = scores.argmax(1)
        classes, scores = best.astype(np.float64), np.take_along_axis(scores, best[:, None], 1)[:, 0]
    elif classes is None:
        classes = np.zeros(len(scores))
    keep = (scores > conf) & np.isfinite(boxes).all(1)
    boxes, scores, classes = boxes[keep], scores[keep], classes[keep]
    order = nms(boxes, scores, classes, iou, max_det) if head.needs_nms else np.argsort(-scores, kind="stable")[:max_det]
    return np.column_stack([boxes[order], scores[order], classes[order]]).astype(np.float32).reshape(-1, 6)


def nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou: float, max_det: int,
        block: int = 256) -> np.ndarray:
    """Greedy class-wise NMS, exactly: boxes of different classes never suppress each other; the best
    `max_det` kept indices, best first.

    A block of the next best boxes at a time: a block first loses the boxes an already kept box
    overlaps; inside it, the kept set is the fixed point of "kept unless a better kept box overlaps
    it" (a few matrix steps, as suppression only flows from better to worse boxes). Numpy's per-call
    cost is paid per block, not per kept box, and nothing after the first `max_det` kept boxes is
    compared at all."""
    order = np.argsort(-scores, kind="stable")[:MAX_NMS]
    b = np.asarray(boxes, np.float64)[order]
    cls = np.asarray(classes, np.float64)[order]
    # Each class shifted to its own stretch of the plane: boxes of different classes never intersect,
    # so no class test is needed (the offset trick of torchvision's batched_nms).
    b = b + (cls * (np.abs(b).max(initial=0.0) * 2 + 1))[:, None]
    x1, y1, x2, y2 = (np.ascontiguousarray(b[:, i]) for i in range(4))
    areas = (x2 - x1).clip(0) * (y2 - y1).clip(0)

    def overlaps(p: np.ndarray, q: np.ndarray) -> np.ndarray:  # IoU(p, q) > iou (so the same class)
        w = np.minimum(x2[p, None], x2[q]) - np.maximum(x1[p, None], x1[q])
        inter = w.clip(0, out=w)
        inter *= (np.minimum(y2[p, None], y2[q]) - np.maximum(y1[p, None], y1[q])).clip(0)
        return inter * (1 + iou) > iou * (areas[p, None] + areas[q])  # inter / (a + b - inter) > iou

    kept = np.zeros(0, np.int64)
    for start in range(0, len(order), block):
        head = np.arange(start, min(start + block, len(order)))
        if kept.size:
            head = head[~overlaps(kept, head).any(0)]
        suppresses = overlaps(head, head) & _upper(block)[: len(head), : len(head)]  # [j, i]: j better, overlaps i
        live = np.ones(len(head), bool)
        while not np.array_equal(settled := ~(suppresses & live[:, None]).any(0), live):
            live = settled
        kept = np.concatenate([kept, head[live]])
        if len(kept) >= max_det:
            break
    return order[kept[:max_det]]


@lru_cache(maxsize=4)
def _upper(n: int) -> np.ndarray:
    """Strictly upper-triangular n x n: box j comes before box i."""
    return np.triu(np.ones((n, n), bool), 1)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of (n, 4) and (m, 4) x1 y1 x2 y2 boxes: (n, m)."""
    a, b = np.asarray(a, np.float64)[:, None, :4], np.asarray(b, np.float64)[None, :, :4]
    w = (np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0])).clip(0)
    h = (np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1])).clip(0)
    inter = w * h
    area_a = (a[..., 2] - a[..., 0]).clip(0) * (a[..., 3] - a[..., 1]).clip(0)
    area_b = (b[..., 2] - b[..., 0]).clip(0) * (b[..., 3] - b[..., 1]).clip(0)
    return inter / np.maximum(area_a + area_b - inter, 1e-9)
