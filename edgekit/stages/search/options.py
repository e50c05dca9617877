"""What the accuracy-aware int8 search takes and returns."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from edgekit.backends.base import QuantOptions
from edgekit.core.artifact import Artifact
from edgekit.core.errors import InvalidInputError
from edgekit.stages.budgets import accuracy_violations

SAFETY_NET_S = 3600.0


@dataclass(frozen=True)
class SearchOptions:
    max_drop: float | None = None  # points (edgekit.stages.budgets.accuracy_drop)
    min_agreement: float | None = None  # top-1 agreement, 0..1
    min_cosine: float | None = None  # mean logit cosine vs FP32
    min_task_metric: float | None = None  # the task metric's value (0..1)
    min_output_cosine: float | None = None  # every output's mean cosine vs FP32
    # A safety net, not how a search ends: the steps are a fixed sequence (edgekit.stages.search.search), so
    # the same model, data and CPU give the same verdict on a busy machine; this bound only stops a runaway.
    time_limit_s: float = SAFETY_NET_S
    max_float_layers: int = 16  # nodes kept in float at most
    calibration_search: bool = True
    sensitivity_samples: int = 8  # ranking cost grows with it: 15 s for 8 EfficientNet-Lite0 crops on two busy cores
    gain_candidates: int = 4  # top SQNR-ranked layers also measured one at a time in float

    def violations(self, acc: dict) -> list[str]:
        return accuracy_violations(acc, self.min_agreement, self.max_drop, self.min_cosine, self.min_task_metric,
                                   self.min_output_cosine)


@dataclass(frozen=True)
class SearchInputs:
    reference: Artifact  # the FP32 ONNX
    source: Artifact  # what the target converts from (the .pt2 for tflite), else == reference
    calib: object  # data source
    val: object  # data source
    ref_outputs: object  # edgekit.stages.validate.ReferenceOutputs
    threads: int | None = None
    profile: object = None


@dataclass
class SearchResult:
    artifact: Artifact
    met: bool
    searched: bool
    steps: list[dict]
    message: str
    accuracy: dict | None = None  # the kept artifact's, measured on the search's data (edgekit.stages.validate.compare)


# build(quant options, output folder) -> the artifact the target deploys
Builder = Callable[[QuantOptions, Path], Artifact]


def search_options(budget: float | None, budgets=None, time_limit_s: float | None = None,
                   max_float_layers: int | None = None) -> SearchOptions:
    """The search's budget: `budget` points of accuracy drop, and a profile's other accuracy budgets
    (`budgets`, its Budgets: min_top1_agreement, min_cosine, min_task_metric, min_output_cosine) when given."""
    if budget is not None and budget < 0:
        raise InvalidInputError(f"--accuracy-budget {budget}: give points of accuracy drop, 0 or more")
    opts = SearchOptions(max_drop=budget)
    if budgets is not None:
        opts = replace(opts, min_agreement=budgets.min_top1_agreement, min_cosine=budgets.min_cosine,
                       min_task_metric=budgets.min_task_metric, min_output_cosine=budgets.min_output_cosine)
    if time_limit_s is not None:
        opts = replace(opts, time_limit_s=time_limit_s)
    if max_float_layers is not None:
        opts = replace(opts, max_float_layers=max_float_layers)
    return opts


@dataclass(frozen=True)
class BudgetData:
    """The data of `edgekit quantize --accuracy-budget` (edgekit.stages.search.quantize_with_budget)."""

    calib: object  # calibration data source
    val: object  # the data the budget is measured on
    reference: Artifact | None = None  # the FP32 ONNX; None when the quantized source is that ONNX
    task: object = None  # edgekit.stages.task_choice.TaskChoice the budget is judged in (None: guessed)
