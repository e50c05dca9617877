"""NNCF int8 post-training quantization of an OpenVINO model: edgekit's settings and why.

Measured on EfficientNet-Lite0 with the shipped photos (benchmarks/openvino_int8.py): NNCF defaults agree with
FP32 on 0.906 of the confident crops (logit cosine 0.983); `fast_bias_correction=False` 0.962 (0.986); that
plus no overflow fix on a VNNI/AMX CPU 1.000 (0.994). The overflow fix quantizes first-layer weights to
7 bits so that pre-VNNI int8 kernels cannot saturate; CPUs with VNNI/AMX do not need it.
"""

from __future__ import annotations

import contextlib
import fnmatch
import glob
import logging
import sys
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from edgekit.backends.base import QuantOptions
from edgekit.backends.openvino.graph import NodeIndex, summary
from edgekit.backends.openvino.runtime import (
    INSTALL_HINT,
    PHYSICAL_DEVICES,
    VIRTUAL_DEVICES,
    import_openvino,
    ir_stem,
    load_model,
    ov_version,
    reshape_inputs,
    save_ir,
)
from edgekit.core.artifact import Artifact
from edgekit.core.errors import BackendError, EdgekitError, InvalidInputError, TargetUnavailableError
from edgekit.core.hostinfo import package_version
from edgekit.core.int8_cpu import int8_cpu
from edgekit.core.runlog import library_output
from edgekit.onnx.mixed_range import (
    announce,
    detect_for_quantization,
    float_node_names,
    mixed_range_enabled,
    provenance,
)

PRESETS = ("performance", "mixed")
OVERFLOW_FIX = ("enable", "first_layer", "disable")
# NNCF's activation range estimators (RangeEstimatorParametersSet); histogram is its counterpart of
# ONNX Runtime's percentile calibration: EfficientNet-Lite0 cosine 0.9938 -> 0.9949, all-crop agreement 0.925 -> 0.967
ACTIVATION_RANGES = {"minmax": "MINMAX", "histogram": "HISTOGRAM"}
ATTENTION_OPS = {"ScaledDotProductAttention", "PagedAttentionExtension"}
SKIP_OPS = {"Parameter", "Result", "Constant"}  # never quantized, so never worth ignoring


@dataclass(frozen=True)
class NncfSettings:
    """What edgekit passes to nncf.quantize; recorded in the sidecar."""

    subset_size: int
    preset: str  # performance (symmetric activations) | mixed (asymmetric activations)
    model_type: str | None  # transformer | None
    target_device: str  # ANY | CPU | GPU | NPU
    fast_bias_correction: bool
    overflow_fix: str | None  # None = NNCF's default (first_layer)
    per_channel: bool
    ignored: tuple[str, ...]  # OpenVINO op names kept in float
    # NNCF's SmoothQuant alpha for MatMuls (it runs only with model_type transformer): -1 off, None NNCF's
    # default (0.95); -1 too when edgekit smoothed the ONNX source itself (provenance `smooth_quant`)
    nncf_smooth_quant: float | None = None
    activation_ranges: str = "minmax"  # ACTIVATION_RANGES


def import_nncf():
    import_openvino()  # declines telemetry before nncf sets up its own at import
    try:
        import nncf
    except ImportError as e:
        raise TargetUnavailableError("nncf is not installed (OpenVINO int8 needs it)", hint=INSTALL_HINT) from e
    return nncf


