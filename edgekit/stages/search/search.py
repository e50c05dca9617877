"""Accuracy-aware int8: quantize, measure against FP32, and if the budget is missed search for one that meets it.

The search is a fixed sequence of steps, so its verdict does not depend on how busy the machine is:
1. every other calibration setting of the target (Backend.calibration_variants: SmoothQuant, percentile /
   entropy / histogram ranges, ...) - no layer leaves int8 (edgekit.stages.search.variants);
2. per-layer float fallback, when the target can keep layers in float: layers ranked by the SQNR
   their int8 activations lose on the target's own model (Backend.layer_sensitivity), the top
   `gain_candidates` measured one by one in float, then 1, 2, 4... kept in float (at most
   `max_float_layers`) and bisected to the fewest that meet the budget (edgekit.stages.search.fallback).
The first step that meets the budget ends it. Wall time (`time_limit_s`) is only a safety net: when it
stops a search, the result says so. Every step is recorded (float layers, accuracy, latency) in the
artifact's provenance.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import time
from pathlib import Path

from edgekit.backends.base import QuantOptions
from edgekit.core.artifact import Artifact
from edgekit.core.errors import CheckFailedError, InvalidInputError
from edgekit.stages.search.fallback import float_fallback
from edgekit.stages.search.options import BudgetData, Builder, SearchInputs, SearchOptions, SearchResult
from edgekit.stages.search.record import adopt, finish
from edgekit.stages.search.run import Clock, SearchRun, best_step
from edgekit.stages.search.variants import try_calibrations

SEARCH_DIR = ".accuracy-search"


def accuracy_aware_int8(backend, build: Builder, quant: QuantOptions, inputs: SearchInputs, search: SearchOptions,
                        out_dir: Path) -> SearchResult:
    """The int8 artifact in `out_dir` that meets `search`'s budget, or the most accurate one found."""
    with contextlib.redirect_stdout(sys.stderr):  # ONNX Runtime's calibrators print; stdout is for --json
        return _run(SearchRun(backend, build, inputs, search, Path(out_dir) / SEARCH_DIR, Clock(search.time_limit_s)),
                    quant, Path(out_dir))


def _run(run: SearchRun, quant: QuantOptions, out_dir: Path) -> SearchResult:
    first, quant = _default_int8(run, quant, out_dir)
    if run.steps[0]["met"]:
        return finish(first, run.steps, searched=False, met=True, message="budget met by the default int8; no search")
    try:
        best = _search(run, quant)
        chosen = run.steps[best]
        artifact = first if best == 0 else adopt(chosen["_artifact"], out_dir)
    finally:
        shutil.rmtree(run.work, ignore_errors=True)
    if chosen["met"]:
        tried = sum(1 for s in run.steps[1:] if not s.get("skipped"))
        kept = ", ".join(chosen["float_layers"]) or "none"
        message = f"budget met after {tried} search step(s) with {chosen['step']} (float layers: {kept})"
    else:
        why = (f"stopped by the {run.search.time_limit_s:g} s safety-net time limit, so a rerun may end elsewhere"
               if run.clock.out() else "no step of the search met it")
        message = (f"accuracy budget not met ({why}); kept the most accurate int8 found ({chosen['step']}): "
                   + "; ".join(chosen["violations"]))
    return finish(artifact, run.steps, searched=True, met=chosen["met"], message=message, chosen=best,
                  ended_by="time limit" if run.clock.out() else "steps")


def _default_int8(run: SearchRun, quant: QuantOptions, out_dir: Path) -> tuple[Artifact, QuantOptions]:
    """The first step: the int8 of the given options, built in the output folder and measured."""
    start = time.perf_counter()
    try:
        first = run.build(quant, out_dir)
    except CheckFailedError:  # an int8 the target refuses (TFLite: one output for all samples): measure it instead
        measurable = run.backend.measurable_quant_options(quant)
        if measurable is None:
            raise
        quant = measurable
        first = run.build(quant, out_dir)
    run.steps.append({**run.measure("default int8", first, quant, ()),
                      "build_seconds": round(time.perf_counter() - start, 2)})
    return first, quant


def _search(run: SearchRun, quant: QuantOptions) -> int:
    """Runs the steps (appending to `run.steps`); returns the index of the step to keep."""
    met = try_calibrations(run, quant) if run.search.calibration_search else None
    if met is not None:
        return met
    base_step = run.steps[best_step(run.steps, base_only=True)]  # layers fall back from the best calibration
    if not run.backend.supports_float_fallback:
        run.skip(f"per-layer float fallback is not available for {run.backend.name}")
        return best_step(run.steps)
    if run.clock.out():
        return best_step(run.steps)
    return float_fallback(run, base_step, base_step.get("_quant", quant))


def quantize_with_budget(backend, source: Artifact, data: BudgetData, quant: QuantOptions, out_dir: Path,
                         search: SearchOptions, profile=None) -> SearchResult:
    """`edgekit quantize --accuracy-budget`: the budget is measured against the FP32 ONNX `data.reference`
    (`source` itself when that is the ONNX; the tflite target quantizes a .pt2 and needs one given)."""
    from edgekit.stages.task_choice import TaskChoice
    from edgekit.stages.validate import reference_outputs

    reference = data.reference or source
    if reference.format != "onnx" or reference.precision != "fp32":
        raise InvalidInputError(f"--accuracy-budget measures against an FP32 ONNX model, got {reference.format}",
                                hint="pass --reference model.onnx (edgekit export writes one next to the .pt2)")
    ref_outputs = reference_outputs(reference, data.val, task=data.task or TaskChoice())

    def build(q: QuantOptions, folder: Path) -> Artifact:
        return backend.quantize(source, data.calib, q, folder)

    inputs = SearchInputs(reference, source, data.calib, data.val, ref_outputs,
                          profile.threads() if profile else None, profile)
    return accuracy_aware_int8(backend, build, quant, inputs, search, Path(out_dir))
