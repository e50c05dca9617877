"""Latency harness: warm-up, then run until a minimum count and a minimum duration are both met.

Wherever a model ran (here, or on a device whose runner sends back its raw samples), its numbers
become one `Timing`, and `latency_block` turns that into the `latency_ms` block of every report,
so a device row and a host row mean the same thing.
"""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass

from edgekit.core.latency import compact_samples, latency_stats
from edgekit.core.machine_busy import cpu_snapshot, others_share
from edgekit.core.progress import progress_iter


@dataclass(frozen=True)
class BenchOptions:
    warmup: int = 10
    min_runs: int = 50
    min_seconds: float = 2.0
    max_runs: int = 100_000
    max_seconds: float = 120.0
    batch: int = 1


@dataclass(frozen=True)
class Timing:
    """One benchmark's raw measurement, wherever it ran."""

    samples_ms: list[float]
    first_ms: float
    load_ms: float
    peak_rss_mb: float
    effective_precision: str | None = None  # what really ran, when it differs from the artifact
    device_timing: dict | None = None  # the runner's own timings (TensorRT: GPU compute, copies)
    probe_ms: list[float] | None = None  # the machine-speed probe timed after each run (speedprobe.py)
    machine_busy: float | None = None  # share of the machine other processes used meanwhile (machine_busy.py)


def time_runner(runner, feed: dict | None, options: BenchOptions, probe=None) -> Timing:
    """Time `runner.infer(feed)` (default feed: random values of the runner's inputs).

    `probe` (optional) is called right after each timed run: a fixed reference workload that times
    itself (edgekit.core.speedprobe.SpeedProbe), so `check` can tell a slower model from a busier machine.
    """
    from edgekit.core.tensors import random_feed

    feed = feed if feed is not None else random_feed(runner.input_specs, batch=options.batch)
    runner.reset_timings()  # device timings of the timed runs only
    start = time.perf_counter()
    runner.infer(feed)
    first_ms = (time.perf_counter() - start) * 1e3
    for _ in progress_iter(range(options.warmup), total=options.warmup, description="warm-up"):
        runner.infer(feed)
    samples: list[float] = []
    infer, clock = runner.infer, time.perf_counter
    cpu_before = cpu_snapshot()
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
    busy = others_share(cpu_before, cpu_snapshot())
    return Timing(samples, first_ms, runner.load_ms,
                  resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, runner.effective_precision,
                  runner.timing_report(skip=1 + options.warmup), probe.samples if probe is not None else None,
                  busy)


def run_block(timing: Timing, options: BenchOptions) -> dict:
    """Percentiles and the run's own numbers: the part of the latency block that needs no context."""
    block = latency_stats(timing.samples_ms)
    block.update(warmup=options.warmup, first_ms=round(timing.first_ms, 3), load_ms=round(timing.load_ms, 3),
                 peak_rss_mb=round(timing.peak_rss_mb, 1), batch=options.batch)
    return block


def latency_block(timing: Timing, options: BenchOptions, threads: int | None, where: str) -> dict:
    """The `latency_ms` block of report.json and of `edgekit bench --json`."""
    block = {**run_block(timing, options), "threads": threads, "where": where}
    if timing.device_timing:
        block["device_timing"] = timing.device_timing
    if timing.effective_precision:
        block["effective_precision"] = timing.effective_precision
    # compact run-ordered subsets: the report's distribution charts and `check`'s noise-aware test
    block["samples"] = compact_samples(timing.samples_ms)
    if timing.probe_ms is not None:
        block["probe_samples"] = compact_samples(timing.probe_ms)
    if timing.machine_busy is not None:
        block["machine_busy"] = timing.machine_busy
    return block


def bench_runner(runner, feed: dict, options: BenchOptions, probe=None) -> tuple[dict, list[float]]:
    """Time a loaded runner: the run's block (no context) and the raw samples (ms)."""
    timing = time_runner(runner, feed, options, probe)
    return run_block(timing, options), timing.samples_ms


def bench_artifact(artifact, threads: int | None, options: BenchOptions, profile=None, feed=None) -> dict:
    """Load the artifact on its target here and time it: the latency block."""
    from edgekit.backends.registry import get_backend, target_for_format

    backend = get_backend(artifact.target or target_for_format(artifact.format))
    where = profile.where() if profile else "host"
    with backend.runner(artifact, threads, profile) as runner:
        return latency_block(time_runner(runner, feed, options), options, threads, where)
