"""The rows of report.json: one per profile x precision at each place (this host, or every device)."""

from __future__ import annotations

from edgekit.backends.base import CompileOptions
from edgekit.backends.registry import get_backend
from edgekit.core.artifact import Artifact
from edgekit.core.errors import EdgekitError, TargetUnavailableError, one_line
from edgekit.core.latency import cv_warning
from edgekit.core.profiles import Profile
from edgekit.pipeline.deploy_builds import DeployBuilds
from edgekit.remote.fleet import run_at
from edgekit.remote.place import HOST, MeasureJob, Place
from edgekit.stages.budgets import check_budgets, profile_accuracy_violations


def result_row(profile: Profile, precision: str) -> dict:
    """A row before anything is known: what every report row starts from."""
    return {"profile": profile.name, "target": profile.runtime.target, "precision": precision,
            "status": "ok", "error": None, "artifact": None, "latency_ms": None,
            "speedup_vs_fp32": None, "accuracy": None, "violations": [], "passed": False}


def failed_row(row: dict, error: EdgekitError, skip_unavailable: bool = True) -> dict:
    """Never a partial row marked ok: a target unavailable here skips the row, any other error fails it."""
    skipped = skip_unavailable and isinstance(error, TargetUnavailableError)
    return {**row, "status": "skipped" if skipped else "failed", "error": one_line(error),
            "exit_code": error.exit_code}


def artifact_block(builds: DeployBuilds, artifact: Artifact) -> dict:
    return {"path": builds.run.relative(artifact.path), "size_bytes": artifact.size_bytes(),
            "sha256": artifact.sha256(), "provenance": artifact.provenance}


def profile_rows(builds: DeployBuilds, profile: Profile) -> list[dict]:
    """Every precision of a profile at every place, with the speedup over the fp32 row measured in the same place."""
    rows = []
    for p in row_precisions(builds.run.options, profile):
        with builds.rows.step(f"{profile.name} {p}"):
            rows += precision_rows(builds, profile, p)
    fp32 = {r["latency_ms"].get("where"): r for r in rows if r["precision"] == "fp32" and r.get("latency_ms")}
    for r in rows:
        base = fp32.get(r["latency_ms"].get("where")) if r.get("latency_ms") else None
        if base:
            r["speedup_vs_fp32"] = round(base["latency_ms"]["p50"] / r["latency_ms"]["p50"], 3)
    return rows


def row_precisions(options, profile: Profile) -> tuple[str, ...]:
    return options.precisions or tuple(dict.fromkeys(("fp32", profile.runtime.precision)))


def precision_rows(builds: DeployBuilds, profile: Profile, precision: str) -> list[dict]:
    """One row per place. The artifact is built here once and sent to each place; a target that builds
    on the device (TensorRT) is sent the ONNX and builds its engine on each device."""
    run, row = builds.run, result_row(profile, precision)
    places = run.places
    try:
        backend = get_backend(profile.runtime.target)
        per_device = run.on_devices and backend.builds_on_device
        if per_device:
            shipped = builds.device_source(backend, profile, precision)
        elif missing := fallback_reason(backend, run.on_devices):
            return [simulated_row(builds, row, backend, profile, missing)]
        else:
            shipped = builds.artifact(backend, profile, precision)
    except EdgekitError as e:  # nothing to measure: every place's row says why
        return [failed_row({**row, **place.report_fields()}, e) for place in places]

    def at(place: Place) -> dict:
        artifact = shipped
        if per_device:  # engines are not portable: each device builds its own
            out = run.out_dir / f"{backend.name}-{precision}" / place.device.slug
            artifact = place.compile(backend, shipped, profile, out, CompileOptions(
                precision, tuple(run.inputs), dict(profile.runtime.options)))
        return measured_row(builds, {**row, **place.report_fields()}, place, backend, artifact, profile)

    # a device that cannot run it fails its row (unreachable, runtime missing there), whatever the error
    return [o.value if o.error is None else failed_row({**row, **o.place.report_fields()}, o.error,
                                                        skip_unavailable=not o.place.remote)
            for o in run_at(places, at)]


def fallback_reason(backend, on_devices: bool) -> TargetUnavailableError | None:
    """Why the target cannot run here when its CPU fallback stands in (this host only); None when it runs.
    Any other reason it cannot run is raised."""
    try:
        backend.check_available()
    except TargetUnavailableError as missing:
        if backend.has_cpu_fallback and not on_devices:
            return missing
        raise
    return None


def measured_row(builds: DeployBuilds, row: dict, place: Place, backend, artifact: Artifact,
                 profile: Profile) -> dict:
    """The row of an artifact measured at a place: accuracy (unless already known), latency, budgets."""
    run = builds.run
    row = {**row, "artifact": artifact_block(builds, artifact)}
    known = builds.known_accuracy(place, artifact)
    job = MeasureJob(threads=profile.threads(), profile=profile, backend=backend, data=run.val,
                     reference=run.ref_outputs if known is None else None, bench=run.options.bench,
                     feed=run.bench_feed(), paired_probe=True)
    measured = place.measure(artifact, job)
    if run.ref_outputs is not None:
        row["accuracy"] = known if known is not None else measured.accuracy
        builds.remember_accuracy(place, artifact, row["accuracy"])
    row["latency_ms"] = measured.latency
    if run.on_devices:  # each device row describes its device (the report's environment: the host once)
        row["environment"] = measured.environment
    if warning := cv_warning(measured.latency):
        row.setdefault("warnings", []).append(warning)
    row["violations"] = check_budgets(profile, row, run.options.accuracy_budget)
    row["passed"] = not row["violations"]
    return row


def simulated_row(builds: DeployBuilds, row: dict, backend, profile: Profile, missing: TargetUnavailableError) -> dict:
    """No engine can be built here (TensorRT): make the ONNX it would be built from, check it on the CPU."""
    run = builds.run
    artifact = builds.cpu_fallback(backend, profile, row["precision"])
    row = {**row, "artifact": artifact_block(builds, artifact)}
    known = builds.known_accuracy(HOST, artifact)
    job = MeasureJob(threads=profile.threads(), profile=profile, backend=backend,
                     reference=run.ref_outputs if known is None else None, data=run.val)
    measured = HOST.measure(artifact, job)
    row["accuracy"] = known if known is not None else measured.accuracy
    if row["accuracy"] is not None:
        builds.remember_accuracy(HOST, artifact, row["accuracy"])
    row["simulated"] = measured.effective_precision
    row["violations"] = (profile_accuracy_violations(row["accuracy"], profile.budgets, run.options.accuracy_budget)
                         if row["accuracy"] else [])
    row.update(status="skipped", passed=not row["violations"],
               error=f"engine not built: {one_line(missing)}; accuracy: {row['simulated']}; "
                     "latency not measured (CPU time says nothing about the GPU)")
    if run.options.require_engine:
        row["exit_code"] = missing.exit_code
    return row
