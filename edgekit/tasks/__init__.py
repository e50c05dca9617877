"""Task-aware accuracy: what an int8 or compiled model lost, in the units of its task.

    task = get_task("detect")                      # or guess_task(shapes, names)[0], or "pkg.mod:fn"
    task.check(output_shapes, output_names)        # fail early, naming the output
    res = task.evaluate(ref.outputs, outs, ref.output_names, truth)
    res["task_metric"]   # {"name": "map50", "value", "reference", "drop" (points), "vs_fp32"}

Tasks: classify (top-1/top-5 agreement; accuracy with labels), detect (YOLO heads, pycocotools
mAP vs FP32 detections and ground truth), segment (mIoU, pixel agreement), embed (cosine,
nearest-neighbour agreement, recall@k), generic (per-output cosine, SQNR, errors), and a user's
callable. Ground-truth readers (YOLO txt, COCO json, masks) are in `edgekit.tasks.labels`.
This package imports only edgekit.core and numpy; pycocotools is imported when mAP is computed.
"""

from __future__ import annotations

from edgekit.core.errors import InvalidInputError
from edgekit.tasks.base import Outputs, Task
from edgekit.tasks.classify import CONFIDENT_PROB, ClassifyTask
from edgekit.tasks.detect import DetectOptions, DetectTask
from edgekit.tasks.embed import EmbedTask
from edgekit.tasks.generic import GenericTask, output_metrics
from edgekit.tasks.guess import guess_task
from edgekit.tasks.labels import detection_truth, mask_truth, read_coco_labels, read_masks, read_yolo_labels
from edgekit.tasks.segment import SegmentTask
from edgekit.tasks.user import UserTask, is_callable_spec

TASKS = {"classify": ClassifyTask, "detect": DetectTask, "segment": SegmentTask, "embed": EmbedTask,
         "generic": GenericTask}
TASK_NAMES = tuple(TASKS)


def get_task(spec: str) -> Task:
    """A built-in task by name, or a user's callable as `package.module:function` / `file.py:function`."""
    spec = (spec or "").strip()
    if spec.lower() in TASKS:
        return TASKS[spec.lower()]()
    if is_callable_spec(spec):
        return UserTask(spec)
    raise InvalidInputError(f"unknown task '{spec}'",
                            hint=f"one of {', '.join(TASK_NAMES)}, or a callable as my_pkg.metrics:score")


__all__ = [
    "CONFIDENT_PROB", "TASKS", "TASK_NAMES", "ClassifyTask", "DetectOptions", "DetectTask", "EmbedTask",
    "GenericTask", "Outputs", "SegmentTask", "Task", "UserTask", "detection_truth", "get_task", "guess_task",
    "mask_truth", "output_metrics", "read_coco_labels", "read_masks", "read_yolo_labels",
]
