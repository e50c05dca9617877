"""A user's own post-processing and metric: `--task my_pkg.metrics:score` or `--task metrics.py:score`.

The callable receives `(fp32_outputs, candidate_outputs)`, both per-sample lists of per-output float
arrays in the model's output order (and `truth=` too when it takes a third argument), and returns
named numbers: `{"f1": 0.91, "cer": 0.03}` (a bare number is named after the callable). The first
one is the task metric, higher is better and a fraction, so `drop` is in points; its `reference`
is the callable's answer for the FP32 outputs against themselves.
"""

from __future__ import annotations

import inspect
import math
import numbers
from typing import Callable, Sequence

from edgekit.core.errors import InvalidInputError
from edgekit.core.user_code import import_attribute
from edgekit.tasks.base import Outputs, Task, check_pairs, result, rounded, task_metric
from edgekit.tasks.generic import output_metrics


def is_callable_spec(spec: str) -> bool:
    module, sep, attr = spec.rpartition(":")
    return bool(sep and module and attr)


def load_callable(spec: str) -> Callable:
    """`package.module:name` or `path/to/file.py:name` -> the callable; InvalidInputError naming what failed."""
    fn, module_part, attr = import_attribute(spec, "task", "task module")
    if not callable(fn):
        raise InvalidInputError(f"task '{spec}': '{module_part}' has no callable '{attr}'")
    return fn


def takes_truth(fn: Callable) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 3 or any(p.name == "truth" or p.kind == p.VAR_KEYWORD for p in params)


class UserTask(Task):
    """A task whose metric is a user's callable."""

    metric_name = ""

    def __init__(self, spec: str, fn: Callable | None = None):
        self.spec = spec
        self.fn = fn or load_callable(spec)
        self.name = spec

    def __repr__(self) -> str:
        return f"UserTask({self.spec!r})"

    def call(self, fp32: Outputs, candidate: Outputs, truth) -> dict[str, float]:
        """The callable's named numbers, checked: one-line InvalidInputError naming the callable."""
        try:
            got = self.fn(fp32, candidate, truth=truth) if takes_truth(self.fn) else self.fn(fp32, candidate)
        except Exception as e:
            first = str(e).splitlines()[0] if str(e) else ""
            raise InvalidInputError(f"task callable {self.spec} raised {type(e).__name__}: {first}".rstrip(": ")) from e
        if isinstance(got, numbers.Real) and not isinstance(got, bool):
            got = {self.spec.rpartition(":")[2]: got}
        if not isinstance(got, dict) or not got:
            raise InvalidInputError(f"task callable {self.spec} returned {type(got).__name__}, "
                                    "expected a dict of named numbers such as {'f1': 0.9}")
        out = {}
        for key, value in got.items():
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
                raise InvalidInputError(f"task callable {self.spec} returned {key!r}: {value!r}, "
                                        "expected a finite number")
            out[str(key)] = float(value)
        return out

    def evaluate(self, reference: Outputs, candidate: Outputs, output_names: Sequence[str], truth=None) -> dict:
        check_pairs(reference, candidate, output_names)
        got = self.call(reference, candidate, truth)
        ref = self.call(reference, reference, truth)
        name = next(iter(got))
        metrics = {k: rounded(v) for k, v in got.items()}
        metrics["reference"] = {k: rounded(v) for k, v in ref.items()}
        metrics["outputs"] = output_metrics(reference, candidate, output_names)
        return result(self.name, task_metric(name, got[name], ref.get(name), got[name]), metrics)
