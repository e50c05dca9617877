"""`edgekit sweep MODEL --profile A --prune 0,0.5 --precision fp32,int8 --calib D --val D -o OUT`: the fastest
settings that stay within budget, per profile, and the trade-off curve (sweep.json, sweep.md, sweep.html)."""

from __future__ import annotations

import datetime as dt
import os
import time
from dataclasses import dataclass, fields, replace
from pathlib import Path

from edgekit.core.atomic import write_json, write_text
from edgekit.core.console import note
from edgekit.core.version import __version__
from edgekit.pipeline.arguments import as_output_folder, as_preprocess, as_profile, as_specs, as_tuple
from edgekit.pipeline.sweep.config import merge_config
from edgekit.pipeline.sweep.jobs import SweepSpec
from edgekit.pipeline.sweep.options import SweepRequest, as_grid, check_request
from edgekit.pipeline.sweep.plan import make_plan
from edgekit.pipeline.sweep.results import mark_front, point_row
from edgekit.pipeline.sweep.run import bench_all, build_all
from edgekit.pipeline.sweep.store import Store, disk_full_is_one_line, load_settings, model_sha

SCHEMA = "edgekit.sweep/1"
RUN_OPTIONS = ("ray", "in_process", "workers", "resume", "output", "config")  # how, not what: never saved


@dataclass
class SweepResult:
    sweep: dict  # sweep.json
    paths: dict
    exit_code: int

    def to_dict(self) -> dict:
        """sweep.json, as `edgekit sweep --json` prints it."""
        return self.sweep


def sweep(model, request: SweepRequest, given: set[str] | None = None) -> SweepResult:
    from edgekit.stages.task_choice import load_task

    given = given if given is not None else set()
    model, request = merge_config(model, request, given)  # [sweep] of -c edgekit.toml; given options win
    if request.resume:
        model, request = resumed(model, request, given)
    check_request(request)
    request = _absolute(request)
    grid = as_grid(request)
    load_task(request.task)  # an unknown task: exit 2 before any work
    model = _model_path(model)
    if not model:
        from edgekit.core.errors import InvalidInputError

        raise InvalidInputError("no model given", hint="edgekit sweep MODEL ... (or --resume OUT)")
    if any(r > 0 for r in grid.prune):
        from edgekit.stages.prune.run import reject_onnx

        reject_onnx(model)  # pruning needs the PyTorch model
    profiles = [as_profile(p) for p in as_tuple(request.profiles)]
    _check_targets(profiles, grid)
    out = as_output_folder(request.output)
    out.mkdir(parents=True, exist_ok=True)
    spec = SweepSpec(model=model, out_dir=out.resolve(), inputs=as_specs(request.inputs), calib=request.calib,
                     val=request.val, preprocess=as_preprocess(request.preprocess), labels=request.labels,
                     consts=as_tuple(request.consts), val_limit=request.val_limit, task=request.task,
                     masks=request.masks, weights=request.weights, trust_pickle=request.trust_pickle,
                     distill=request.distill, search=request.search, accuracy_budget=request.accuracy_budget)
    store = Store(spec.out_dir)
    store.save_settings(saved_settings(model, request))
    plan = make_plan(spec, grid, profiles)
    note(f"sweep: {len(plan.points)} points ({len(grid.prune)} pruning x {len(plan.points) // len(grid.prune)} "
         f"target x precision x method) on {len(profiles)} profiles")
    built = build_all(spec, plan, store, request.ray, request.in_process, request.workers)
    bench_start = time.perf_counter()
    benches = bench_all(spec, plan, store, built.records, request.min_seconds)
    bench_s = time.perf_counter() - bench_start
    doc = sweep_document(model, spec, grid, plan, built, benches, request)
    doc["run"]["bench_s"] = round(bench_s, 2)
    paths = write_sweep(doc, spec.out_dir)
    return SweepResult(doc, paths, exit_code_for(doc))


PATH_OPTIONS = ("calib", "val", "labels", "masks", "weights", "distill")


def _absolute(request: SweepRequest) -> SweepRequest:
    """Paths made absolute, so a resumed sweep finds its data from any directory (and its keys do not move)."""
    return replace(request, **{name: _path(getattr(request, name)) for name in PATH_OPTIONS})


def _model_path(model) -> str | None:
    """MODEL with its file made absolute (net.onnx, model.py:factory); pkg.module:factory as given."""
    if model is None:
        return None
    model = str(getattr(model, "path", model))
    file_part, colon, attr = model.rpartition(":") if ":" in model else (model, "", "")
    return f"{Path(file_part).resolve()}{colon}{attr}" if Path(file_part).exists() else model


def _path(value):
    return None if value is None else (value if not isinstance(value, (str, Path)) else str(Path(value).resolve()))


def _check_targets(profiles, grid) -> None:
    """Each profile's target runs here (else exit 3) and builds every precision of the grid (else exit 2), before
    any work."""
    from edgekit.backends.registry import get_backend
    from edgekit.core.errors import InvalidInputError

    for p in profiles:
        backend = get_backend(p.runtime.target)
        backend.check_available()
        missing = [x for x in grid.precisions if x not in backend.precisions]
        if missing:
            raise InvalidInputError(f"profile {p.name}: the {backend.name} target cannot build {missing[0]}",
                                    hint=f"it builds {', '.join(backend.precisions)}; drop {missing[0]} from --precision")


