"""The task interface and the result every task returns.

A task judges a candidate's outputs (an int8 or compiled model) against the FP32 reference outputs
of the same samples, in the task's own units. Both are per-sample lists of per-output float arrays in
`output_names` order, exactly what `edgekit.stages.validate` collects (`ReferenceOutputs.outputs` and
`run_outputs()`). `evaluate` returns a JSON-able dict:

    {"task": "detect",
     "task_metric": {"name": "map50", "value": .., "reference": .., "drop": .., "vs_fp32": ..},
     "metrics": {...task specific..., "outputs": {name: per-output metrics}}}

`value` is the candidate's metric (against ground truth when given, else against the FP32 outputs
used as pseudo ground truth), `reference` the FP32 model's, `drop` = (reference - value) x 100 in
points, and `vs_fp32` the candidate's metric against the FP32 outputs whatever the ground truth.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from edgekit.core.errors import InvalidInputError

Outputs = Sequence[Sequence[np.ndarray]]  # per sample, per output


class Task:
    """A task metric; subclasses set `name` and `metric_name` and implement `evaluate`."""

    name = "task"
    metric_name = ""

    def check(self, output_shapes: Sequence[Sequence[int | None]], output_names: Sequence[str]) -> None:
        """Raise InvalidInputError naming the output when the model's outputs cannot serve this task.

        Cheap, from shapes only, so a command can fail before it converts or runs anything."""

    def evaluate(self, reference: Outputs, candidate: Outputs, output_names: Sequence[str], truth=None) -> dict:
        raise NotImplementedError

    def prepare(self, reference: Outputs, output_names: Sequence[str], truth=None) -> None:
        """Try the task on the FP32 outputs, so a head, labels or callable that does not fit fails before
        any candidate is built. A task that caches its FP32 side does only that part here."""
        self.evaluate(reference, reference, output_names, truth)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def result(task: str, metric: dict, metrics: dict) -> dict:
    return {"task": task, "task_metric": metric, "metrics": metrics}


def task_metric(name: str, value: float | None, reference: float | None, vs_fp32: float | None) -> dict:
    """The task_metric block; `drop` in points (x100), None when either side is unknown."""
    drop = None if value is None or reference is None else round((reference - value) * 100, 3)
    return {"name": name, "value": rounded(value), "reference": rounded(reference), "drop": drop,
            "vs_fp32": rounded(vs_fp32)}


def rounded(x, digits: int = 6) -> float | None:
    """A float for JSON: rounded; None for missing, NaN or infinite values."""
    if x is None:
        return None
    x = float(x)
    return round(x, digits) if math.isfinite(x) else None


def check_pairs(reference: Outputs, candidate: Outputs, output_names: Sequence[str]) -> None:
    """Both sides hold the same samples, each with one array per output name."""
    if len(reference) != len(candidate):
        raise InvalidInputError(f"the candidate has {len(candidate)} samples, the FP32 reference {len(reference)}")
    if not reference:
        raise InvalidInputError("no samples to evaluate")
    for side, outs in (("FP32 reference", reference), ("candidate", candidate)):
        if any(len(s) != len(output_names) for s in outs):
            raise InvalidInputError(f"the {side} does not give one array per output {list(output_names)}")


def shape_text(shape: Sequence[int | None]) -> str:
    return "x".join("?" if d is None else str(d) for d in shape) or "scalar"


def squeezed(shape: Sequence[int | None]) -> tuple[int | None, ...]:
    """The shape without a leading batch axis of 1 (or dynamic)."""
    shape = tuple(shape)
    return shape[1:] if len(shape) > 1 and shape[0] in (1, None) else shape


def stack_output(outs: Outputs, index: int, dtype=np.float32) -> np.ndarray:
    """One output over all samples as (samples, values)."""
    return np.stack([np.asarray(s[index], dtype).reshape(-1) for s in outs])


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine of two flat arrays; two zero arrays agree (1), one zero array does not (0)."""
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        return 1.0 if na == nb else 0.0
    return float(np.dot(a, b) / (na * nb))


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine of two (samples, values) arrays; two zero rows agree (1), one zero row does not (0)."""
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    dots = np.einsum("ij,ij->i", a, b)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = dots / (na * nb)
    both_zero, one_zero = (na == 0) & (nb == 0), (na == 0) ^ (nb == 0)
    return np.where(both_zero, 1.0, np.where(one_zero, 0.0, cos))


def softmax(x: np.ndarray) -> np.ndarray:
    # logits or probabilities alike: softmax of already-normalised probabilities keeps the argmax
    e = np.exp(x - x.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)
