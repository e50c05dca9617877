"""The whole chain for one or more profiles: reference -> artifacts -> validate -> bench -> report."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path

from edgekit.backends.base import CompileOptions, QuantOptions
from edgekit.backends.registry import get_backend, load_profile
from edgekit.core.artifact import Artifact, file_sha256
from edgekit.core.atomic import atomic_path
from edgekit.core.data import Preprocess, open_data
from edgekit.core.errors import EdgekitError, InvalidInputError, TargetUnavailableError, one_line
from edgekit.core.hostinfo import environment
from edgekit.core.latency import compact_samples, cv_warning
from edgekit.core.onnx_model import describe_onnx
from edgekit.core.profiles import Profile
from edgekit.onnx.speedprobe import SpeedProbe
from edgekit.core.tensors import TensorSpec, random_feed
from edgekit.report.writer import build_report, write_reports
from edgekit.stages.bench import BenchOptions, bench_runner
from edgekit.stages.budgets import accuracy_violations, check_budgets
from edgekit.stages.validate import compare, run_outputs, run_reference


@dataclass(frozen=True)
class DeployOptions:
    profiles: tuple[str, ...]
    out_dir: Path
    calib: str | None = None
    val: str | None = None
    preprocess: Preprocess | None = None
    labels: str | None = None
    inputs: tuple[TensorSpec, ...] = ()
    weights: str | None = None
    trust_pickle: bool = False
    precisions: tuple[str, ...] = ()  # default: fp32 + each profile's precision
    accuracy_budget: float | None = None
    quant: QuantOptions = field(default_factory=QuantOptions)
    bench: BenchOptions = field(default_factory=BenchOptions)
    val_limit: int | None = None
    skip_unavailable: bool = False  # demo: a missing runtime is a skipped row, not exit 3
    prune: float | None = None  # fraction of channels removed before export (PyTorch models)
    devices: object = None  # remote_fleet.Fleet: validate and bench on these devices over SSH, one row each
    require_engine: bool = False  # tensorrt without TensorRT here: exit 3 instead of a CPU-checked row
    accuracy_search_s: float | None = None  # time bound of the --accuracy-budget search (None: its default)


@dataclass
class DeployResult:
    report: dict
    paths: dict
    exit_code: int


def deploy(model_spec: str, options: DeployOptions) -> DeployResult:
    if options.prune:
        from edgekit.stages.prune.run import reject_onnx

        reject_onnx(model_spec)  # before any work: pruning needs the PyTorch model
    out_dir = Path(options.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    profiles = [load_profile(p) for p in options.profiles]  # bad names fail before any work
    reference = prepare_reference(model_spec, options, out_dir)
    inputs = resolve_inputs(reference.inputs, options.inputs)
    val_path = options.val or options.calib
    val = open_data(val_path, inputs, options.preprocess, options.labels, options.val_limit) if val_path else None
    calib = open_data(options.calib, inputs, options.preprocess, options.labels) if options.calib else None
    ref_backend = get_backend("onnxruntime")
    ref_outputs = None
    if val is not None:
        with ref_backend.runner(reference) as ref_runner:
            ref_outputs = run_reference(ref_runner, val, "FP32 reference")
    ctx = _Context(reference, inputs, calib, val, ref_outputs, options, out_dir)
    results = [row for profile in profiles for row in ctx.rows_for(profile)]
    info = describe_onnx(reference.path)
    model = {
        "source": str(model_spec), "sha256": file_sha256(reference.path),
        "inputs": [s.to_dict() for s in reference.inputs], "outputs": reference.outputs,
        "params": info.params, "macs": info.macs,
        "validation": {"data": str(val_path) if val_path else None, "samples": len(val) if val else 0,
                       "calibration_is_validation": bool(val_path and not options.val)},
    }
    if pruning := reference.provenance.get("pruning"):
        model["pruning"] = pruning
        for row in results:
            row["prune_ratio"] = pruning["ratio"]
    env = environment()
    if options.devices:  # the report describes the devices it measured on (edgekit.pipeline.deploy_devices)
        from edgekit.pipeline.deploy_devices import report_environment

        env = report_environment(env, results)
    report = build_report(model, env, results)
    paths = write_reports(report, out_dir)
    return DeployResult(report, paths, exit_code_for(results, options.skip_unavailable))


def exit_code_for(results: list[dict], skip_unavailable: bool) -> int:
    codes = [r.get("exit_code", 0) for r in results if r["status"] == "failed"]
    if codes:
        return max(codes)
    if not skip_unavailable and any(r["status"] == "skipped" and r.get("exit_code") for r in results):
        return TargetUnavailableError.exit_code
    # rows checked on the CPU only (TensorRT missing here) still fail on their accuracy budgets
    return 0 if all(r.get("passed", True) for r in results if r["status"] == "ok" or r.get("simulated")) else 1


def prepare_reference(model_spec: str, options: DeployOptions, out_dir: Path) -> Artifact:
    """reference.onnx (and model.pt2 for a PyTorch model) in the output folder."""
    from edgekit.core.torch_model import is_pytorch_spec

    target = out_dir / "reference.onnx"
    if is_pytorch_spec(model_spec):
        from edgekit.core.torch_model import load_torch_model
        from edgekit.stages.export import ExportOptions, export_onnx, save_pt2

        model = load_torch_model(model_spec, options.weights, options.trust_pickle)
        if not options.inputs:
            raise InvalidInputError("a PyTorch model needs its inputs", hint="--input input:1x3x224x224")
        pruning = None
        if options.prune:
            from edgekit.stages.prune.run import prune_for_deploy

            model, pruning = prune_for_deploy(model, options)
        pt2 = save_pt2(model, out_dir / "model.pt2", options.inputs)
        art = export_onnx(model, target, ExportOptions(inputs=options.inputs), source_name=model_spec)
        if pruning:  # the report's model block and rows read it from here
            for a in (pt2, art):
                a.provenance["pruning"] = pruning
                a.save_sidecar()
        return art
    src = Path(model_spec)
    if src.suffix != ".onnx":
        raise InvalidInputError(f"unsupported model '{model_spec}'", hint="give an .onnx file or a PyTorch model")
    info = describe_onnx(src)  # validates the file before anything is written
    if src.resolve() != target.resolve():
        with atomic_path(target) as tmp:
            shutil.copyfile(src, tmp)
    art = Artifact(target, "onnx", info.precision, None, info.inputs, info.outputs, {"from": str(src)})
    return art.save_sidecar()


def resolve_inputs(model_inputs: list[TensorSpec], overrides: tuple[TensorSpec, ...]) -> list[TensorSpec]:
    by_name = {s.name: s for s in overrides}
    unknown = set(by_name) - {s.name for s in model_inputs}
    if unknown:
        raise InvalidInputError(
            f"--input names '{sorted(unknown)[0]}', which the model does not have",
            hint="model inputs: " + ", ".join(s.name for s in model_inputs),
        )
    return [by_name.get(s.name, s) for s in model_inputs]


class _Context:
    """State shared by the rows of one deploy: built artifacts and their accuracy are reused."""

    def __init__(self, reference, inputs, calib, val, ref_outputs, options: DeployOptions, out_dir: Path):
        self.reference, self.inputs, self.calib, self.val = reference, inputs, calib, val
        self.ref_outputs, self.options, self.out_dir = ref_outputs, options, out_dir
        self.artifacts: dict[tuple[str, str], Artifact] = {}
        self.accuracy: dict[Path, dict] = {}

    def rows_for(self, profile: Profile) -> list[dict]:
        precisions = self.options.precisions or tuple(dict.fromkeys(("fp32", profile.runtime.precision)))
        if self.options.devices:  # one row per device, measured there (edgekit.pipeline.deploy_devices)
            from edgekit.pipeline.deploy_devices import device_rows

            rows = [r for p in precisions for r in device_rows(self, profile, p)]
        else:
            rows = [self._row(profile, p) for p in precisions]
        # speedup against the fp32 row measured in the same place
        fp32 = {r["latency_ms"].get("where"): r for r in rows if r["precision"] == "fp32" and r.get("latency_ms")}
        for r in rows:
            base = fp32.get(r["latency_ms"].get("where")) if r.get("latency_ms") else None
            if base:
                r["speedup_vs_fp32"] = round(base["latency_ms"]["p50"] / r["latency_ms"]["p50"], 3)
        return rows

    def _row(self, profile: Profile, precision: str) -> dict:
        row = {"profile": profile.name, "target": profile.runtime.target, "precision": precision,
               "status": "ok", "error": None, "artifact": None, "latency_ms": None,
               "speedup_vs_fp32": None, "accuracy": None, "violations": [], "passed": False}
        try:
            backend = get_backend(profile.runtime.target)
            try:
                backend.check_available()
            except TargetUnavailableError as missing:
                if not hasattr(backend, "cpu_fallback"):
                    raise
                return self._simulated_row(row, backend, profile, precision, missing)
            artifact = self._build(backend, profile, precision)
            row["artifact"] = {"path": str(artifact.path.relative_to(self.out_dir)) if artifact.path.is_relative_to(self.out_dir)
                               else str(artifact.path), "size_bytes": artifact.size_bytes(), "sha256": artifact.sha256(),
                               "provenance": artifact.provenance}
            with backend.runner(artifact, profile.threads(), profile) as runner:
                if self.ref_outputs is not None:
                    row["accuracy"] = self._accuracy(runner, artifact)
                feed = random_feed(runner.input_specs, batch=self.options.bench.batch)
                if self.val is not None:  # bench on a real sample when there is one
                    feed = next(iter(self.val)).feed
                probe = SpeedProbe(profile.threads())  # the machine's speed, paired with each run
                if hasattr(runner, "timing_report"):  # TensorRT: time the benchmark runs only
                    runner.reset_timings()
                latency, samples = bench_runner(runner, feed, self.options.bench, probe)
                latency.update(threads=profile.threads(), where=profile.where())
                if hasattr(runner, "timing_report"):  # GPU compute, H2D/D2H, throughput (trtexec-style)
                    latency["device_timing"] = runner.timing_report(skip=1 + self.options.bench.warmup)
                # compact run-ordered subsets: the report's distribution charts and `check`'s noise-aware test
                latency["samples"] = compact_samples(samples)
                latency["probe_samples"] = compact_samples(probe.samples)
                if runner.effective_precision:
                    latency["effective_precision"] = runner.effective_precision
                row["latency_ms"] = latency
                if warning := cv_warning(latency):
                    row.setdefault("warnings", []).append(warning)
            row["violations"] = check_budgets(profile, row, self.options.accuracy_budget)
            row["passed"] = not row["violations"]
        except TargetUnavailableError as e:
            row.update(status="skipped", error=one_line(e), exit_code=e.exit_code)
        except EdgekitError as e:
            row.update(status="failed", error=one_line(e), exit_code=e.exit_code)
        return row

    def _build(self, backend, profile: Profile, precision: str) -> Artifact:
        key = (backend.name, precision, _options_key(profile))
        if key in self.artifacts:
            return self.artifacts[key]
        out = self.out_dir / f"{backend.name}-{precision}"
        source = self._source_for(backend)
        if precision == "int8":
            if self.calib is None:
                raise InvalidInputError("int8 needs calibration data", hint="pass --calib DATA")
            quant = replace(self.options.quant, extra={**self.options.quant.extra, **profile.runtime.options})

            def build(q: QuantOptions, folder: Path) -> Artifact:
                art = backend.quantize(source, self.calib, q, folder)
                if art.format != backend.deploy_format:
                    art = backend.compile(art, profile, folder, CompileOptions(precision, tuple(self.inputs)))
                return art

            if self._searches(profile):
                artifact = self._searched_int8(backend, build, quant, profile, out)
            else:
                artifact = build(quant, out)
        else:
            artifact = backend.compile(source, profile, out, CompileOptions(precision, tuple(self.inputs),
                                                                             dict(profile.runtime.options)))
        self.artifacts[key] = artifact
        return artifact

    def _searches(self, profile: Profile) -> bool:
        """int8 is searched when a budget applies to it: --accuracy-budget or the profile's accuracy budgets."""
        budgets = profile.budgets
        wanted = (self.options.accuracy_budget, budgets.max_accuracy_drop, budgets.min_top1_agreement,
                  budgets.min_cosine)
        return self.ref_outputs is not None and any(v is not None for v in wanted)

    def _searched_int8(self, backend, build, quant: QuantOptions, profile: Profile, out: Path) -> Artifact:
        """The int8 that meets the budget (edgekit.stages.search.search: calibration, then layers to float)."""
        from edgekit.stages.search.search import search_in_deploy

        result = search_in_deploy(self, backend, build, quant, profile, out)
        if result.accuracy is not None:  # the search measured the kept file on this run's data already
            self.accuracy[result.artifact.path] = result.accuracy
        return result.artifact

    def _simulated_row(self, row: dict, backend, profile: Profile, precision: str, missing: TargetUnavailableError) -> dict:
        """No engine can be built here (TensorRT): make the ONNX it would be built from, check it on the CPU."""
        key = (backend.name, precision, "cpu", _options_key(profile))
        if key not in self.artifacts:
            quant = replace(self.options.quant, extra={**self.options.quant.extra, **profile.runtime.options})
            out = self.out_dir / f"{backend.name}-{precision}"
            if precision == "int8" and self._searches(profile):
                def build(q: QuantOptions, folder: Path) -> Artifact:
                    return backend.cpu_fallback(self.reference, self.calib, precision, q, folder)

                self.artifacts[key] = self._searched_int8(backend, build, quant, profile, out)
            else:
                self.artifacts[key] = backend.cpu_fallback(self.reference, self.calib, precision, quant, out)
        artifact = self.artifacts[key]
        path = artifact.path.relative_to(self.out_dir) if artifact.path.is_relative_to(self.out_dir) else artifact.path
        row["artifact"] = {"path": str(path), "size_bytes": artifact.size_bytes(), "sha256": artifact.sha256(),
                           "provenance": artifact.provenance}
        with backend.runner(artifact, profile.threads(), profile) as runner:
            if self.ref_outputs is not None:
                row["accuracy"] = self._accuracy(runner, artifact)
            row["simulated"] = runner.effective_precision
        budget = self.options.accuracy_budget if self.options.accuracy_budget is not None else profile.budgets.max_accuracy_drop
        row["violations"] = accuracy_violations(row["accuracy"], profile.budgets.min_top1_agreement, budget,
                                                 profile.budgets.min_cosine) if row["accuracy"] else []
        row.update(status="skipped", passed=not row["violations"],
                   error=f"engine not built: {one_line(missing)}; accuracy: {row['simulated']}; "
                         "latency not measured (CPU time says nothing about the GPU)")
        if self.options.require_engine:
            row["exit_code"] = missing.exit_code
        return row

    def _source_for(self, backend) -> Artifact:
        pt2 = self.out_dir / "model.pt2"
        if getattr(backend, "prefers_pytorch", False) and pt2.exists():
            return Artifact.load(pt2)
        return self.reference

    def _accuracy(self, runner, artifact: Artifact) -> dict:
        if artifact.path not in self.accuracy:
            outs = run_outputs(runner, self.val, self.ref_outputs.output_names, f"validating {artifact.path.name}")
            self.accuracy[artifact.path] = compare(self.ref_outputs, outs)
        return self.accuracy[artifact.path]


def _options_key(profile: Profile) -> str:
    """Profile options as a cache key (options may hold tables, which do not hash)."""
    import json

    return json.dumps(profile.runtime.options, sort_keys=True, default=str)







