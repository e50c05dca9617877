"""The work of one sweep job, the same in a Ray worker and in-process: a source (the model pruned at one ratio,
exported) or a point (one target x precision x method built from a source, validated against the unpruned FP32).

Each job builds in a temporary folder beside its final one and moves it into place when complete; it returns a
plain dict (the record the driver stores), so nothing but files and dicts travel between processes.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from edgekit.core.errors import EdgekitError, InvalidInputError, one_line
from edgekit.core.profiles import Profile
from edgekit.pipeline.sweep.store import publish_folder


@dataclass(frozen=True)
class SweepSpec:
    """What every job of one sweep reads: the model, its data, how to recover and validate; all picklable."""

    model: str
    out_dir: Path
    inputs: tuple  # TensorSpecs (--input)
    calib: str | None
    val: str | None
    preprocess: object = None
    labels: str | None = None
    consts: tuple = ()
    val_limit: int | None = None
    task: str | None = None
    masks: str | None = None
    weights: str | None = None
    trust_pickle: bool = False
    distill: str | None = None
    search: bool = False
    accuracy_budget: float | None = None
    parallel: bool = False  # several jobs share the machine: one thread each


@dataclass(frozen=True)
class SourceJob:
    key: str
    ratio: float


@dataclass(frozen=True)
class PointJob:
    key: str
    source_key: str
    profile: Profile  # the first profile of its target group: the options the artifact is built with
    precision: str
    method: str | None  # int8 only


def run_source(spec: SweepSpec, job: SourceJob) -> dict:
    """out/sources/<key>/: reference.onnx (and model.pt2 for a PyTorch model), pruned at job.ratio."""
    return _guarded(spec, job.key, lambda tmp: _source(spec, job, tmp), spec.out_dir / "sources" / job.key)


def run_point(spec: SweepSpec, job: PointJob, source: dict, base: dict) -> dict:
    """out/points/<key>/: the artifact built from `source`, validated against `base` (the unpruned reference)."""
    if source.get("status") != "ok":
        return {"key": job.key, "status": "failed", "error": f"its source failed: {source.get('error')}",
                "exit_code": source.get("exit_code", 4), "seconds": 0.0, "pid": os.getpid()}
    return _guarded(spec, job.key, lambda tmp: _point(spec, job, source, base, tmp), spec.out_dir / "points" / job.key)


def _guarded(spec: SweepSpec, key: str, work, final: Path) -> dict:
    """Run `work(tmp)` in a fresh folder; publish it on success; any error becomes a failed record (no folder)."""
    limit_threads(spec.parallel)
    start, cpu = time.perf_counter(), time.process_time()
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=final.parent))
    try:
        record = work(tmp)
        publish_folder(tmp, final)
    except EdgekitError as e:
        return _failed(key, one_line(e), e.exit_code, start)
    except OSError as e:
        if e.errno == errno.ENOSPC:
            return _failed(key, f"no space left on the device of {spec.out_dir}", InvalidInputError.exit_code, start)
        return _failed(key, f"{type(e).__name__}: {e}", 4, start)
    except Exception as e:  # an untyped library failure: the point fails, the sweep goes on
        text = str(e).strip().splitlines()[0] if str(e).strip() else ""
        return _failed(key, f"{type(e).__name__}: {text}", 4, start)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    record = _relocated(record, tmp, final, spec.out_dir)
    return {"key": key, "status": "ok", **record, "seconds": round(time.perf_counter() - start, 3),
            "cpu_s": round(time.process_time() - cpu, 3), "pid": os.getpid()}


def _failed(key: str, error: str, exit_code: int, start: float) -> dict:
    return {"key": key, "status": "failed", "error": error, "exit_code": exit_code,
            "seconds": round(time.perf_counter() - start, 3), "pid": os.getpid()}


def _relocated(record: dict, tmp: Path, final: Path, out_dir: Path) -> dict:
    """Paths the job wrote under `tmp`, as they are now: relative to the output folder, under `final`."""
    def move(p: str) -> str:
        return str((final / Path(p).relative_to(tmp)).relative_to(out_dir))

    out = dict(record)
    out["files"] = [move(p) for p in record["files"]]
    for name in ("reference", "pt2"):
        if out.get(name):
            out[name] = move(out[name])
    if out.get("artifact"):
        out["artifact"] = {**out["artifact"], "path": move(out["artifact"]["path"])}
    return out


def _source(spec: SweepSpec, job: SourceJob, tmp: Path) -> dict:
    from edgekit.pipeline.arguments import as_data, resolve_inputs
    from edgekit.stages.normalize import normalized_source

    reference, pruning = _reference(spec, job.ratio, tmp)
    inputs = resolve_inputs(reference.inputs, spec.inputs)
    data = as_data(spec.calib or spec.val, inputs, spec.preprocess, spec.labels, 1, spec.consts)
    reference = normalized_source(reference, tmp, inputs, data)  # every point starts from one checked ONNX
    pt2 = tmp / "model.pt2"
    files = [p for p in tmp.rglob("*") if p.is_file()]
    return {"ratio": job.ratio, "reference": str(reference.path), "pt2": str(pt2) if pt2.exists() else None,
            "pruning": pruning, "files": [str(p) for p in files]}


def _reference(spec: SweepSpec, ratio: float, tmp: Path):
    """The model (pruned and recovered when ratio > 0) as reference.onnx, and model.pt2 for a PyTorch model."""
    from edgekit.pipeline.deploy import prepare_reference
    from edgekit.pipeline.deploy_run import DeployOptions

    if ratio == 0:
        options = DeployOptions(profiles=(), out_dir=tmp, inputs=spec.inputs, weights=spec.weights,
                                trust_pickle=spec.trust_pickle)
        return prepare_reference(spec.model, options, tmp), None
    from edgekit.core.arrays import parse_consts
    from edgekit.core.torch_model import load_torch_model
    from edgekit.stages.export import ExportOptions, export_onnx, save_pt2
    from edgekit.stages.prune.recover import RecoveryOptions
    from edgekit.stages.prune.run import PruneOptions, prune_model, summary
    from edgekit.stages.prune.structure import PruneSpec

    model = load_torch_model(spec.model, spec.weights, spec.trust_pickle)
    options = PruneOptions(spec=PruneSpec(ratio=ratio), inputs=tuple(spec.inputs), calib=spec.calib,
                           distill=spec.distill, val=spec.val or spec.calib, preprocess=spec.preprocess,
                           labels=spec.labels, consts=parse_consts(spec.consts),
                           recovery=RecoveryOptions(epochs=2 if spec.distill else 0, max_samples=300))
    result = prune_model(model, options, source="sweep")
    pruning = summary(result.report)
    artifacts = (save_pt2(result.model, tmp / "model.pt2", spec.inputs),
                 export_onnx(result.model, tmp / "reference.onnx", ExportOptions(inputs=spec.inputs),
                             source_name=spec.model))
    for a in artifacts:
        a.provenance["pruning"] = pruning
        a.save_sidecar()
    return artifacts[1], pruning


def _point(spec: SweepSpec, job: PointJob, source: dict, base: dict, tmp: Path) -> dict:
    from edgekit.backends.base import QuantOptions
    from edgekit.backends.registry import get_backend
    from edgekit.core.artifact import Artifact
    from edgekit.pipeline.deploy_builds import DeployBuilds
    from edgekit.pipeline.deploy_run import DeployOptions
    from edgekit.pipeline.sweep.sweep_run import SweepRun
    from edgekit.remote.place import HOST, MeasureJob

    out = spec.out_dir
    for name in ("pt2",):  # targets that convert from PyTorch find model.pt2 beside the build (DeployRun.source_for)
        if source.get(name):
            for suffix in ("", ".json"):
                os.link(out / (source[name] + suffix), tmp / ("model.pt2" + suffix))
    reference = Artifact.load(out / source["reference"])
    val, calib, ref_outputs = _data(spec, reference, out / base["reference"], job.profile)
    quant = QuantOptions(method=job.method or "minmax")
    options = DeployOptions(profiles=(job.profile,), out_dir=tmp, calib=spec.calib, val=spec.val, inputs=spec.inputs,
                            precisions=(job.precision,), accuracy_budget=spec.accuracy_budget, quant=quant,
                            task=spec.task, masks=spec.masks)
    run = SweepRun(reference, tuple(reference.inputs), calib, val, ref_outputs, options, tmp, search=spec.search)
    builds = DeployBuilds(run)
    backend = get_backend(job.profile.runtime.target)
    backend.check_available()
    artifact = builds.artifact(backend, job.profile, job.precision)
    accuracy = builds.known_accuracy(HOST, artifact)
    if accuracy is None:
        threads = 1 if spec.parallel else job.profile.threads()
        accuracy = HOST.measure(artifact, MeasureJob(threads=threads, profile=job.profile, backend=backend, data=val,
                                                     reference=ref_outputs)).accuracy
    files = [p for p in tmp.rglob("*") if p.is_file()]
    return {"artifact": {"path": str(artifact.path), "size_bytes": artifact.size_bytes(),
                         "sha256": artifact.sha256(), "provenance": artifact.provenance},
            "accuracy": accuracy, "files": [str(p) for p in files]}


_REFERENCE_OUTPUTS: dict = {}  # per process: the unpruned model's FP32 outputs, computed once per worker


def _data(spec: SweepSpec, reference, base_path: Path, profile: Profile):
    """(validation, calibration, FP32 outputs of the unpruned reference) for a point."""
    from edgekit.core.artifact import Artifact
    from edgekit.pipeline.arguments import as_data, resolve_inputs
    from edgekit.stages.task_choice import TaskChoice
    from edgekit.stages.validate import reference_outputs

    inputs = resolve_inputs(reference.inputs, spec.inputs)
    val = as_data(spec.val or spec.calib, inputs, spec.preprocess, spec.labels, spec.val_limit, spec.consts)
    calib = as_data(spec.calib, inputs, spec.preprocess, spec.labels, consts=spec.consts)
    task = TaskChoice(spec.task or profile.task, spec.labels, spec.masks)
    cache_key = (str(base_path), base_path.stat().st_mtime_ns, repr(task), repr(spec.val), spec.val_limit)
    if cache_key not in _REFERENCE_OUTPUTS:
        _REFERENCE_OUTPUTS[cache_key] = reference_outputs(Artifact.load(base_path), val, task=task)
    return val, calib, _REFERENCE_OUTPUTS[cache_key]


def limit_threads(parallel: bool) -> None:
    """Jobs side by side on the machine's cores: one thread each, so two builds do not fight over two cores."""
    if parallel:
        from edgekit.pipeline.sweep.workers import cap_threads

        cap_threads(1)


def with_base(record: dict) -> dict:
    """A source record as points read it (only what they need travels to the workers)."""
    return {k: record.get(k) for k in ("status", "reference", "pt2", "error", "exit_code")}


