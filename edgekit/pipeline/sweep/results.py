"""The sweep's answer per profile: every point with its budget verdict, the Pareto front (lower latency, higher
task metric) and the recommended point (the lowest latency that meets every budget)."""

from __future__ import annotations

from edgekit.core.profiles import Profile
from edgekit.stages.budgets import check_budgets


def point_row(profile: Profile, settings: dict, build: dict, bench: dict | None, accuracy_budget) -> dict:
    """One point of sweep.json: its settings, artifact, size, latency, task metric, verdict."""
    row = {"key": settings["key"], "profile": profile.name, "target": profile.runtime.target,
           "prune_ratio": settings["prune_ratio"], "precision": settings["precision"],
           "calib_method": settings["calib_method"], "status": build.get("status", "failed"),
           "error": build.get("error"), "artifact": build.get("artifact"), "size_mb": None, "latency_ms": None,
           "metric": None, "accuracy": build.get("accuracy"), "violations": [], "passed": False,
           "pareto": False, "recommended": False,
           "build_s": build.get("seconds"), "worker_pid": build.get("pid"), "resumed": build.get("resumed", False)}
    if row["status"] != "ok":
        return row
    if bench is not None and bench.get("status") != "ok":
        return {**row, "status": "failed", "error": bench.get("error")}
    row["size_mb"] = round(build["artifact"]["size_bytes"] / 1e6, 4)
    row["latency_ms"] = bench["latency_ms"] if bench else None
    row["metric"] = task_metric(row["accuracy"])
    row["violations"] = check_budgets(profile, row, accuracy_budget)
    row["passed"] = not row["violations"]
    return row


def task_metric(acc: dict | None) -> dict | None:
    """What the chart's accuracy axis shows: the task metric, else top-1 agreement, else logit cosine."""
    if not acc or acc.get("error"):
        return None
    if tm := acc.get("task_metric"):
        return {"name": tm["name"], "value": tm["value"], "drop": tm.get("drop")}
    for key in ("top1_agreement", "cosine_mean"):
        if acc.get(key) is not None:
            return {"name": key, "value": acc[key], "drop": None}
    return None


def measured(row: dict) -> bool:
    return row["status"] == "ok" and row["latency_ms"] is not None and row["metric"] is not None


def mark_front(rows: list[dict]) -> dict | None:
    """Mark one profile's Pareto-optimal and recommended points; returns the recommended row (or None)."""
    pts = [r for r in rows if measured(r)]
    for r in pts:
        lat, acc = r["latency_ms"]["p50"], r["metric"]["value"]
        r["pareto"] = not any(o is not r and o["latency_ms"]["p50"] <= lat and o["metric"]["value"] >= acc
                              and (o["latency_ms"]["p50"] < lat or o["metric"]["value"] > acc) for o in pts)
    passing = [r for r in pts if r["passed"]]
    if not passing:
        return None
    best = min(passing, key=lambda r: (r["latency_ms"]["p50"], -r["metric"]["value"], r["size_mb"], r["key"]))
    best["recommended"] = True
    return best

