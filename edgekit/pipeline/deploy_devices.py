"""`edgekit deploy --device ...`: artifacts are built here once, then validated and benchmarked on every
device (TensorRT engines are built on each device); one report row per profile x precision x device."""

from __future__ import annotations

import re

from edgekit.backends.registry import get_backend
from edgekit.core.errors import EdgekitError, TargetUnavailableError, one_line
from edgekit.remote.bench import bench_on_device, validate_on_device
from edgekit.remote.fleet import run_fleet
from edgekit.stages.budgets import check_budgets


def device_rows(ctx, profile, precision: str) -> list[dict]:
    """Rows of one profile x precision, one per device of ctx.options.devices (a remote_fleet.Fleet)."""
    fleet = ctx.options.devices
    template = {"profile": profile.name, "target": profile.runtime.target, "precision": precision, "status": "ok",
                "error": None, "artifact": None, "latency_ms": None, "speedup_vs_fp32": None, "accuracy": None,
                "violations": [], "passed": False}
    try:
        backend = get_backend(profile.runtime.target)
        artifact = _host_artifact(ctx, backend, profile, precision)
    except EdgekitError as e:  # nothing to send: every device's row says why
        status = "skipped" if isinstance(e, TargetUnavailableError) else "failed"
        return [{**template, "device": d.url, "status": status, "error": one_line(e), "exit_code": e.exit_code}
                for d in fleet.devices]

    def job(device, remote):
        art = artifact
        if backend.name == "tensorrt":  # engines are not portable: built on the device itself
            from edgekit.remote.compile import compile_on_device

            out = ctx.out_dir / f"tensorrt-{precision}" / _slug(device.url)
            art = compile_on_device(artifact, device, precision, tuple(ctx.inputs), dict(profile.runtime.options),
                                    out, remote)
        row = {**template, "device": device.url, "artifact": _artifact_block(ctx, art)}
        if ctx.ref_outputs is not None:
            got = validate_on_device(art, ctx.ref_outputs, ctx.val, device, profile.threads(), remote,
                                     dict(profile.runtime.options))
            row["accuracy"] = got["accuracy"]
        feed = next(iter(ctx.val)).feed if ctx.val is not None else None  # a real sample when there is one
        measured = bench_on_device(art, device, profile.threads(), ctx.options.bench, feed, remote,
                                   dict(profile.runtime.options))
        row["latency_ms"], row["environment"] = measured["latency_ms"], measured["environment"]
        row["violations"] = check_budgets(profile, row, ctx.options.accuracy_budget)
        row["passed"] = not row["violations"]
        return row

    rows = []
    for outcome in run_fleet(fleet, job):
        if outcome.error is None:
            rows.append(outcome.value)
        else:  # never a partial row marked ok
            rows.append({**template, "device": outcome.device.url, "status": "failed",
                         "error": one_line(outcome.error), "exit_code": outcome.error.exit_code})
    return rows


def _host_artifact(ctx, backend, profile, precision):
    """What is sent to the devices: the built artifact, or for TensorRT the ONNX the engine is built from."""
    if backend.name != "tensorrt":
        backend.check_available()
        return ctx._build(backend, profile, precision)
    if precision != "int8":
        return ctx.reference
    from dataclasses import replace

    quant = replace(ctx.options.quant, extra={**ctx.options.quant.extra, **profile.runtime.options})
    return backend.quantize(ctx.reference, ctx.calib, quant, ctx.out_dir / "tensorrt-int8")  # Q/DQ ONNX on the CPU


def _artifact_block(ctx, art) -> dict:
    path = art.path.relative_to(ctx.out_dir) if art.path.is_relative_to(ctx.out_dir) else art.path
    return {"path": str(path), "size_bytes": art.size_bytes(), "sha256": art.sha256(), "provenance": art.provenance}


def _slug(url: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", url[len("ssh://"):])


def report_environment(host_env: dict, results: list[dict]) -> dict:
    """The report's environment describes where it measured: the device when there is one, else each device
    under `devices` (and the host that built the artifacts under `host`)."""
    envs = {r["device"]: r["environment"] for r in results if r.get("environment")}
    if len(envs) == 1:
        return {**next(iter(envs.values())), "host": host_env}
    return {**host_env, "devices": envs}