def sweep_document(model, spec, grid, plan, built, benches, request) -> dict:
    from edgekit.core.hostinfo import environment

    ratio_of = {s.key: s.ratio for s in plan.sources}
    points, summary = [], {}
    for group_profiles in {id(g): g for g in plan.groups.values()}.values():
        for profile in group_profiles:
            rows = [point_row(profile, plan.settings(p, ratio_of), built.records.get(p.key, {}),
                              benches.get((p.key, profile.name)), spec.accuracy_budget)
                    for p in plan.points if plan.groups[p.key] is group_profiles]
            best = mark_front(rows)
            summary[profile.name] = {
                "target": profile.runtime.target, "budgets": _budgets(profile),
                "recommended": None if best is None else {
                    "key": best["key"], "settings": _settings_text(best), "prune_ratio": best["prune_ratio"],
                    "precision": best["precision"], "calib_method": best["calib_method"],
                    "p50_ms": best["latency_ms"]["p50"], "metric": best["metric"], "artifact": best["artifact"]["path"]},
                "pareto": [r["key"] for r in rows if r["pareto"]]}
            points += rows
    builds = [r for k, r in built.records.items() if r.get("status") == "ok" and not r.get("resumed")]
    return {
        "schema": SCHEMA, "edgekit_version": __version__,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "model": {"source": model, "sha256": model_sha(model, spec.weights), "inputs": [s.to_dict() for s in spec.inputs]},
        "grid": {**grid.to_dict(), "profiles": list(summary)},
        "profiles": summary, "points": points,
        "sources": {s.key: {k: built.records.get(s.key, {}).get(k) for k in ("status", "ratio", "reference", "pruning",
                                                                             "seconds", "pid", "error")}
                    for s in plan.sources},
        "run": {"engine": built.engine, "workers": built.workers, "driver_pid": os.getpid(), "engine_start_s": built.start_s,
                "build_wall_s": built.wall_s, "build_sum_s": round(sum(r.get("seconds", 0.0) for r in builds), 2),
                "build_cpu_s": round(sum(r.get("cpu_s", 0.0) for r in builds), 2),
                "jobs_built": len(builds), "jobs_resumed": sum(1 for r in built.records.values() if r.get("resumed"))},
        "environment": environment(),
    }


def _settings_text(row: dict) -> str:
    from edgekit.report.sweep import settings_text

    return settings_text(row)


def _budgets(profile) -> dict:
    from dataclasses import asdict

    return {k: v for k, v in asdict(profile.budgets).items() if v is not None}


def exit_code_for(doc: dict) -> int:
    """4 when a point failed to build, 1 when a profile has no point within its budgets, else 0."""
    if any(p["status"] == "failed" for p in doc["points"]):
        return 4
    return 0 if all(b["recommended"] for b in doc["profiles"].values()) else 1


def write_sweep(doc: dict, out: Path) -> dict:
    paths = {"json": out / "sweep.json", "md": out / "sweep.md", "html": out / "sweep.html"}
    with disk_full_is_one_line(out):
        _write_files(doc, paths)
    return paths


def _write_files(doc: dict, paths: dict) -> None:
    from edgekit.report.sweep import markdown_table, render_html

    write_json(paths["json"], doc)
    md = [f"# edgekit sweep: {doc['model']['source']}", ""]
    for name, block in doc["profiles"].items():
        rec = block["recommended"]
        md += [f"## {name} ({block['target']})", "",
               f"recommended: {rec['settings']}, {rec['p50_ms']:.3f} ms p50" if rec else "no point meets every budget",
               "", markdown_table([p for p in doc["points"] if p["profile"] == name]), ""]
    write_text(paths["md"], "\n".join(md))
    write_text(paths["html"], render_html(doc))


def saved_settings(model: str, request: SweepRequest) -> dict:
    """What `--resume OUT` reads back: the model and every option that says what to sweep."""
    def plain(v):
        if isinstance(v, (tuple, list)):
            return [plain(x) for x in v]
        if v is None or isinstance(v, (str, int, float, bool)):
            return v
        return str(getattr(v, "source", None) or getattr(v, "path", None) or v)

    values = {f.name: plain(getattr(request, f.name)) for f in fields(request) if f.name not in RUN_OPTIONS}
    return {"schema": "edgekit.sweep-settings/1", "model": model, "options": values}


def resumed(model, request: SweepRequest, given: set[str]) -> tuple[str, SweepRequest]:
    """The saved sweep's model and options; options given with --resume (how to run it: --ray, --workers; or a
    changed setting) win."""
    saved = load_settings(Path(request.resume))
    options = {k: (tuple(v) if isinstance(v, list) else v) for k, v in saved["options"].items()}
    for name in given - {"resume"}:
        options[name] = getattr(request, name)
    for name in RUN_OPTIONS:
        options.setdefault(name, getattr(request, name))
    options["output"] = request.output or request.resume
    return model or saved["model"], replace(request, **{k: v for k, v in options.items() if k != "resume"})
