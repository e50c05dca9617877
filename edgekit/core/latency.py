"""Latency statistics: the percentile block every report row carries, its noise warning, compact samples."""

from __future__ import annotations

import numpy as np

CV_WARNING = 0.05
MAX_SAMPLES = 300  # latency samples kept per row in report.json


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


def compact_samples(samples: list[float], limit: int = MAX_SAMPLES) -> list[float]:
    """At most `limit` latency samples (ms), evenly spaced in run order so drift stays visible."""
    if len(samples) > limit:
        step = len(samples) / limit
        samples = [samples[int(i * step)] for i in range(limit)]
    return [round(float(s), 4) for s in samples]
