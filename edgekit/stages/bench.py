"""Latency harness: warm-up, then run until a minimum count and a minimum duration are both met."""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass

from edgekit.core.latency import latency_stats
from edgekit.core.progress import progress_iter


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






def bench_artifact(artifact, threads: int | None, options: BenchOptions, profile=None, feed=None) -> dict:
    """Python API of `edgekit bench`: load the artifact on its target and time it."""
    from edgekit.backends.registry import get_backend, target_for_format
    from edgekit.core.tensors import random_feed

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
