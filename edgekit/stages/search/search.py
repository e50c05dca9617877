"""Accuracy-aware int8: quantize, measure against FP32, and if the budget is missed search for one that meets it.

The search, within a time bound:
1. other calibration settings of the target (edgekit.stages.search.variants: SmoothQuant, percentile /
   entropy / histogram ranges, ...) - no layer leaves int8;
2. per-layer float fallback: layers ranked by the SQNR their int8 activations lose
   (edgekit.onnx.sensitivity on the int8 Q/DQ ONNX itself; edgekit.stages.inspect on the OpenVINO IR;
   edgekit.backends.tflite.sensitivity on the .tflite), the top few re-ranked by the accuracy each gains
   kept in float alone, then the worst 1, 2, 4... kept in float (a layer's producer and consumers,
   so the tensor itself stays float) until the budget is met, then the fewest found by bisection.
Every step is recorded (float layers, accuracy, latency) in the artifact's provenance.
"""

from __future__ import annotations

import contextlib
import glob
import shutil
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from edgekit.backends.base import QuantOptions
from edgekit.core.artifact import Artifact
from edgekit.core.atomic import atomic_path
from edgekit.core.console import warn
from edgekit.core.errors import CheckFailedError, EdgekitError, InvalidInputError
from edgekit.stages.bench import BenchOptions, bench_runner
from edgekit.stages.budgets import accuracy_drop, accuracy_violations
from edgekit.stages.search.variants import ONNX_NAMED_TARGETS, calibration_variants
from edgekit.stages.validate import compare, run_outputs

SEARCH_DIR = ".accuracy-search"
QUICK_BENCH = BenchOptions(warmup=3, min_runs=20, min_seconds=0.3, max_seconds=5.0)


@dataclass(frozen=True)
class SearchOptions:
    max_drop: float | None = None  # points (edgekit.pipeline.deploy.accuracy_drop)
    min_agreement: float | None = None  # top-1 agreement, 0..1
    min_cosine: float | None = None  # mean logit cosine vs FP32
    time_limit_s: float = 240.0
    max_float_layers: int = 16  # nodes kept in float at most
    calibration_search: bool = True
    sensitivity_samples: int = 8  # ranking cost grows with it: 15 s for 8 EfficientNet-Lite0 crops on two busy cores
    gain_candidates: int = 4  # top SQNR-ranked layers also measured one at a time in float, time allowing

    def violations(self, acc: dict) -> list[str]:
        return accuracy_violations(acc, self.min_agreement, self.max_drop, self.min_cosine)


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


def accuracy_aware_int8(backend, build: Builder, quant: QuantOptions, reference: Artifact, calib, val, ref_outputs,
                        search: SearchOptions, out_dir: Path, threads: int | None = None, profile=None,
                        source: Artifact | None = None) -> SearchResult:
    """The int8 artifact in `out_dir` that meets `search`'s budget, or the most accurate one found.

    `reference` is the FP32 ONNX; `source` what the target converts from when that differs (tflite: .pt2).
    """
    with contextlib.redirect_stdout(sys.stderr):  # ONNX Runtime's calibrators print; stdout is for --json
        return _run(backend, build, quant, reference, calib, val, ref_outputs, search, Path(out_dir), threads, profile,
                    source or reference)


