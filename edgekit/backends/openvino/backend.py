"""OpenVINO: ONNX -> IR (.xml + .bin), NNCF int8 (openvino_nncf.py), and a runner for CPU / GPU / NPU."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekit.backends.base import Backend, CompileOptions, QuantOptions, Runner
from edgekit.backends.openvino.graph import NodeIndex, conversion_error, summary
from edgekit.core.artifact import Artifact
from edgekit.core.atomic import atomic_dir, write_json
from edgekit.core.errors import BackendError, InvalidInputError, TargetUnavailableError
from edgekit.core.hostinfo import package_version
from edgekit.core.progress import status
from edgekit.core.tensors import TensorSpec

INSTALL_HINT = "pip install 'edgekit[openvino]'"
DEFAULT_DEVICE = "CPU"
PHYSICAL_DEVICES = ("CPU", "GPU", "NPU")
VIRTUAL_DEVICES = ("AUTO", "HETERO", "MULTI", "BATCH")  # these name other devices after a ':'
PRECISION_HINTS = ("f32", "bf16", "f16")
# [runtime.options] this target reads (profile) -> what they do, for the error on a typo
OPTIONS = {
    "device": "CPU | GPU | NPU | AUTO ... (compile and NNCF target device)",
    "inference_precision": "f32 | bf16 | f16 (override the runtime's choice)",
    "fast_bias_correction": "NNCF fast bias correction (default false)",
    "preset": "NNCF preset: performance | mixed (default: from the model type)",
    "overflow_fix": "NNCF overflow fix: enable | first_layer | disable (default: disable on VNNI/AMX CPUs)",
    "activation_ranges": "NNCF activation range estimator: minmax | histogram (default minmax)",
    "smooth_quant": "SmoothQuant alpha for LayerNorm -> MatMul, 0 < alpha <= 1, or false (default: NNCF's, 0.95 on transformers)",
}
OV_DTYPES = {"f32": "float32", "f16": "float16", "i64": "int64", "i32": "int32", "i8": "int8", "u8": "uint8",
             "boolean": "bool"}
IR_SUFFIX = {"fp32": "", "fp16": ".fp16", "int8": ".int8"}


def import_openvino():
    """The `openvino` module, with its usage telemetry declined for this process.

    OpenVINO's model converter and NNCF send usage events to Google Analytics unless the user opted out
    in ~/intel; edgekit never reaches the network at run time, so it declines without touching that file.
    """
    try:
        import openvino as ov
    except ImportError as e:
        raise TargetUnavailableError("openvino is not installed", hint=INSTALL_HINT) from e
    _decline_telemetry()
    return ov


def _decline_telemetry() -> None:
    try:
        from openvino_telemetry.utils.opt_in_checker import ConsentCheckResult, OptInChecker
    except ImportError:  # no telemetry package: nothing is sent
        return
    OptInChecker.check = lambda self, *args, **kwargs: ConsentCheckResult.DECLINED


def check_options(options: dict) -> dict:
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise InvalidInputError(
            f"unknown openvino option '{unknown[0]}' (profile [runtime.options])",
            hint="known: " + "; ".join(f"{k} = {v}" for k, v in OPTIONS.items()),
        )
    hint = options.get("inference_precision")
    if hint is not None and hint not in PRECISION_HINTS:
        raise InvalidInputError(f"inference_precision = '{hint}'", hint=f"one of {', '.join(PRECISION_HINTS)}")
    return options


class OpenVinoBackend(Backend):
    name = "openvino"
    deploy_format = "openvino-ir"

    def check_available(self) -> None:
        import_openvino()

    def versions(self) -> dict[str, str]:
        return {"openvino": package_version("openvino") or "missing", "nncf": package_version("nncf") or "missing"}

    def compile(self, source: Artifact, profile, out_dir: Path, options: CompileOptions) -> Artifact:
        """IR with fp32 weights, or fp16-compressed weights; an int8 (QDQ) ONNX becomes an int8 IR."""
        check_options(options.extra)
        if options.precision not in IR_SUFFIX:
            raise InvalidInputError(f"unknown precision '{options.precision}'", hint="fp32, fp16 or int8")
        if options.precision == "int8" and source.precision != "int8":
            raise InvalidInputError(
                "OpenVINO int8 needs calibration data",
                hint=f"edgekit quantize {source.path.name} --target openvino --calib DATA -o OUT",
            )
        precision = "int8" if source.precision == "int8" else options.precision
        model, index = load_model(source)
        reshaped = reshape_inputs(model, options.inputs, index)
        out = Path(out_dir) / f"{ir_stem(source.path)}{IR_SUFFIX[precision]}.xml"
        provenance = {
            "from": source.path.name,
            "converter": f"openvino.{'convert_model' if source.format == 'onnx' else 'Core.read_model'} {ov_version()}",
            "weights": "fp16 (compressed)" if precision == "fp16" else precision,
            **({"reshaped": reshaped} if reshaped else {}),
        }
        return save_ir(model, out, precision, provenance, source.outputs)

    def quantize(self, source: Artifact, calib, options: QuantOptions, out_dir: Path) -> Artifact:
        from edgekit.backends.openvino.nncf import quantize_ir

        check_options(options.extra)
        return quantize_ir(source, calib, options, Path(out_dir))

    def runner(self, artifact: Artifact, threads: int | None = None, profile=None) -> Runner:
        return OpenVinoRunner(artifact, run_settings(artifact, threads, profile))


def ov_version() -> str:
    return package_version("openvino") or import_openvino().__version__


def ir_stem(path: Path) -> str:
    """`reference.onnx` -> `reference`; `model.int8.onnx` -> `model` (the IR gets its own precision suffix)."""
    return re.sub(r"\.(int8|fp16)$", "", path.stem)


def load_model(source: Artifact):
    """The source as an ov.Model (ONNX through ov.convert_model, or an IR), with its node index."""
    ov = import_openvino()
    if source.format not in ("onnx", "openvino-ir"):
        raise InvalidInputError(f"OpenVINO converts ONNX models or reads IR, got {source.format}: {source.path}")
    if source.format == "openvino-ir":
        try:
            model = ov.Core().read_model(str(source.path))
        except Exception as e:
            raise InvalidInputError(f"{source.path} is not a readable OpenVINO IR: {summary(e)}",
                                    hint="the .xml needs its .bin beside it") from e
        return model, NodeIndex(model)
    index = NodeIndex.from_onnx(source.path)
    with status(f"converting {source.path.name} to OpenVINO"):
        try:
            model = ov.convert_model(str(source.path))
        except Exception as e:
            raise conversion_error(e, index, source.path.name) from e
    index.add_ov_model(model)
    return model, index


def reshape_inputs(model, specs, index: NodeIndex | None = None) -> dict[str, str]:
    """Give inputs the shapes the user asked for (`--input name:1x3x224x224`); returns what changed."""
    ov = import_openvino()
    if not specs:
        return {}
    current = {s.name: s for s in io_specs(model.inputs)}
    unknown = [s.name for s in specs if s.name not in current]
    if unknown:
        raise InvalidInputError(f"--input names '{unknown[0]}', which the model does not have",
                                hint="model inputs: " + ", ".join(current))
    changed = {s.name: s.display_shape() for s in specs if s.shape != current[s.name].shape}
    if not changed:
        return {}
    shapes = {s.name: ov.PartialShape([-1 if d is None else d for d in s.shape]) for s in specs if s.name in changed}
    try:
        model.reshape(shapes)
    except Exception as e:
        node = index.find_in(str(e)) if index else None
        where = f" at {node}" if node else ""
        raise InvalidInputError(
            f"cannot give the model input shape {', '.join(f'{k}:{v}' for k, v in changed.items())}{where}: "
            f"{summary(e)}",
            hint="the model's inputs: " + ", ".join(f"{s.name}:{s.display_shape()}" for s in current.values()),
        ) from e
    return changed


def io_specs(ports, preferred: list[str] | None = None) -> list[TensorSpec]:
    return [TensorSpec(port_name(p, preferred), _dims(p), OV_DTYPES.get(p.get_element_type().get_type_name(), "float32"))
            for p in ports]


def port_name(port, preferred: list[str] | None = None) -> str:
    """The tensor name of a port; the ONNX name when OpenVINO gave the port several."""
    names = port.get_names()
    for name in preferred or ():
        if name in names:
            return name
    return port.get_any_name()


def _dims(port) -> tuple[int | None, ...]:
    shape = port.get_partial_shape()
    if shape.rank.is_dynamic:
        return ()
    return tuple(d.get_length() if d.is_static else None for d in shape)


def _layout(spec: TensorSpec) -> str | None:
    # ONNX convolutions take NCHW; other ranks carry no convention worth guessing
    return {4: "NCHW", 2: "NC"}.get(len(spec.shape))


def save_ir(model, out: Path, precision: str, provenance: dict, preferred_outputs: list[str]) -> Artifact:
    """Write .xml, .bin and the sidecar together: all three appear, or none (atomic_dir)."""
    ov = import_openvino()
    inputs = io_specs(model.inputs)
    outputs = io_specs(model.outputs, preferred_outputs)
    art = Artifact(
        path=out, format="openvino-ir", precision=precision, target="openvino",
        inputs=inputs, outputs=[o.name for o in outputs],
        provenance={
            **provenance, "openvino_version": ov_version(),
            "input_shapes": {s.name: s.display_shape() for s in inputs},
            "output_shapes": {s.name: s.display_shape() for s in outputs},
            "layout": {s.name: _layout(s) for s in inputs},
        },
    )
    with atomic_dir(out.parent) as tmp, status(f"writing {out.name}"):
        try:
            ov.save_model(model, str(tmp / out.name), compress_to_fp16=precision == "fp16")
        except Exception as e:
            raise BackendError(f"OpenVINO could not save {out.name}: {summary(e)}") from e
        write_json(tmp / art.sidecar_path.name, art.to_dict())
    return art


@dataclass(frozen=True)
class RunSettings:
    device: str = DEFAULT_DEVICE
    threads: int | None = None  # None = the runtime's default
    precision_hint: str | None = None  # f32 | bf16 | f16; None = the device's default
    performance_hint: str = "LATENCY"


def run_settings(artifact: Artifact, threads: int | None, profile=None) -> RunSettings:
    """Device and threads from the profile; FP32 artifacts run f32 (AMX CPUs would otherwise run bf16)."""
    options = check_options(dict(profile.runtime.options) if profile else {})
    hint = options.get("inference_precision") or ("f32" if artifact.precision == "fp32" else None)
    return RunSettings(device=str(options.get("device") or DEFAULT_DEVICE), threads=threads, precision_hint=hint)


def check_device(core, device: str) -> None:
    """Exit 3 naming the devices present when the profile asks for one this machine lacks."""
    present = list(core.available_devices)
    family, _, rest = device.partition(":")
    wanted = [d for d in rest.split(",") if d] if family in VIRTUAL_DEVICES else [device]
    missing = [d for d in wanted if not _present(d, present)]
    if missing:
        family = missing[0].split(".")[0]
        what = "is not present on this machine" if family in PHYSICAL_DEVICES else "is not an OpenVINO device"
        raise TargetUnavailableError(
            f"OpenVINO device '{missing[0]}' {what}; devices present: {', '.join(present) or 'none'}",
            hint=f"set [runtime.options] device to one of: {', '.join(present)}" if present
            else "install the device's OpenVINO driver",
        )


def _present(device: str, present: list[str]) -> bool:
    return device in present or any(p.split(".")[0] == device for p in present)


class OpenVinoRunner(Runner):
    def __init__(self, artifact: Artifact, settings: RunSettings):
        ov = import_openvino()
        core = ov.Core()
        check_device(core, settings.device)
        start = time.perf_counter()
        try:
            model = core.read_model(str(artifact.path))
        except Exception as e:
            raise InvalidInputError(f"{artifact.path} is not a readable OpenVINO IR: {summary(e)}",
                                    hint="the .xml needs its .bin beside it") from e
        config = {"PERFORMANCE_HINT": settings.performance_hint}
        if settings.threads and settings.device.startswith("CPU"):  # other devices reject the property
            config["INFERENCE_NUM_THREADS"] = int(settings.threads)
        if settings.precision_hint:
            config["INFERENCE_PRECISION_HINT"] = settings.precision_hint
        try:
            self.compiled = core.compile_model(model, settings.device, config)
        except Exception as e:
            node = NodeIndex(model).find_in(str(e))
            raise BackendError(f"OpenVINO could not compile {artifact.path.name} for {settings.device}"
                               f"{f' at {node}' if node else ''}: {summary(e)}") from e
        self.load_ms = (time.perf_counter() - start) * 1e3
        self._model = model  # for naming the node when an inference fails
        self.request = self.compiled.create_infer_request()
        self.input_specs = io_specs(self.compiled.inputs)
        self.output_names = [s.name for s in io_specs(self.compiled.outputs, artifact.outputs)]
        self._dtypes = {s.name: np.dtype(s.dtype) for s in self.input_specs}
        self.settings = settings
        # an IR without a sidecar says "fp32" even when NNCF quantized it: the graph tells
        quantized = artifact.precision == "int8" or any(op.get_type_name() == "FakeQuantize" for op in model.get_ops())
        self.effective_precision = effective_precision(self.compiled, quantized)

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = [n for n in self._dtypes if n not in feed]
        if missing:
            raise InvalidInputError(f"no data for model input '{missing[0]}'", hint=f"inputs: {', '.join(self._dtypes)}")
        for spec in self.input_specs:
            if spec.shape and not spec.accepts(np.shape(feed[spec.name])):  # () = rank unknown
                raise InvalidInputError(
                    f"input '{spec.name}' has shape {'x'.join(map(str, np.shape(feed[spec.name])))}, "
                    f"the model expects {spec.display_shape()}",
                    hint=f"recompile with --input {spec.name}:DIMS (? for a dynamic axis)")
        inputs = {n: np.ascontiguousarray(feed[n], dtype=dt) for n, dt in self._dtypes.items()}
        try:
            # sharing skips a copy of the inputs; outputs are copied, so later calls cannot overwrite them
            result = self.request.infer(inputs, share_inputs=True)
        except Exception as e:
            node = NodeIndex(self._model).find_in(str(e))
            raise BackendError(f"OpenVINO inference failed{f' at {node}' if node else ''}: {summary(e)}") from e
        return dict(zip(self.output_names, result.to_tuple()))

    def close(self) -> None:
        self.request = self.compiled = self._model = None


def effective_precision(compiled, quantized: bool) -> str | None:
    """What the device really computes in: `f32`, `bf16`, `f16`, or `int8+bf16` (int8 with float parts in bf16)."""
    try:
        hint = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
    except Exception:  # a device without the property (some plugins)
        return None
    return f"int8+{hint}" if quantized else hint
