"""Latency of the unpruned and the pruned model on a profile's target, measured side by side.

Fewer MACs do not always mean less time (a runtime may pad odd channel counts, or be bound by
memory or per-op overhead), so both models are exported, compiled for the target and timed.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from edgekit.core.latency import cv_warning
from edgekit.stages.bench import BenchOptions, bench_runner


def latency_before_after(unpruned, pruned, specs, profile_name: str, options: BenchOptions) -> dict:
    """FP32 latency blocks of both models on the profile's target, and the speedup of p50."""
    from edgekit.backends.registry import get_backend, load_profile

    profile = load_profile(profile_name)
    backend = get_backend(profile.runtime.target)
    backend.check_available()
    result = {"profile": profile.name, "target": backend.name, "precision": "fp32", "where": profile.where()}
    with tempfile.TemporaryDirectory(prefix="edgekit-prune-") as tmp:
        for stage, model in (("before", unpruned), ("after", pruned)):
            result[stage] = measure_model(model, specs, backend, profile, Path(tmp) / stage, options)
    result["speedup"] = round(result["before"]["p50"] / result["after"]["p50"], 3)
    warnings = [w for w in (cv_warning(result["before"]), cv_warning(result["after"])) if w]
    if warnings:
        result["warnings"] = warnings[:1]
    return result


def measure_model(model, specs, backend, profile, folder: Path, options: BenchOptions) -> dict:
    """Export to ONNX, compile for the backend at FP32, run the benchmark harness."""
    from edgekit.backends.base import CompileOptions
    from edgekit.core.tensors import random_feed
    from edgekit.stages.export import ExportOptions, export_onnx

    folder.mkdir(parents=True, exist_ok=True)
    onnx_art = export_onnx(model, folder / "model.onnx", ExportOptions(inputs=tuple(specs)))
    artifact = backend.compile(onnx_art, profile, folder, CompileOptions("fp32", tuple(specs),
                                                                         dict(profile.runtime.options)))
    with backend.runner(artifact, profile.threads(), profile) as runner:
        feed = random_feed(runner.input_specs, batch=options.batch)
        block, _ = bench_runner(runner, feed, options)
        block["threads"] = profile.threads()
        if runner.effective_precision:
            block["effective_precision"] = runner.effective_precision
    return block