def _run(backend, build, quant, reference, calib, val, ref_outputs, search, out_dir, threads, profile,
         source) -> SearchResult:
    clock = _Clock(search.time_limit_s)
    measure = _Measure(backend, val, ref_outputs, threads, profile, search)
    start = time.perf_counter()
    try:
        first = build(quant, out_dir)
    except CheckFailedError:  # TFLite refuses an int8 model with one output for all samples: measure it instead
        if backend.name != "tflite":
            raise
        from edgekit.backends.tflite.backend import REFUSE_CONSTANT_OUTPUT

        quant = replace(quant, extra={**quant.extra, REFUSE_CONSTANT_OUTPUT: False})
        first = build(quant, out_dir)
    steps = [{**measure.step("default int8", first, quant, ()), "build_seconds": round(time.perf_counter() - start, 2)}]
    if steps[0]["met"]:
        return _finish(first, steps, searched=False, met=True, message="budget met by the default int8; no search")
    work = out_dir / SEARCH_DIR
    try:
        best = _search(backend, build, quant, (reference, source), calib, search, work, steps, measure, clock)
        chosen = steps[best]
        artifact = first if best == 0 else _adopt(chosen["_artifact"], out_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if chosen["met"]:
        tried = sum(1 for s in steps[1:] if not s.get("skipped"))
        kept = ", ".join(chosen["float_layers"]) or "none"
        message = f"budget met after {tried} search step(s) with {chosen['step']} (float layers: {kept})"
    else:
        why = "time limit reached" if clock.out() else "no step met it"
        message = (f"accuracy budget not met ({why}); kept the most accurate int8 found ({chosen['step']}): "
                   + "; ".join(chosen["violations"]))
    return _finish(artifact, steps, searched=True, met=chosen["met"], message=message, chosen=best)


def _search(backend, build, quant, models, calib, search, work, steps, measure, clock) -> int:
    """Runs the steps (appending to `steps`); returns the index of the step to keep."""
    variants = calibration_variants(backend.name, quant, models[0].path) if search.calibration_search else []
    for variant in variants:
        if clock.out():
            break
        cost = variant.pop("_cost", 1) * (steps[0].get("build_seconds") or 0.0)
        settings = {**variant.get("extra", {}), **{k: v for k, v in variant.items() if k not in ("extra", "exclude")}}
        label = "calibration " + ", ".join(f"{k}={v}" for k, v in settings.items())
        if cost > clock.left():  # a slow calibration that cannot finish in time is not started
            steps.append({"step": f"{label} skipped: about {cost:.0f} s, more than the time left",
                          "skipped": True, "met": False, "float_layers": [], "violations": []})
            continue
        candidate = _apply(quant, variant)
        if variant.get("exclude"):
            label = f"{' and '.join(variant['exclude'])} in float, {label}"
        step = _try(build, candidate, work / f"step-{len(steps)}", label, variant.get("exclude", ()), measure)
        steps.append(step)
        if step["met"]:
            return len(steps) - 1
    base_step = steps[_best(steps, base_only=True)]  # layers fall back from the best calibration
    base = base_step.get("_quant", quant)
    if backend.name not in (*ONNX_NAMED_TARGETS, "tflite"):
        steps.append({"step": f"per-layer float fallback is not available for {backend.name}", "skipped": True,
                      "met": False, "float_layers": [], "violations": []})
        return _best(steps)
    if clock.out():
        return _best(steps)
    ranked = _ranked_groups(backend, base_step.get("_artifact"), base, models, calib, search, work, steps)
    unknown: set[str] = set()
    ranked, single, measured = _rerank_by_gain(build, base, base_step, ranked, work, steps, measure, clock, unknown,
                                               search)
    if single is not None:  # one layer in float already meets the budget
        return single
    counts = _counts(ranked, search.max_float_layers)
    lo, hi = 0, None  # groups: lo known too few, hi known enough
    if measured:  # the best group alone was measured: not enough
        counts, lo = [k for k in counts if k > 1], 1
    for k in counts:
        if clock.out():
            break
        step = _fallback_step(build, base, ranked[:k], work / f"step-{len(steps)}", measure, unknown)
        steps.append(step)
        if step["met"]:
            hi = k
            break
        lo = k
    while hi is not None and hi - lo > 1 and not clock.out():  # fewer float layers run faster
        mid = (lo + hi) // 2
        step = _fallback_step(build, base, ranked[:mid], work / f"step-{len(steps)}", measure, unknown)
        steps.append(step)
        lo, hi = (lo, mid) if step["met"] else (mid, hi)
    return _best(steps)


def _ranked_groups(backend, int8: Artifact | None, quant, models, calib, search, work,
                   steps) -> list[tuple[str, ...]]:
    """Float-fallback units, most sensitive first: node groups that keep one tensor in float."""
    reference, source = models
    sample = _Limited(calib, search.sensitivity_samples)
    if backend.name == "tflite":  # ranked on the .tflite itself, named by TFLite op outputs
        from edgekit.backends.tflite.sensitivity import float_tflite, tflite_layer_errors

        rows = tflite_layer_errors(float_tflite(backend, source, reference.inputs, work / "float"), int8, sample,
                                   search.sensitivity_samples)
        names = {r.name for r in rows} | {n for r in rows for n in r.float_nodes}
    elif backend.name == "openvino" and int8 is not None and int8.format == "openvino-ir":
        from edgekit.stages.inspect import inspect_artifact  # on the IR itself, named by OpenVINO ops (ignored_scope)

        rows = inspect_artifact(int8, reference.path, sample, search.sensitivity_samples)
        names = {r.name for r in rows} | {n for r in rows for n in r.float_nodes}
    else:
        from edgekit.onnx.sensitivity import layer_errors

        qdq = _qdq_onnx(int8, quant, reference, calib, work)
        rows = layer_errors(reference.path, qdq, sample, search.sensitivity_samples)
        # ONNX Runtime / TensorRT exclude nodes of their prepared graph (the int8 one's names); OpenVINO
        # resolves names of the reference it converts
        proxy = backend.name not in ("onnxruntime", "tensorrt")
        names = _onnx_node_names(reference.path if proxy else qdq)
    groups, seen = [], set()
    for row in rows:
        if row.sqnr_lost_db <= 0:
            break
        group = tuple(n for n in row.float_nodes if n in names and n not in seen)
        if group:
            groups.append(group)
            seen.update(group)
    steps.append({"step": "sensitivity ranking", "met": False, "float_layers": [], "violations": [],
                  "ranking": [{"name": r.name, "op": r.op, "sqnr_lost_db": r.sqnr_lost_db,
                               "channel_sqnr_db": r.channel_sqnr_db} for r in rows[:10]],
                  "seconds": None, "skipped": True})
    return groups


def _rerank_by_gain(build, base, base_step, ranked, work, steps, measure, clock, unknown,
                    search) -> tuple[list, int | None, bool]:
    """The SQNR ranking's top few, re-ordered by the accuracy each gains kept in float alone.

    SQNR lost says where int8 adds noise, not how much of it reaches the outputs. When the time
    bound has room for it (the base build's time, times the candidates, within a third of what is
    left), each candidate is built with only itself in float and measured. Returns the new ranking,
    the index of a step that already meets the budget (None if none does) and whether any was measured."""
    candidates = [g for g in ranked if len(g) <= search.max_float_layers][:search.gain_candidates]
    build_s = base_step.get("build_seconds") or 0.0
    if len(candidates) < 2 or not build_s or build_s * len(candidates) > clock.left() / 3:
        return ranked, None, False
    gains = {}
    for group in candidates:
        if clock.out():
            return ranked, None, bool(gains)
        step = _fallback_step(build, base, [group], work / f"step-{len(steps)}", measure, unknown)
        step["step"] = f"gain check: {group[0]} in float"
        steps.append(step)
        if step["met"]:
            return ranked, len(steps) - 1, True
        gains[group] = _score(step)
    order = sorted(candidates, key=lambda g: gains.get(g, (False, float("-inf"))), reverse=True)
    return order + [g for g in ranked if g not in gains], None, True


def _qdq_onnx(int8: Artifact | None, quant, reference, calib, work) -> Path:
    """The int8 model as Q/DQ ONNX: the target's own, else an ONNX Runtime proxy of the same graph."""
    if int8 is not None and int8.format == "onnx" and int8.precision == "int8":
        return int8.path
    from edgekit.backends.registry import get_backend

    same = {k: quant.extra[k] for k in ("smooth_quant", "bias_correction") if k in quant.extra}
    proxy_quant = QuantOptions(method=quant.method, per_channel=quant.per_channel, max_samples=quant.max_samples,
                               exclude=(), extra=same)
    ort = get_backend("onnxruntime")
    return ort.quantize(reference, calib, proxy_quant, work / "proxy").path


def _fallback_step(build, quant, groups, folder: Path, measure, unknown: set[str]) -> dict:
    """Build with these groups in float. A name the target cannot resolve (OpenVINO splits an ONNX
    LayerNormalization into ops named otherwise) is dropped, remembered in `unknown`, and the build retried."""
    while True:
        layers = tuple(n for g in groups for n in g if n not in unknown)
        patterns = [glob.escape(n) for n in layers]
        excluded = replace(quant, exclude=tuple(dict.fromkeys((*quant.exclude, *patterns))))
        step = _try(build, excluded, folder, f"{len(layers)} layer(s) in float", layers, measure)
        rejected = [n for n, p in zip(layers, patterns) if step.get("failed") and f"{p}" in step["violations"][0]
                    and "matches no" in step["violations"][0]]
        if not rejected:
            return step
        unknown.add(max(rejected, key=len))  # the longest: a name can contain a shorter one


def _try(build, quant, folder: Path, label: str, layers, measure) -> dict:
    start = time.perf_counter()
    try:
        artifact = build(quant, folder)
    except EdgekitError as e:  # one failed candidate is a recorded step, not the end of the search
        return {"step": label, "met": False, "float_layers": list(layers), "violations": [e.message], "failed": True}
    return {**measure.step(label, artifact, quant, layers), "build_seconds": round(time.perf_counter() - start, 2)}


class _Measure:
    def __init__(self, backend, val, ref_outputs, threads, profile, search: SearchOptions):
        self.backend, self.val, self.ref, self.search = backend, val, ref_outputs, search
        self.threads, self.profile = threads, profile

    def step(self, label: str, artifact: Artifact, quant: QuantOptions, layers) -> dict:
        start = time.perf_counter()
        with self.backend.runner(artifact, self.threads, self.profile) as runner:
            outs = run_outputs(runner, self.val, self.ref.output_names, f"checking {label}")
            feed = next(iter(self.val)).feed
            latency, _ = bench_runner(runner, feed, QUICK_BENCH)
        acc = compare(self.ref, outs)
        violations = self.search.violations(acc)
        drop, _ = accuracy_drop(acc)
        return {"step": label, "method": quant.method, "float_layers": list(layers), "met": not violations,
                "violations": violations, "accuracy_drop": drop, "top1_agreement": acc.get("top1_agreement"),
                "top1_agreement_confident": acc.get("top1_agreement_confident"),
                "cosine_mean": acc.get("cosine_mean"), "latency_p50_ms": round(latency["p50"], 3),
                "seconds": round(time.perf_counter() - start, 2), "_artifact": artifact, "_quant": quant,
                "_accuracy": acc}


def _score(step: dict) -> tuple:
    """Higher is better: met, then smaller drop, then closer logits, then fewer float layers."""
    if step.get("skipped") or step.get("failed"):
        return (False, float("-inf"), float("-inf"), 0)
    drop = step.get("accuracy_drop")
    return (step["met"], -(drop if drop is not None else 0.0), step.get("cosine_mean") or 0.0,
            -len(step["float_layers"]))


def _best(steps: list[dict], base_only: bool = False) -> int:
    pool = [i for i, s in enumerate(steps) if not (base_only and s["float_layers"])]
    met = [i for i in pool if steps[i]["met"]]
    if met:  # of the steps that meet the budget: fewest float layers, then fastest
        return min(met, key=lambda i: (len(steps[i]["float_layers"]), steps[i].get("latency_p50_ms") or 0))
    return max(pool, key=lambda i: _score(steps[i]))


def _counts(groups: list, max_layers: int) -> list[int]:
    """Group counts to try: 1, 2, 4, ... while the float layers stay within the cap."""
    sizes, total, counts, k = [len(g) for g in groups], 0, [], 1
    allowed = 0
    for s in sizes:
        if total + s > max_layers:
            break
        total += s
        allowed += 1
    while k < allowed:
        counts.append(k)
        k *= 2
    if allowed:
        counts.append(allowed)
    return counts


def _apply(quant: QuantOptions, variant: dict) -> QuantOptions:
    changes = {k: v for k, v in variant.items() if k not in ("extra", "exclude")}
    if "exclude" in variant:
        changes["exclude"] = tuple(dict.fromkeys((*quant.exclude, *variant["exclude"])))
    if "extra" in variant:
        changes["extra"] = {**quant.extra, **variant["extra"]}
    return replace(quant, **changes)


def _adopt(artifact: Artifact, out_dir: Path) -> Artifact:
    """Move a search step's files into the output folder, where the default int8 was written."""
    for f in artifact.files():
        with atomic_path(out_dir / f.name) as tmp:
            shutil.copyfile(f, tmp)
    return replace(artifact, path=out_dir / artifact.path.name)


def _finish(artifact: Artifact, steps: list[dict], searched: bool, met: bool, message: str,
            chosen: int = 0) -> SearchResult:
    public = [{k: v for k, v in s.items() if not k.startswith("_")} for s in steps]
    artifact.provenance["accuracy_search"] = {
        "searched": searched, "met": met, "message": message, "chosen_step": chosen,
        "float_layers": public[chosen]["float_layers"], "steps": public,
    }
    artifact.save_sidecar()
    if searched and not met:
        warn(message)
    return SearchResult(artifact, met, searched, public, message, steps[chosen].get("_accuracy"))


def _onnx_node_names(path: Path) -> set[str]:
    from edgekit.core.onnx_model import load_onnx

    return {n.name for n in load_onnx(path, load_external_data=False).graph.node}


class _Clock:
    def __init__(self, limit_s: float):
        self.end = time.monotonic() + limit_s

    def out(self) -> bool:
        return time.monotonic() >= self.end

    def left(self) -> float:
        return max(self.end - time.monotonic(), 0.0)


class _Limited:
    """The first `n` samples of a data source."""

    def __init__(self, data, n: int):
        self.data, self.n = data, min(n, len(data))

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        for i, sample in enumerate(self.data):
            if i >= self.n:
                return
            yield sample


def search_options(budget: float | None, min_agreement: float | None, time_limit_s: float | None = None,
                   max_float_layers: int | None = None, min_cosine: float | None = None) -> SearchOptions:
    if budget is not None and budget < 0:
        raise InvalidInputError(f"--accuracy-budget {budget}: give points of accuracy drop, 0 or more")
    opts = SearchOptions(max_drop=budget, min_agreement=min_agreement, min_cosine=min_cosine)
    if time_limit_s is not None:
        opts = replace(opts, time_limit_s=time_limit_s)
    if max_float_layers is not None:
        opts = replace(opts, max_float_layers=max_float_layers)
    return opts



def search_in_deploy(ctx, backend, build: Builder, quant: QuantOptions, profile, out_dir: Path) -> SearchResult:
    """deploy's int8 under a budget: the search against the run's validation data and FP32 outputs."""
    budget = ctx.options.accuracy_budget
    if budget is None:
        budget = profile.budgets.max_accuracy_drop
    search = search_options(budget, profile.budgets.min_top1_agreement,
                            getattr(ctx.options, "accuracy_search_s", None), min_cosine=profile.budgets.min_cosine)
    return accuracy_aware_int8(backend, build, quant, ctx.reference, ctx.calib, ctx.val, ctx.ref_outputs, search,
                               out_dir, profile.threads(), profile, ctx._source_for(backend))


def quantize_with_budget(backend, source: Artifact, calib, val, quant: QuantOptions, out_dir: Path,
                         search: SearchOptions, profile=None, reference: Artifact | None = None) -> SearchResult:
    """`edgekit quantize --accuracy-budget`: the budget is measured against the FP32 ONNX `reference`
    (`source` itself when that is the ONNX; the tflite target quantizes a .pt2 and needs one given)."""
    from edgekit.backends.registry import get_backend
    from edgekit.stages.validate import run_reference

    reference = reference or source
    if reference.format != "onnx" or reference.precision != "fp32":
        raise InvalidInputError(f"--accuracy-budget measures against an FP32 ONNX model, got {reference.format}",
                                hint="pass --reference model.onnx (edgekit export writes one next to the .pt2)")
    with get_backend("onnxruntime").runner(reference) as ref_runner:
        ref_outputs = run_reference(ref_runner, val, "FP32 reference")

    def build(q: QuantOptions, folder: Path) -> Artifact:
        return backend.quantize(source, calib, q, folder)

    threads = profile.threads() if profile else None
    return accuracy_aware_int8(backend, build, quant, reference, calib, val, ref_outputs, search, Path(out_dir),
                               threads, profile, source)


def print_search(record: dict) -> None:
    """The steps of a search as a table, then its verdict."""
    import click

    from edgekit.core.console import print_table

    rows = []
    for i, s in enumerate(record["steps"]):
        if s.get("skipped"):
            continue
        drop = s.get("accuracy_drop")
        rows.append((("* " if i == record["chosen_step"] else "  ") + s["step"], str(len(s["float_layers"])),
                     "-" if drop is None else f"{drop:.2f}",
                     "-" if s.get("cosine_mean") is None else f"{s['cosine_mean']:.4f}",
                     "-" if s.get("latency_p50_ms") is None else f"{s['latency_p50_ms']:.3f}",
                     "yes" if s["met"] else "no"))
    print_table("accuracy search", ("step", "float layers", "drop (points)", "cosine", "p50 ms", "budget met"), rows)
    if record["float_layers"]:
        click.echo("kept in float: " + ", ".join(record["float_layers"]))
    if record["met"]:  # a missed budget was already said as a warning
        click.echo(record["message"])