def quantize_ir(source: Artifact, calib, options: QuantOptions, out_dir: Path) -> Artifact:
    """An int8 IR from the FP32 source and the user's calibration data."""
    nncf = import_nncf()
    if source.precision != "fp32":
        raise InvalidInputError(f"NNCF quantizes FP32 models; {source.path.name} is {source.precision}")
    if options.method not in ("auto", "minmax"):
        raise InvalidInputError(f"calibration method '{options.method}' is not available with NNCF",
                                hint="NNCF calibrates with its own min/max statistics: use --method minmax")
    model, index, smoothing = _load_smoothed(source, calib, options)
    # the data was opened for these shapes (`--input` included): a static request makes a static IR
    reshaped = reshape_inputs(model, getattr(calib, "inputs", ()), index)
    settings = choose_settings(model, index, len(calib), options, smoothed=bool(smoothing))
    user_ignored = settings.ignored
    kept_float, mixed, mixed_info = _mixed_range_ignored(source, calib, options, model, index)
    settings = replace(settings, ignored=tuple(dict.fromkeys((*user_ignored, *kept_float))))
    with _nncf_output():
        try:
            quantized = nncf.quantize(model, nncf.Dataset(calib, _feed), **nncf_arguments(nncf, settings))
        except (EdgekitError, KeyboardInterrupt):
            raise
        except Exception as e:
            node = index.find_in(str(e))
            raise BackendError(
                f"nncf.quantize failed{f' at {node}' if node else ''}: {summary(e)}",
                hint="keep that node in float with --exclude NAME, or check the model runs in OpenVINO FP32 first",
            ) from e
    out = out_dir / f"{ir_stem(source.path)}.int8.xml"
    provenance = {
        "from": source.path.name, "quantizer": f"nncf {package_version('nncf')}",
        "converter": f"openvino.convert_model {ov_version()}", "calibration_samples": settings.subset_size,
        **{k: v for k, v in asdict(settings).items() if k not in ("ignored", "subset_size")}, **int8_cpu().to_provenance(),
        "excluded_nodes": list(user_ignored), **mixed_info, **({"reshaped": reshaped} if reshaped else {}),
        **smoothing,
    }
    art = save_ir(quantized, out, "int8", provenance, source.outputs)
    announce(mixed, "openvino")
    return art


def _mixed_range_ignored(source: Artifact, calib, options: QuantOptions, model, index: NodeIndex):
    """(OpenVINO op names, mixed-range nodes, provenance): the ONNX source's mixed-range nodes
    (edgekit.onnx.mixed_range) and their readers, resolved on the converted model like `--exclude` names;
    a node the conversion folded away has no op to ignore and is left out."""
    if source.format != "onnx":
        status = "not run: the source is an OpenVINO IR" if mixed_range_enabled(options.extra) else "off"
        return (), [], provenance([], status)
    found, info = detect_for_quantization(source.path, calib, options.extra)
    names: list[str] = []
    for node in float_node_names(found):
        try:
            names += [n for n in resolve_ignored((glob.escape(node),), model, index) if n not in names]
        except InvalidInputError:
            continue
    info["mixed_range_ops"] = names
    return tuple(names), found, info


def _load_smoothed(source: Artifact, calib, options: QuantOptions):
    """(ov.Model, NodeIndex, provenance): an ONNX source is smoothed first when option `smooth_quant` asks
    (edgekit.onnx.smoothquant; on the benchmark transformer it beat NNCF's own SmoothQuant: logit cosine 0.9991
    against 0.9921 with attention in float); an IR source is left to NNCF's SmoothQuant."""
    from edgekit.onnx.smoothquant import smooth_alpha, smooth_for_quantization

    if source.format != "onnx" or smooth_alpha(options.extra) is None:
        return (*load_model(source), {})
    with tempfile.TemporaryDirectory(prefix="edgekit-ov-") as tmp:
        path, smoothing = smooth_for_quantization(source.path, Path(tmp), calib, options.extra, options.max_samples)
        model, index = load_model(replace(source, path=path))  # the model owns its weights: the file may go
    return model, index, smoothing


def _feed(sample):
    return sample.feed  # NNCF's OpenVINO backend takes {input name: array}


