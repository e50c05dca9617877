"""Accuracy of an artifact against the FP32 reference: agreement, cosine, SQNR, task metric."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgekit.core.progress import progress_iter
from edgekit.tasks.base import cosine
from edgekit.tasks.classify import ClassifyTask, agreement
from edgekit.tasks.generic import output_metrics


@dataclass
class ReferenceOutputs:
    """FP32 reference outputs for a data source, computed once and compared many times."""

    output_names: list[str]
    outputs: list[list[np.ndarray]] = field(default_factory=list)  # per sample, per output
    labels: list[int | None] = field(default_factory=list)
    task: object = None  # an edgekit.tasks.Task (edgekit.stages.task_choice.attach_task); None: classifier numbers only
    task_source: str | None = None  # given | guessed
    task_reason: str = ""
    truth: object = None  # the task's ground truth per sample, or None


def run_reference(runner, data, description: str = "reference") -> ReferenceOutputs:
    ref = ReferenceOutputs(list(runner.output_names))
    for sample in progress_iter(data, total=len(data), description=description):
        out = runner.infer(sample.feed)
        ref.outputs.append([np.asarray(out[n], dtype=np.float32) for n in ref.output_names])
        ref.labels.append(sample.label)
    return ref


def run_outputs(runner, data, ref_names: list[str], description: str = "validating") -> list[list[np.ndarray]]:
    results = []
    for sample in progress_iter(data, total=len(data), description=description):
        out = runner.infer(sample.feed)
        results.append(ordered_outputs(out, ref_names))
    return results


def ordered_outputs(out: dict, ref_names: list[str]) -> list[np.ndarray]:
    """Outputs in the reference's order: by name, or by position when a converter renamed them."""
    if all(n in out for n in ref_names):
        return [np.asarray(out[n], dtype=np.float32) for n in ref_names]
    return [np.asarray(v, dtype=np.float32) for v in list(out.values())[: len(ref_names)]]


def compare(ref: ReferenceOutputs, outs: list[list[np.ndarray]]) -> dict:
    """The accuracy block of report.json."""
    n = len(ref.outputs)
    ref_flat = [np.concatenate([o.ravel() for o in s]) for s in ref.outputs]
    got_flat = [np.concatenate([o.ravel() for o in s]) for s in outs]
    if any(r.shape != g.shape for r, g in zip(ref_flat, got_flat)):
        shapes = (ref_flat[0].shape, got_flat[0].shape)
        return {"samples": n, "error": f"output sizes differ from the reference: {shapes[0]} vs {shapes[1]}"}
    cos = np.array([cosine(r, g) for r, g in zip(ref_flat, got_flat)])
    ref_all, got_all = np.concatenate(ref_flat), np.concatenate(got_flat)
    noise = float(np.sum((ref_all - got_all) ** 2))
    signal = float(np.sum(ref_all**2))
    acc = {
        "samples": n,
        "top1_agreement": None,
        "top5_agreement": None,
        "cosine_mean": round(float(cos.mean()), 6),
        "cosine_min": round(float(cos.min()), 6),
        "sqnr_db": round(10 * np.log10(signal / noise), 2) if noise > 0 else float("inf"),
        "max_abs_err": float(np.max(np.abs(ref_all - got_all))),
        "task_metric": None,
    }
    primary_ref = np.stack([s[0].reshape(-1) for s in ref.outputs])
    primary_got = np.stack([s[0].reshape(-1) for s in outs])
    classifier = ref.task is None or isinstance(ref.task, ClassifyTask)  # never a made-up top-1 for other tasks
    if classifier and primary_ref.shape[1] > 1:  # a classifier-like primary output
        acc.update(agreement(primary_ref, primary_got))
        if all(label is not None for label in ref.labels):
            labels = np.array(ref.labels)
            reference = float(np.mean(primary_ref.argmax(1) == labels))
            value = float(np.mean(primary_got.argmax(1) == labels))
            acc["task_metric"] = {
                "name": "top1_accuracy", "value": round(value, 6), "reference": round(reference, 6),
                "drop": round((reference - value) * 100, 3),  # points
            }
    acc["outputs"] = output_metrics(ref.outputs, outs, ref.output_names)  # a broken output cannot hide behind another
    acc["constant_output"] = bool(n > 1 and np.ptp(primary_got, axis=0).max() == 0 and np.ptp(primary_ref, axis=0).max() > 0)
    if ref.task is not None:
        acc.update(task_block(ref, outs, acc["task_metric"]))
    return acc


def task_block(ref: ReferenceOutputs, outs: list[list[np.ndarray]], classify_metric: dict | None) -> dict:
    """`task`, `task_source`, `task_metric` (the task's units) and `task_metrics` (its other numbers).

    classify keeps today's task_metric: top1_accuracy with labels, none without."""
    res = ref.task.evaluate(ref.outputs, outs, ref.output_names, ref.truth)
    metrics = {k: v for k, v in res["metrics"].items() if k != "outputs"}
    metric = classify_metric if isinstance(ref.task, ClassifyTask) else res["task_metric"]
    block = {"task": res["task"], "task_source": ref.task_source, "task_metric": metric, "task_metrics": metrics}
    if ref.task_reason:
        block["task_reason"] = ref.task_reason
    return block


def reference_outputs(reference, data, threads: int | None = None, task=None) -> ReferenceOutputs:
    """The FP32 reference ONNX (a path or an Artifact) run over the data with ONNX Runtime, once.

    `task`: an edgekit.stages.task_choice.TaskChoice to judge accuracy in a task's units (given or
    guessed from these outputs); None keeps the classifier numbers alone."""
    from edgekit.backends.registry import get_backend
    from edgekit.stages.task_choice import attach_task

    with get_backend("onnxruntime").runner(_as_artifact(reference), threads) as runner:
        ref = run_reference(runner, data, "FP32 reference")
    if task is not None:
        attach_task(ref, data, task)
    return ref


def validate_runner(runner, ref: ReferenceOutputs, data, description: str = "validating") -> dict:
    """The accuracy block of a loaded model against reference outputs of the same data."""
    return compare(ref, run_outputs(runner, data, ref.output_names, description))


def validate_artifact(artifact, reference, data, threads=None, profile=None, task=None) -> dict:
    """Run the artifact and the FP32 reference over the data and compare them.

    `artifact` and `reference` are paths or Artifacts; `data` a path (read with the reference's
    inputs) or a data source.
    """
    from edgekit.backends.registry import get_backend, target_for_format
    from edgekit.core.data import open_data

    artifact, reference = _as_artifact(artifact), _as_artifact(reference)
    if isinstance(data, (str, Path)):
        data = open_data(data, reference.inputs)
    ref = reference_outputs(reference, data, threads, task)
    backend = get_backend(artifact.target or target_for_format(artifact.format))
    with backend.runner(artifact, threads, profile) as runner:
        return validate_runner(runner, ref, data)


def _as_artifact(model):
    from edgekit.core.artifact import Artifact

    return model if isinstance(model, Artifact) else Artifact.load(model)
