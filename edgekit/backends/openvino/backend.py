"""OpenVINO: ONNX -> IR (.xml + .bin), NNCF int8 (openvino/nncf.py), and a runner for CPU / GPU / NPU."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from edgekit.backends.base import (
    Backend,
    CompileOptions,
    LayerRanking,
    QuantOptions,
    Runner,
    SensitivityTask,
    qdq_layer_ranking,
)
from edgekit.backends.calibration import SMOOTH_ALPHA, per_channel_variants, wants_smoothing
from edgekit.backends.openvino.graph import NodeIndex, summary
from edgekit.backends.openvino.layers import ir_layer_errors
from edgekit.backends.openvino.runtime import (
    PHYSICAL_DEVICES,
    VIRTUAL_DEVICES,
    import_openvino,
    io_specs,
    ir_stem,
    load_model,
    ov_version,
    reshape_inputs,
    save_ir,
)
from edgekit.core.artifact import Artifact
from edgekit.core.errors import BackendError, InvalidInputError, TargetUnavailableError
from edgekit.core.hostinfo import package_version
from edgekit.onnx.attention import transformer_rules
from edgekit.onnx.mixed_range import mixed_range_enabled
from edgekit.onnx.sensitivity import LayerError

DEFAULT_DEVICE = "CPU"
PRECISION_HINTS = ("f32", "bf16", "f16")
# [runtime.options] this target reads (profile) -> what they do, for the error on a typo
OPTIONS = {
    "device": "CPU | GPU | NPU | AUTO ... (compile and NNCF target device)",
    "inference_precision": "f32 | bf16 | f16 (override the runtime's choice)",
    "fast_bias_correction": "NNCF fast bias correction (default false)",
    "preset": "NNCF preset: performance | mixed (default: from the model type)",
    "overflow_fix": "NNCF overflow fix: enable | first_layer | disable (default: disable on VNNI/AMX CPUs)",
    "activation_ranges": "NNCF activation range estimator: minmax | histogram (default minmax)",
    "smooth_quant": "SmoothQuant alpha for LayerNorm -> MatMul, 0 < alpha <= 1, or false "
                    "(default: edgekit's 0.5 on a transformer ONNX, else NNCF's 0.95 on transformers)",
    "mixed_range_float": "keep ops whose inputs differ > 32x in range in float (default true; edgekit.onnx.mixed_range)",
    "transformer_rules": "edgekit's transformer defaults on a transformer ONNX (default true; edgekit.onnx.attention)",
    "split_outliers": "MLP down-projection outlier input channels in float (default true; edgekit.onnx.outliers)",
    "float_down_projections": "MLP down-projections wholly in float (default: true where the overflow fix is on)",
}
IR_SUFFIX = {"fp32": "", "fp16": ".fp16", "int8": ".int8"}
FUSED_ATTENTION = "ScaledDotProductAttention"  # the op type OpenVINO fuses attention into


def check_options(options: dict) -> dict:
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise InvalidInputError(
            f"unknown openvino option '{unknown[0]}' (profile [runtime.options])",
            hint="known: " + "; ".join(f"{k} = {v}" for k, v in OPTIONS.items()),
        )
    mixed_range_enabled(options)
    hint = options.get("inference_precision")
    if hint is not None and hint not in PRECISION_HINTS:
        raise InvalidInputError(f"inference_precision = '{hint}'", hint=f"one of {', '.join(PRECISION_HINTS)}")
    return options


class OpenVinoBackend(Backend):
    name = "openvino"
    deploy_format = "openvino-ir"
    inspectable_formats = ("openvino-ir",)

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
        rules = transformer_rules(source.path, options.extra) if source.format == "onnx" else None
        downs = saturating_cpu_downs(options, rules)
        with tempfile.TemporaryDirectory(prefix="edgekit-ov-split-") as tmp:
            split, entry = split_outlier_channels(source, calib, options, Path(tmp), rules)
            quant = with_transformer_defaults(replace(options, exclude=options.exclude + downs), rules)
            art = quantize_ir(split, calib, quant, Path(out_dir))
        if split is source and not downs:
            return art
        art.provenance.update({"from": source.path.name, **entry,
                               "excluded_nodes": list(options.exclude), "float_down_projections": list(downs)})
        return art.save_sidecar()

    def runner(self, artifact: Artifact, threads: int | None = None, profile=None) -> Runner:
        return OpenVinoRunner(artifact, run_settings(artifact, threads, profile))

    def calibration_variants(self, quant: QuantOptions, reference: Path) -> list[dict]:
        extra = quant.extra
        variants = per_channel_variants(quant)
        if extra.get("fast_bias_correction"):  # NNCF's full bias correction
            variants.append({"extra": {"fast_bias_correction": False}})
        rules = transformer_rules(reference, extra)
        if wants_smoothing(quant, reference):
            if not rules.smooths(extra):  # a transformer is smoothed by default (with_transformer_defaults)
                variants.append({"extra": {"smooth_quant": SMOOTH_ALPHA}})
            # OpenVINO fuses attention into one op whose int8 inputs lose most of the rest: on the benchmark
            # transformer, smoothing alone left cosine at 0.908; with attention in float it reached 0.999
            variants.append({"exclude": (FUSED_ATTENTION,), "extra": {"smooth_quant": SMOOTH_ALPHA}})
        already = saturating_cpu_downs(quant, rules)
        down = [n for n in rules.down_projections if n not in quant.exclude and n not in already]
        if down:  # the MLP down-projections in float (edgekit.onnx.attention): all-MiniLM-L6-v2 0.9906 -> 0.9976
            variants.append({"exclude": tuple(down)})
        if extra.get("activation_ranges", "minmax") == "minmax":
            variants.append({"extra": {"activation_ranges": "histogram"}})  # NNCF's counterpart of percentile
        if extra.get("preset") != "mixed":  # asymmetric activations
            variants.append({"extra": {"preset": "mixed"}})
        return variants

    def layer_sensitivity(self, task: SensitivityTask) -> LayerRanking:
        """On the IR itself, named by OpenVINO ops (NNCF ignored_scope); an ONNX proxy is named by the
        reference's nodes, which is the graph OpenVINO converts and resolves `exclude` on."""
        if task.int8 is not None and task.int8.format == self.deploy_format:
            return LayerRanking.named_by_rows(ir_layer_errors(task.int8, task.reference.path, task.sample,
                                                              task.max_samples))
        return qdq_layer_ranking(task, names_from_reference=True)

    def inspect_layers(self, artifact: Artifact, reference: Path, data, max_samples: int) -> list[LayerError]:
        return ir_layer_errors(artifact, reference, data, max_samples)