def choose_settings(model, index: NodeIndex, samples: int, options: QuantOptions,
                    smoothed: bool = False) -> NncfSettings:
    extra = options.extra
    if options.max_samples < 1:
        raise InvalidInputError(f"--max-samples {options.max_samples}: use at least 1 calibration sample")
    smooth = -1.0 if smoothed else nncf_smooth_alpha(extra)
    transformer = (smooth is not None and smooth > 0) or looks_like_transformer(model)
    preset = extra.get("preset") or ("mixed" if transformer else "performance")
    if preset not in PRESETS:
        raise InvalidInputError(f"openvino option preset = '{preset}'", hint=f"one of {', '.join(PRESETS)}")
    target = nncf_target_device(str(extra.get("device") or "ANY"))
    overflow = extra.get("overflow_fix") or default_overflow_fix(target)
    if overflow is not None and overflow not in OVERFLOW_FIX:
        raise InvalidInputError(f"openvino option overflow_fix = '{overflow}'", hint=f"one of {', '.join(OVERFLOW_FIX)}")
    ranges = extra.get("activation_ranges") or "minmax"
    if ranges not in ACTIVATION_RANGES:
        raise InvalidInputError(f"openvino option activation_ranges = '{ranges}'",
                                hint=f"one of {', '.join(ACTIVATION_RANGES)}")
    return NncfSettings(
        subset_size=min(samples, options.max_samples), preset=preset,
        model_type="transformer" if transformer else None, target_device=target,
        # NNCF's full bias correction refuses If/Loop models; the fast one quantizes inside their bodies
        fast_bias_correction=bool(extra.get("fast_bias_correction", has_control_flow(model))), overflow_fix=overflow,
        per_channel=options.per_channel, ignored=resolve_ignored(options.exclude, model, index),
        nncf_smooth_quant=smooth, activation_ranges=ranges,
    )


def has_control_flow(model) -> bool:
    return any(op.get_type_name() in ("If", "Loop", "TensorIterator") for op in model.get_ops())


def nncf_smooth_alpha(extra: dict) -> float | None:
    """NNCF's MatMul SmoothQuant alpha for option `smooth_quant`: absent -> NNCF's default (None),
    false/0 -> off (-1), else the alpha in (0, 1] (NNCF then needs model_type transformer)."""
    from edgekit.onnx.smoothquant import OPTION, smooth_alpha

    if extra.get(OPTION) is None:
        return None
    alpha = smooth_alpha(extra)
    return -1.0 if alpha is None else alpha


def nncf_arguments(nncf, s: NncfSettings) -> dict:
    from nncf.quantization.advanced_parameters import (
        AdvancedQuantizationParameters,
        AdvancedSmoothQuantParameters,
        OverflowFix,
        QuantizationParameters,
    )

    advanced = {}
    if s.overflow_fix:
        advanced["overflow_fix"] = OverflowFix(s.overflow_fix)
    if not s.per_channel:
        advanced["weights_quantization_params"] = QuantizationParameters(per_channel=False)
    if s.nncf_smooth_quant is not None:
        advanced["smooth_quant_alphas"] = AdvancedSmoothQuantParameters(matmul=s.nncf_smooth_quant)
    if s.activation_ranges != "minmax":
        from nncf.quantization.range_estimator import RangeEstimatorParametersSet

        estimator = getattr(RangeEstimatorParametersSet, ACTIVATION_RANGES[s.activation_ranges])
        advanced["activations_range_estimator_params"] = estimator
    return {
        "subset_size": s.subset_size,
        "preset": nncf.QuantizationPreset(s.preset),
        "model_type": nncf.ModelType(s.model_type) if s.model_type else None,
        "target_device": nncf.TargetDevice(s.target_device),
        "fast_bias_correction": s.fast_bias_correction,
        "ignored_scope": nncf.IgnoredScope(names=list(s.ignored), validate=False) if s.ignored else None,
        "advanced_parameters": AdvancedQuantizationParameters(**advanced) if advanced else None,
    }


def nncf_target_device(device: str) -> str:
    family = device.partition(":")[0].split(".")[0].upper()
    if family in PHYSICAL_DEVICES:
        return family
    if family in VIRTUAL_DEVICES or family == "ANY":
        return "ANY"
    raise TargetUnavailableError(f"'{device}' is not an OpenVINO device",
                                 hint=f"set [runtime.options] device to one of {', '.join(PHYSICAL_DEVICES)} or AUTO")


