"""Latency harness: warm-up, then run until a minimum count and a minimum duration are both met."""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass

import numpy as np

from edgekit.core.progress import progress_iter

CV_WARNING = 0.05


@dataclass(frozen=True)
class BenchOptions:
    warmup: int = 10
    min_runs: int = 50
    min_seconds: float = 2.0
    max_runs: int = 100_000
    max_seconds: float = 120.0
    batch: int = 1


def bench_runner(runner, feed: dict, options: BenchOptions, probe=None) -> tuple[dict, list[float]]:
    """Time `runner.infer(feed)`; returns the latency block and the raw samples (ms).

    `probe` (optional) is called right after each timed run: a fixed reference workload that times
    itself (gate.SpeedProbe), so `check` can tell a slower model from a busier machine.
    """
    start = time.perf_counter()
    runner.infer(feed)
    first_ms = (time.perf_counter() - start) * 1e3
    for _ in progress_iter(range(options.warmup), total=options.warmup, description="warm-up"):
        runner.infer(feed)
    samples: list[float] = []
    infer, clock = runner.infer, time.perf_counter
    began = clock()
    while True:
        t0 = clock()
        infer(feed)
        t1 = clock()
        samples.append((t1 - t0) * 1e3)
        if probe is not None:
            probe()
        elapsed = clock() - began
        if len(samples) >= options.min_runs and elapsed >= options.min_seconds:
            break
        if len(samples) >= options.max_runs or elapsed >= options.max_seconds:
            break
    block = latency_stats(samples)
    block.update(
        warmup=options.warmup, first_ms=round(first_ms, 3), load_ms=round(getattr(runner, "load_ms", 0.0), 3),
        peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        batch=options.batch,
    )
    return block, samples


def latency_stats(samples: list[float]) -> dict:
    a = np.asarray(samples)
    mean = float(a.mean())
    std = float(a.std(ddof=1)) if len(a) > 1 else 0.0
    pct = np.percentile(a, [50, 90, 95, 99])
    return {
        "p50": round(float(pct[0]), 4), "p90": round(float(pct[1]), 4), "p95": round(float(pct[2]), 4),
        "p99": round(float(pct[3]), 4), "mean": round(mean, 4), "std": round(std, 4),
        "min": round(float(a.min()), 4), "max": round(float(a.max()), 4),
        "cv": round(std / mean, 4) if mean > 0 else 0.0, "runs": len(a),
    }


def cv_warning(block: dict) -> str | None:
    if block.get("cv", 0) > CV_WARNING:
        return (f"latency varies a lot (cv {block['cv']:.1%} > {CV_WARNING:.0%}): "
                "the machine is busy or throttling; compare medians with care")
    return None


def bench_artifact(artifact, threads: int | None, options: BenchOptions, profile=None, feed=None) -> dict:
    """Python API of `edgekit bench`: load the artifact on its target and time it."""
    from edgekit.backends.registry import get_backend
    from edgekit.core.tensors import random_feed
    from edgekit.stages.validate import target_for_format

    backend = get_backend(artifact.target or target_for_format(artifact.format))
    with backend.runner(artifact, threads, profile) as runner:
        feed = feed or random_feed(runner.input_specs, batch=options.batch)
        block, _ = bench_runner(runner, feed, options)
        block["threads"] = threads
        if hasattr(runner, "timing_report"):  # TensorRT: GPU compute, H2D/D2H, throughput (trtexec-style)
            block["device_timing"] = runner.timing_report(skip=1 + options.warmup)
        if runner.effective_precision:
            block["effective_precision"] = runner.effective_precision
    return block