def with_transformer_defaults(options: QuantOptions, rules) -> QuantOptions:
    """`options` with the transformer's SmoothQuant default (edgekit.onnx.attention: alpha 0.5 on the ONNX
    source, the user's `smooth_quant` wins) instead of NNCF's own (0.95). all-MiniLM-L6-v2 with the outlier
    split, on a VNNI/AMX Xeon (no overflow fix), embedding cosine / neighbour agreement against FP32: NNCF's
    0.9972 / 0.891 (TorchScript export) and 0.9973 / 0.906 (dynamo), edgekit's 0.9984 / 0.953 on both."""
    if rules is None or not rules.smooths(options.extra):
        return options
    return replace(options, extra=rules.quant_extra(options.extra))


def saturating_cpu_downs(options: QuantOptions, rules) -> tuple[str, ...]:
    """The MLP down-projections kept wholly in float (option `float_down_projections`): by default only where
    the overflow fix is on (a CPU whose int8 kernels saturate, edgekit.core.int8_cpu), whose 7-bit weights cost
    the split's gain. all-MiniLM-L6-v2 with the fix forced on an AVX-512 VNNI EPYC, cosine / neighbour agreement against
    FP32: split only 0.9969 / 0.938 (TorchScript) and 0.9969 / 0.922 (dynamo); with the down-projections in
    float too 0.9983 / 0.953 and 0.9983 / 0.938, at int8 / FP32 time 0.49 -> 0.63."""
    if rules is None:
        return ()
    from edgekit.backends.openvino.nncf import default_overflow_fix, nncf_target_device

    device = nncf_target_device(str(options.extra.get("device") or "ANY"))
    overflow = options.extra.get("overflow_fix") or default_overflow_fix(device)
    return tuple(n for n in rules.float_down_projections(options.extra, default=overflow == "enable")
                 if n not in options.exclude)


def split_outlier_channels(source: Artifact, calib, options: QuantOptions, work: Path,
                           rules=None) -> tuple[Artifact, dict]:
    """An ONNX transformer source with its MLP down-projections' outlier input channels split off into float
    (edgekit.onnx.outliers; NNCF leaves the Einsum they go to in float): all-MiniLM-L6-v2 embedding cosine 0.9906
    -> 0.9970, neighbour agreement 0.86 -> 0.92 on both exports. (source, {}) when there is nothing to split.
    `rules`: the source's transformer_rules, when the caller has them."""
    if source.format != "onnx":
        return source, {}
    rules = rules or transformer_rules(source.path, options.extra)
    path, entry = rules.split_outliers(source.path, work, calib, options)
    if path == source.path:
        return source, {}
    return replace(source, path=path), {**rules.summary(), **entry}


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
        # not np.ascontiguousarray, which turns a scalar input (silero-vad's `sr`) into shape (1)
        inputs = {n: np.asarray(feed[n], dtype=dt, order="C") for n, dt in self._dtypes.items()}
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
