"""TensorRT: explicit-quantization (Q/DQ) int8 ONNX, engine build for TensorRT 10 and 11, runner.

What needs what:
- quantize (Q/DQ ONNX) and fp16 conversion need only ONNX Runtime (plus ModelOpt, when
  installed): they run on any machine, and the result is validated there on the CPU;
- compile (engine build) and the engine runner need TensorRT and an NVIDIA GPU.
`check_available` is the second (what `doctor`, `compile` and `deploy` ask);
`check_quantize_available` the first. `cpu_fallback` is what `deploy` makes and checks on a
machine without TensorRT: the ONNX the engine would be built from.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import fields, replace
from pathlib import Path

import onnx

from edgekit.backends.base import Backend, CompileOptions, QuantOptions, Runner
from edgekit.backends.calibration import SMOOTH_ALPHA, per_channel_variants, range_variants, wants_smoothing
from edgekit.backends.onnxruntime import CalibrationReader, OnnxRuntimeRunner, preprocess_for_quantization
from edgekit.backends.tensorrt.plan import BuildSettings
from edgekit.backends.tensorrt.qdq import (
    QdqSettings,
    name_unnamed_nodes,
    plan_placement,
    quantize_with_ort,
    resolved_method,
    summarize_qdq,
)
from edgekit.core.artifact import Artifact
from edgekit.core.atomic import atomic_path
from edgekit.core.errors import BackendError, InvalidInputError, TargetUnavailableError
from edgekit.core.hostinfo import package_version
from edgekit.core.onnx_model import graph_inputs, load_onnx
from edgekit.onnx.mixed_range import announce, detect_for_quantization, float_node_names

RUNNER_OPTIONS = ("cuda_graph", "timing_cache_dir")
OPTION_KEYS = tuple(sorted({f.name for f in fields(QdqSettings)} - {"method", "per_channel", "max_samples", "exclude"}
                           | {f.name for f in fields(BuildSettings)} | set(RUNNER_OPTIONS)))


class TensorRtBackend(Backend):
    name = "tensorrt"
    deploy_format = "tensorrt-engine"
    builds_on_device = True  # engines are not portable: built on the device itself
    has_cpu_fallback = True  # cpu_fallback: the Q/DQ or fp16 ONNX, checked with ONNX Runtime

    def check_available(self) -> None:
        """TensorRT 10+ and a visible NVIDIA GPU: what building and running engines needs."""
        from edgekit.backends.tensorrt.cuda import open_cuda
        from edgekit.backends.tensorrt.engine import INSTALL_HINT, trt_version

        version = trt_version()
        if version.major < 10:
            raise TargetUnavailableError(f"TensorRT {version} is too old (edgekit needs 10 or newer)", hint=INSTALL_HINT)
        open_cuda()

    def check_quantize_available(self) -> None:
        """Q/DQ ONNX and fp16 ONNX are made and checked with ONNX Runtime on any CPU."""
        try:
            import onnxruntime  # noqa: F401
        except ImportError as e:
            raise TargetUnavailableError("onnxruntime is not installed", hint="pip install onnxruntime") from e

    def versions(self) -> dict[str, str]:
        found = {}
        try:
            from edgekit.backends.tensorrt.engine import trt_version

            found["tensorrt"] = str(trt_version())
        except TargetUnavailableError:
            found["tensorrt"] = "missing"
        for dist in ("cuda-python", "nvidia-modelopt", "onnxconverter-common"):
            if version := package_version(dist):
                found[dist] = version
        return found

    # --- Q/DQ int8 ONNX ---------------------------------------------------------------------

    def quantize(self, source: Artifact, calib, options: QuantOptions, out_dir: Path) -> Artifact:
        self.check_quantize_available()
        _check_option_keys(options.extra)
        _require_float_onnx(source)
        settings = QdqSettings.from_options(options, options.extra)
        out = Path(out_dir) / f"{source.path.stem}.qdq.onnx"
        with tempfile.TemporaryDirectory(prefix="edgekit-trt-") as tmp:
            from edgekit.onnx.smoothquant import smooth_for_quantization

            smoothed, smoothing = smooth_for_quantization(source.path, Path(tmp), calib, options.extra,
                                                          settings.max_samples)
            prepared = preprocess_for_quantization(smoothed, Path(tmp) / "prepared.onnx")
            model = load_onnx(prepared)
            if name_unnamed_nodes(model):
                onnx.save(model, str(prepared))
            mixed, mixed_info = detect_for_quantization(prepared, calib, {"mixed_range_float": settings.mixed_range_float})
            placement = plan_placement(model, settings, frozenset(float_node_names(mixed)))
            with atomic_path(out) as tmp_out:
                used, note, samples = _run_quantizer(settings, placement, prepared, tmp_out, calib, Path(tmp))
                summary = summarize_qdq(onnx.load(str(tmp_out)))
                if summary.quantize_nodes == 0:
                    raise BackendError(f"{used} placed no Q/DQ node in {source.path.name}",
                                       hint="check --exclude and the calibration data")
                correction = {"bias_correction": settings.bias_correction}
                if settings.bias_correction:
                    from edgekit.onnx.bias_correction import correct_qdq_biases

                    correction.update(correct_qdq_biases(prepared, Path(tmp_out), calib, settings.max_samples))
        provenance = {
            "from": source.path.name, "quantizer": used, "quantizer_note": note,
            "format": "QDQ (explicit quantization, placed for TensorRT)",
            "calibration": settings.method, "calibration_samples": samples, "calibration_ep": "CPU",
            "activations": "int8 symmetric, per tensor",
            "weights": "int8 symmetric, " + ("per channel" if settings.per_channel else "per tensor"),
            "high_precision": settings.high_precision, "excluded_nodes": placement.excluded,
            "qdq": summary.to_dict(), **mixed_info, **smoothing, **correction,
        }
        if "sparsity" in source.provenance:  # 2:4 weights survive Q/DQ; the engine build reads this
            provenance["sparsity"] = source.provenance["sparsity"]
        art = Artifact(out, "onnx", "int8", self.name, source.inputs, source.outputs, provenance)
        announce(mixed, self.name)
        return art.save_sidecar()

    # --- engine ----------------------------------------------------------------------------

    def compile(self, source: Artifact, profile, out_dir: Path, options: CompileOptions) -> Artifact:
        from edgekit.backends.tensorrt.cuda import open_cuda
        from edgekit.backends.tensorrt.engine import build_engine, trt_version
        from edgekit.backends.tensorrt.plan import plan_build

        self.check_available()
        extra = {**(profile.runtime.options if profile else {}), **options.extra}
        if source.provenance.get("sparsity") == "2:4":  # recorded by edgekit prune --pattern 2:4
            extra.setdefault("sparse_weights", True)
        _check_option_keys(extra)
        if source.format != "onnx":
            raise InvalidInputError(f"TensorRT engines are built from ONNX, got {source.format}: {source.path}")
        if options.precision == "fp16" and source.precision == "fp32":
            source = self.fp16_onnx(source, out_dir)
        settings = BuildSettings.from_options(extra)
        version, device = trt_version(), open_cuda().facts()
        inputs = source.inputs or graph_inputs(load_onnx(source.path, load_external_data=False))
        plan = plan_build(inputs, source.precision, options.precision, settings, version, device, options.inputs)
        out = Path(out_dir) / f"{source.path.stem}.engine"
        built = build_engine(source.path, plan, out, _timing_cache_dir(extra))
        provenance = {
            "from": source.path.name,
            "tensorrt": {"version": str(version), "cuda_runtime": device.cuda_runtime, "cuda_driver": device.cuda_driver,
                         "gpu": device.name, "compute_capability": device.compute_capability, "arch": device.arch,
                         "hardware_compatibility": plan.hardware_compatibility,
                         "version_compatible": plan.version_compatible},
            "build": {**plan.to_dict(), **built},
            "onnx": {k: v for k, v in source.provenance.items() if k in ("quantizer", "calibration", "qdq", "converter")},
        }
        art = Artifact(out, self.deploy_format, plan.precision, self.name, inputs, source.outputs, provenance)
        return art.save_sidecar()

    def fp16_onnx(self, source: Artifact, out_dir: Path, calib=None) -> Artifact:
        """The float16 ONNX a strongly typed fp16 engine is built from (float32 where fp16 overflows)."""
        from edgekit.backends.tensorrt.fp16 import convert_to_fp16

        self.check_quantize_available()
        _require_float_onnx(source)
        out = Path(out_dir) / f"{source.path.stem}.fp16.onnx"
        with atomic_path(out) as tmp:
            provenance = convert_to_fp16(source.path, tmp, calib)
        art = Artifact(out, "onnx", "fp16", self.name, source.inputs, source.outputs,
                       {"from": source.path.name, **provenance})
        return art.save_sidecar()

    def runner(self, artifact: Artifact, threads: int | None = None, profile=None) -> Runner:
        if artifact.format == "onnx":  # the Q/DQ or fp16 ONNX, checked on this CPU
            self.check_quantize_available()
            return CpuSimulationRunner(artifact.path, threads, artifact.precision)
        if artifact.format != self.deploy_format:
            raise InvalidInputError(f"the tensorrt target runs .engine files (or its ONNX on CPU), got {artifact.format}")
        from edgekit.backends.tensorrt.cuda import open_cuda
        from edgekit.backends.tensorrt.engine import trt_version
        from edgekit.backends.tensorrt.plan import check_engine_compatible
        from edgekit.backends.tensorrt.runner import TensorRtRunner

        self.check_available()
        built = artifact.provenance.get("tensorrt") or {}
        if built:
            from edgekit.core.console import warn

            for message in check_engine_compatible(built, trt_version(), open_cuda().facts()):
                warn(message)
        options = profile.runtime.options if profile else {}
        return TensorRtRunner(artifact.path, version_compatible=bool(built.get("version_compatible")),
                              cuda_graph=bool(options.get("cuda_graph", False)))

    def calibration_variants(self, quant: QuantOptions, reference: Path) -> list[dict]:
        quant = replace(quant, method=resolved_method(quant.method))
        variants = per_channel_variants(quant)
        smooth = wants_smoothing(quant, reference)
        if smooth:
            variants.append({"extra": {"smooth_quant": SMOOTH_ALPHA}})
        return variants + range_variants(quant, smooth)

    # --- deploy on a machine without TensorRT ----------------------------------------------

    def cpu_fallback(self, source: Artifact, calib, precision: str, quant: QuantOptions, out_dir: Path) -> Artifact:
        """The ONNX the engine would be built from, made here so it can be checked on the CPU."""
        self.check_quantize_available()
        if precision == "int8":
            if calib is None:
                raise InvalidInputError("int8 needs calibration data", hint="pass --calib DATA")
            return self.quantize(source, calib, quant, out_dir)
        if precision == "fp16":
            return self.fp16_onnx(source, out_dir, calib)
        return source  # fp32: TensorRT builds from the reference ONNX as it is


class CpuSimulationRunner(OnnxRuntimeRunner):
    """The TensorRT-bound ONNX on ONNX Runtime's CPU provider, run exactly as written.

    Graph optimizations are off: ORT would otherwise swap the Q/DQ pairs for its own int8
    kernels, and at its basic level it mis-computed ModelOpt's fp16 Q/DQ graphs (logit cosine
    0.11 instead of 0.995 on EfficientNet-Lite0, ORT 1.32). Unoptimized, the result is the Q/DQ
    arithmetic itself, which is what TensorRT's int8 kernels implement.
    """

    def __init__(self, path: Path, threads: int | None, precision: str):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        super().__init__(path, threads, so)
        what = "QDQ" if precision == "int8" else precision
        self.effective_precision = f"{what} simulated on CPU (ONNX Runtime), not a TensorRT engine"


def _run_quantizer(settings: QdqSettings, placement, prepared: Path, out: Path, calib, tmp: Path):
    """(quantizer used, why, calibration samples): ModelOpt when it can, else ONNX Runtime."""
    from edgekit.backends.tensorrt.modelopt import (
        modelopt_installed,
        modelopt_method,
        modelopt_version,
        quantize_with_modelopt,
        save_calibration,
    )

    choice, note = settings.quantizer, None
    if choice == "auto":
        if not modelopt_installed():
            choice, note = "onnxruntime", "nvidia-modelopt is not installed"
        elif settings.method == "percentile" or not settings.per_channel:
            choice, note = "onnxruntime", "ModelOpt has no percentile calibration / per-tensor int8 weights"
        else:
            choice = "modelopt"
    if choice == "modelopt":
        if not modelopt_installed():
            raise TargetUnavailableError("quantizer = \"modelopt\" but nvidia-modelopt is not installed",
                                         hint="pip install 'edgekit[modelopt]'")
        if not settings.per_channel:
            raise InvalidInputError("ModelOpt quantizes weights per channel only", hint="drop --per-tensor")
        modelopt_method(settings.method)  # refuses percentile before any work
        npz = tmp / "calibration.npz"
        samples = save_calibration(calib, settings.max_samples, npz)
        try:
            quantize_with_modelopt(prepared, out, npz, settings.method, settings.high_precision, sorted(placement.excluded))
            return f"nvidia-modelopt {modelopt_version()}", note, samples
        except TargetUnavailableError as e:
            if settings.quantizer == "modelopt":
                raise
            note = e.message  # installed but broken: say so, and quantize with ONNX Runtime
    if settings.high_precision != "fp32":
        raise InvalidInputError("high_precision = \"fp16\" needs the ModelOpt quantizer",
                                hint="pip install 'edgekit[modelopt]', or use high_precision = \"fp32\"")
    reader = CalibrationReader(calib, settings.max_samples)
    quantize_with_ort(prepared, out, reader, settings, placement)
    return f"onnxruntime.quantization {package_version('onnxruntime')} (TensorRT placement)", note, reader.count


def _require_float_onnx(source: Artifact) -> None:
    if source.format != "onnx":
        raise InvalidInputError(f"the tensorrt target quantizes ONNX models, got {source.format}: {source.path}")
    if source.precision != "fp32":
        raise InvalidInputError(f"{source.path.name} is already {source.precision}",
                                hint="quantize or convert the float32 model")


def _check_option_keys(extra: dict) -> None:
    unknown = sorted(set(extra) - set(OPTION_KEYS))
    if unknown:
        raise InvalidInputError(f"unknown tensorrt option '{unknown[0]}'", hint="allowed: " + ", ".join(OPTION_KEYS))


def _timing_cache_dir(extra: dict) -> Path:
    if extra.get("timing_cache_dir"):
        return Path(extra["timing_cache_dir"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "edgekit" / "tensorrt"
