"""`edgekit sweep`: build and validate every point (Ray tasks, or in-process), then benchmark them one at a time
in this process (serialized per device, no build running beside), then the front per profile and sweep.json/html."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

from edgekit.core.console import note
from edgekit.core.errors import InvalidInputError, TargetUnavailableError
from edgekit.core.progress import stage
from edgekit.pipeline.sweep.engine import open_engine
from edgekit.pipeline.sweep.jobs import SweepSpec, run_point, run_source, with_base
from edgekit.pipeline.sweep.plan import Plan
from edgekit.pipeline.sweep.store import Store


@dataclass
class BuildOutcome:
    records: dict  # job key -> record (sources and points)
    engine: str
    workers: int
    start_s: float  # starting the engine (a local Ray: seconds)
    wall_s: float  # from the first job submitted to the last result


def build_all(spec: SweepSpec, plan: Plan, store: Store, ray_address, in_process: bool, workers) -> BuildOutcome:
    """Every source and point not recorded yet, as engine jobs; each result recorded as it arrives."""
    records = {}
    for kind, jobs in (("source", plan.sources), ("point", plan.points)):
        for job in jobs:
            if (found := store.load(kind, job.key)) is not None:
                records[job.key] = {**found, "resumed": True}
    todo_sources = [j for j in plan.sources if j.key not in records]
    todo_points = [j for j in plan.points if j.key not in records]
    if not todo_sources and not todo_points:
        note(f"all {len(plan.points)} points already built (--resume): benchmarking only what is missing")
        return BuildOutcome(records, "none (resumed)", 0, 0.0, 0.0)
    if len(records):
        note(f"resuming: {sum(1 for j in plan.points if j.key in records)} of {len(plan.points)} points already built")
    _remove_leftovers(store.out_dir)
    started = time.perf_counter()
    engine, how = open_engine(ray_address, in_process, workers)
    start_s = time.perf_counter() - started
    note(how)
    spec = replace(spec, parallel=engine.parallel)  # several jobs share the machine: one thread each
    try:
        wall = time.perf_counter()
        _run_jobs(engine, spec, plan, store, records, todo_sources, todo_points)
        wall_s = time.perf_counter() - wall
    finally:
        engine.close()  # also on Ctrl-C: the processes a local Ray started end here; finished records stay
    return BuildOutcome(records, engine.name, engine.workers, round(start_s, 2), round(wall_s, 2))


def _remove_leftovers(out: Path) -> None:
    """Build folders of jobs that never finished (a killed worker, Ctrl-C): never recorded, so never read."""
    import shutil

    for folder in (out / "sources", out / "points"):
        for tmp in folder.glob(".*") if folder.is_dir() else ():
            shutil.rmtree(tmp, ignore_errors=True)


def _run_jobs(engine, spec, plan: Plan, store: Store, records: dict, todo_sources, todo_points) -> None:
    handles, what = {}, {}
    for job in todo_sources:
        h = engine.submit(run_source, spec, job)
        handles[job.key], what[h] = h, ("source", job)
    base_key = plan.sources[0].key

    def source_arg(key):  # a recorded source travels as its record, one still running as its handle
        return with_base(records[key]) if key in records else handles[key]

    order = {s.key: i for i, s in enumerate(plan.sources)}
    if engine.parallel:  # int8 builds (calibration, ~1 s) before the fp32 ones (~0.1 s) of a source: the last job
        # to finish is a short one, so no worker idles long at the end; records are keyed, the order changes nothing
        todo_points = sorted(todo_points, key=lambda j: (order[j.source_key], j.precision != "int8"))
    for job in todo_points:
        h = engine.submit(run_point, spec, job, source_arg(job.source_key), source_arg(base_key))
        handles[job.key], what[h] = h, ("point", job)
    pending = list(what)
    total, done = len(pending), 0
    for handle, record in engine.results(list(pending)):
        pending.remove(handle)
        done += 1
        kind, job = what[handle]
        record = {**record, "key": job.key}
        records[job.key] = record
        _announce(done, total, kind, job, record)
        if record["status"] == "ok":
            store.save(kind, job.key, record)  # the point is done only now: its folder is complete and recorded
        elif fatal := _fatal(kind, job, record, store.out_dir):
            engine.cancel(pending)
            raise fatal


def _fatal(kind: str, job, record: dict, out_dir: Path):
    """A failure that stops the sweep (finished points stay recorded): a dead worker, a full disk, a point the
    target cannot build as asked. Other failures (a backend error on one point) fail that point alone."""
    hint = f"fix it, then `edgekit sweep --resume {out_dir}` keeps the finished points"
    name = _job_text(kind, job)
    if record.get("worker_died"):
        return TargetUnavailableError(f"{name}: {record['error']}", hint=f"`edgekit sweep --resume {out_dir}` "
                                                                          "keeps the finished points")
    if record.get("exit_code") == InvalidInputError.exit_code:
        return InvalidInputError(f"{name}: {record['error']}", hint=hint)
    if record.get("exit_code") == TargetUnavailableError.exit_code:
        return TargetUnavailableError(f"{name}: {record['error']}", hint=hint)
    return None


def _job_text(kind: str, job) -> str:
    if kind == "source":
        return f"source prune {job.ratio:g}"
    method = f" ({job.method})" if job.method else ""
    return f"point {job.profile.runtime.target} {job.precision}{method}"


def _announce(done: int, total: int, kind: str, job, record: dict) -> None:
    result = (f"{record['seconds']:.1f} s, pid {record.get('pid')}" if record["status"] == "ok"
              else f"failed: {record.get('error')}")
    with stage(f"built {done}/{total}: {_job_text(kind, job)}: {result}"):
        pass


def bench_all(spec: SweepSpec, plan: Plan, store: Store, records: dict, min_seconds: float) -> dict:
    """Latency of every built point on each profile of its group, one at a time in this process; a profile with a
    [connection] is measured on its device. Returns (point key, profile name) -> bench record."""
    from edgekit.pipeline.sweep.plan import bench_key

    benches = {}
    todo = [(p, prof) for p in plan.points if records.get(p.key, {}).get("status") == "ok" for prof in plan.groups[p.key]]
    for i, (point, profile) in enumerate(todo, 1):
        key = bench_key(point.key, profile, min_seconds)
        found = store.load("bench", key)
        if found is None:
            with stage(f"benchmark {i}/{len(todo)}: {profile.name} {_job_text('point', point)}"):
                reference = records[point.source_key]["reference"]
                found = _bench(spec, records[point.key], reference, profile, min_seconds)
            if found["status"] == "ok":
                store.save("bench", key, found)
        benches[(point.key, profile.name)] = found
    return benches


def _bench(spec: SweepSpec, record: dict, reference: str, profile, min_seconds: float) -> dict:
    from edgekit.backends.registry import get_backend
    from edgekit.core.artifact import Artifact
    from edgekit.core.errors import EdgekitError, one_line
    from edgekit.remote.place import MeasureJob
    from edgekit.stages.bench import BenchOptions

    try:
        artifact = Artifact.load(spec.out_dir / record["artifact"]["path"])
        job = MeasureJob(threads=profile.threads(), profile=profile, backend=get_backend(profile.runtime.target),
                         bench=BenchOptions(min_seconds=min_seconds),
                         feed=_feed(spec, Artifact.load(spec.out_dir / reference)))
        measured = _place(profile).measure(artifact, job)
    except EdgekitError as e:
        return {"status": "failed", "error": one_line(e), "exit_code": e.exit_code}
    return {"status": "ok", "latency_ms": measured.latency}


def _place(profile):
    """Where a profile is measured: its device when it has a [connection], else this host."""
    from edgekit.remote.fleet import DeviceArgs
    from edgekit.remote.place import HOST

    if profile.connection is None:
        return HOST
    return DeviceArgs((profile.source,)).places()[0]


def _feed(spec: SweepSpec, artifact) -> dict | None:
    """A real validation sample to benchmark on (read for the reference's inputs: the runner takes ONNX layout)."""
    from edgekit.pipeline.arguments import as_data, resolve_inputs

    inputs = resolve_inputs(artifact.inputs, spec.inputs) if artifact.inputs else list(spec.inputs)
    data = as_data(spec.val or spec.calib, inputs, spec.preprocess, spec.labels, 1, spec.consts)
    return next(iter(data)).feed if data is not None else None