def default_overflow_fix(target: str) -> str | None:
    """The host CPU's int8 kernels decide (the host is the CPU measured; edgekit.core.int8_cpu): VNNI/AMX
    accumulate in 32 bits and cannot overflow, so no 7-bit weights; AVX2 alone sums pairs of u8 x s8
    products in 16 bits (pmaddubsw), which saturate, so every layer gets 7-bit weights. On the test
    transformer, AVX2-only EPYC: logit cosine 0.970 with NNCF's default, 0.998 with the fix on every
    layer (0.998 on a VNNI Xeon without it)."""
    if target not in ("ANY", "CPU"):
        return None
    return int8_cpu().choices()["openvino"]["overflow_fix"]


def looks_like_transformer(model) -> bool:
    """Attention (NNCF's transformer settings then apply): the fused op OpenVINO's converter makes of it,
    or a Softmax plus a MatMul of two activations."""
    ops = list(model.get_ops())
    types = {op.get_type_name() for op in ops}
    if types & ATTENTION_OPS:
        return True
    if "Softmax" not in types:
        return False
    return any(
        op.get_type_name() == "MatMul"
        and all(i.get_source_output().get_node().get_type_name() not in ("Constant", "Convert") for i in op.inputs())
        for op in ops
    )


def resolve_ignored(patterns: tuple[str, ...], model, index: NodeIndex) -> tuple[str, ...]:
    """OpenVINO op names for `--exclude` items: ONNX or OpenVINO node names, op types, or globs on names."""
    if not patterns:
        return ()
    ov_ops = {op.get_friendly_name(): op.get_type_name() for op in model.get_ops()
              if op.get_type_name() not in SKIP_OPS}
    outputs_of: dict[str, list[str]] = {}
    for tensor, node in index.onnx_producers.items():
        outputs_of.setdefault(node, []).append(tensor)
    chosen: list[str] = []
    for pattern in patterns:
        onnx_nodes = [n for n, t in index.onnx_nodes.items() if t == pattern or _name_matches(n, pattern)]
        roots = onnx_nodes + [t for n in onnx_nodes for t in outputs_of.get(n, [])]
        found = [name for name, op in ov_ops.items()
                 if op == pattern or _name_matches(name, pattern) or any(_same_node(name, r) for r in roots)]
        if not found:
            raise InvalidInputError(
                f"--exclude/--ignore '{pattern}' matches no node or op type of the model",
                hint="give ONNX node names or op types (Conv, Gemm), OpenVINO op names, or globs like 'node_Conv_*'",
            )
        chosen += [n for n in found if n not in chosen]
    return tuple(chosen)


def _name_matches(name: str, pattern: str) -> bool:
    return name == pattern or fnmatch.fnmatchcase(name, pattern)


def _same_node(ov_name: str, onnx_name: str) -> bool:
    # OpenVINO splits one ONNX node into ops named after it: Conv -> 'x/WithoutBiases' + 'x'
    return ov_name == onnx_name or ov_name.startswith(onnx_name + "/")


@contextlib.contextmanager
def _nncf_output():
    """NNCF logs and draws progress bars on stdout, which would corrupt `--json` and bury edgekit's own
    view: both go to the command's log (edgekit.core.runlog; on the terminal with --verbose). Its logger
    writes to the stdout it found at import, so its handlers are pointed at the capture too."""
    from nncf.common.logging.logger import nncf_logger

    handlers = [(h, h.stream) for h in nncf_logger.handlers if isinstance(h, logging.StreamHandler)]
    level = nncf_logger.level
    nncf_logger.setLevel(logging.INFO)
    try:
        with library_output("nncf"):
            for h, _ in handlers:
                h.setStream(sys.stdout)
            yield
    finally:
        for h, stream in handlers:
            h.setStream(stream)
        nncf_logger.setLevel(level)
