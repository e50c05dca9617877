"""Which task an accuracy block is judged in: `--task` (or a profile's / edgekit.toml's `task`), else
guessed from the FP32 outputs; its ground truth (classify labels, detection labels, masks)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekit.core.console import note
from edgekit.tasks import ClassifyTask, Task, detection_truth, get_task, guess_task, mask_truth
from edgekit.tasks.embed import token_masks


@dataclass(frozen=True)
class TaskChoice:
    spec: str | None = None  # a task name or pkg.mod:fn; None: guessed from the FP32 outputs
    labels: str | None = None  # detection labels for detect: a YOLO labels folder or a COCO json
    masks: str | None = None  # class-id masks folder for segment


def is_detection_labels(labels) -> bool:
    """A YOLO labels folder or a COCO json (detection), as opposed to a FILENAME LABEL file (classify)."""
    return labels is not None and (Path(labels).is_dir() or Path(labels).suffix.lower() == ".json")


def load_task(spec: str | None) -> Task | None:
    """The given task, loaded now so an unknown name or a callable that does not import fails before any work."""
    return get_task(spec) if spec else None


def attach_task(ref, data, choice: TaskChoice | None, task: Task | None = None) -> None:
    """Set the task, its source and ground truth on ReferenceOutputs `ref`, and print the choice (stderr).

    The task is tried once on the FP32 outputs (Task.prepare), so a head that does not fit, labels
    that do not fit or a callable that raises fail here, before any candidate is built or measured."""
    choice = choice or TaskChoice()
    shapes = [np.shape(o) for o in ref.outputs[0]] if ref.outputs else []
    if task is None and choice.spec:
        task = get_task(choice.spec)
    if task is not None:
        source, reason = "given", ""
        task.check(shapes, ref.output_names)
    else:
        name, reason = guess_task(shapes, ref.output_names)
        task, source = get_task(name), "guessed"
    ref.task, ref.task_source, ref.task_reason = task, source, reason
    ref.truth = task_truth(task, ref, data, choice)
    note(f"task: {task.name}" + (f" (guessed: {reason})" if source == "guessed" else " (given)"))
    if ref.outputs:
        task.prepare(ref.outputs, ref.output_names, ref.truth)


def task_truth(task: Task, ref, data, choice: TaskChoice):
    if isinstance(task, ClassifyTask):
        return ref.labels if ref.labels and all(label is not None for label in ref.labels) else None
    if task.name == "detect":
        return detection_truth(data, choice.labels if is_detection_labels(choice.labels) else None)
    if task.name == "segment":
        return mask_truth(data, choice.masks)
    if task.name == "embed":
        return token_masks(data)
    return None
