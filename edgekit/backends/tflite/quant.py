"""int8 and fp16 .tflite from a float .tflite with ai-edge-quantizer.

int8 is ai-edge-quantizer's `static_wi8_ai8` recipe (int8 weights per channel, int8
activations, integer kernels) with three changes measured on EfficientNet-Lite0
(benchmarks/tflite.py; all on the 53 confident validation crops):
- activation ranges are the min/max over ALL calibration samples (`--method minmax`) or, by default,
  each sample's min/max averaged (NNCF's MEAN_MINMAX), the model's inputs and outputs over all samples;
  not the recipe's moving average, which follows the last ~20 samples and clipped the logits of the
  others (0.774 -> 0.906 top-1 agreement);
- the model keeps float inputs/outputs (a QUANTIZE/DEQUANTIZE at the edges) unless int8 I/O is
  asked for; the int8 I/O of the recipe rounds logits to 256 levels;
- bias correction of every int8 layer (tflite/bias_correction.py): 0.906 -> 0.981.
A model whose int8 outputs are one value for every calibration sample is refused (exit 1).
An encoder (tflite/compute_share.py) takes `dynamic_wi8_afp32` instead: int8 weights, activations
quantized at run time.
"""

from __future__ import annotations

import fnmatch
import os
import re
import warnings
from collections import Counter
from dataclasses import dataclass
from itertools import islice
from typing import Callable, Iterable

import numpy as np

from edgekit.backends.tflite import flatbuffer as fb
from edgekit.backends.tflite.bias_correction import correct_biases, float_layer_stats
from edgekit.backends.tflite.mixed_range import keep_mixed_float
from edgekit.backends.tflite.runner import SIGNATURE_KEY, load_interpreter, signature_inputs
from edgekit.core.errors import BackendError, CheckFailedError, InvalidInputError, TargetUnavailableError, first_line
from edgekit.core.hostinfo import package_version
from edgekit.core.progress import progress_iter, status
from edgekit.core.runlog import library_output
from edgekit.onnx.mixed_range import announce

INSTALL_HINT = "pip install 'edgekit[tflite]'"
BIAS_SAMPLES = 64  # input means settle long before that
MEAN_RANGE_MIN_ELEMENTS = 4096  # per-sample ranges of smaller tensors vary too much to average (_whole_range_names)
CHECK_SAMPLES = 16


@dataclass(frozen=True)
class Int8Settings:
    per_channel: bool = True
    int8_io: bool = False  # int8 model inputs/outputs, for microcontroller / NPU delegates
    exclude: tuple[str, ...] = ()  # TFLite op types or globs over op output names, kept in float
    bias_correction: bool = True
    max_samples: int = 300
    refuse_constant_output: bool = True  # off in the accuracy search, which measures such a model instead
    mixed_range_float: bool = True  # ops whose inputs differ > 32x in range stay float (tflite/mixed_range.py)
    float_where_xnnpack_needs: bool = True  # int8 ops XNNPACK cannot run stay float (tflite/delegation.py)
    ranges: str = "minmax"  # minmax: over all samples | mean_minmax: per-sample averaged (NNCF's) | dynamic: at run time


def _aeq():
    try:
        from ai_edge_quantizer import calibrator, qtyping, quantizer, recipe_manager
        from ai_edge_quantizer.algorithm_manager import AlgorithmName
        from ai_edge_quantizer.utils import qsv_utils
    except ImportError as e:
        raise TargetUnavailableError(f"quantizing a .tflite needs {e.name}", hint=INSTALL_HINT) from e
    return calibrator, qtyping, quantizer, recipe_manager, AlgorithmName, qsv_utils


def quantize_int8(float_model: bytes, samples: Callable[[], Iterable[dict]], count: int,
                  settings: Int8Settings) -> tuple[bytes, dict]:
    """Full-integer int8 model; `samples()` yields calibration feeds keyed by signature input name."""
    calibrator, qtyping, quantizer, recipe_manager, AlgorithmName, qsv_utils = _aeq()
    op = qtyping.TFLOperationName
    q = quantizer.Quantizer(bytearray(float_model))
    granularity = qtyping.QuantGranularity.CHANNELWISE if settings.per_channel else qtyping.QuantGranularity.TENSORWISE
    if settings.ranges == "dynamic":
        return _dynamic_int8(q, float_model, samples, count, settings, granularity, op, AlgorithmName)
    q.add_static_config(".*", op.ALL_SUPPORTED, activation_num_bits=8, weight_num_bits=8,
                        weight_granularity=granularity)
    if not settings.int8_io:
        for edge in (op.INPUT, op.OUTPUT):
            q.update_quantization_recipe(".*", edge, algorithm_key=AlgorithmName.NO_QUANTIZE)
    excluded = _exclude(q, float_model, settings.exclude, op, AlgorithmName)
    broadcast_float = _float_broadcast_constant_ops(q, float_model, op, AlgorithmName)
    n = min(count, settings.max_samples)
    recipes = recipe_manager.RecipeManager()
    recipes.load_quantization_recipe(q.get_quantization_recipe())
    try:
        with warnings.catch_warnings():
            # it keeps every tensor to calibrate, on purpose, and warns that this mode is for debugging
            warnings.filterwarnings("ignore", message=".*experimental_preserve_all_tensors")
            cal = calibrator.Calibrator(float_model, num_threads=os.cpu_count() or 1,
                                        qsv_update_func=qsv_utils.min_max_update)
            qsvs = _calibrate(cal, islice(samples(), n), n, recipes, settings.ranges, float_model)
            mixed, mixed_info = keep_mixed_float(q, float_model, qsvs, settings.mixed_range_float,
                                                 (op, AlgorithmName, _scope_regex))
            # all-zero weight channels divide by a zero range here; the bias correction below repairs them
            with status("quantizing to int8"), np.errstate(invalid="ignore", divide="ignore"), \
                    library_output("ai-edge-quantizer"):
                model = bytes(q.quantize(qsvs, enable_progress_report=False).quantized_model)
            delegate_float = []
            if settings.float_where_xnnpack_needs and not settings.int8_io:
                model, delegate_float = _float_where_xnnpack_needs(q, float_model, model, qsvs, op, AlgorithmName)
    except (InvalidInputError, KeyboardInterrupt):
        raise
    except Exception as e:
        raise BackendError(f"ai-edge-quantizer failed: {first_line(e, 400)}") from e
    corrected = repaired = 0
    if settings.bias_correction:
        with status("correcting int8 biases"):
            sig_inputs = _signature_inputs(float_model)
            stats = float_layer_stats(float_model, islice(samples(), min(n, BIAS_SAMPLES)), sig_inputs)
            model, corrected, repaired = correct_biases(model, stats)
    quality = check_outputs(float_model, model, islice(samples(), min(n, CHECK_SAMPLES)),
                            settings.refuse_constant_output)
    info = {
        "quantizer": f"ai-edge-quantizer {package_version('ai-edge-quantizer')} static_wi8_ai8",
        "weights": "int8 " + ("per-channel" if settings.per_channel else "per-tensor"),
        "activations": "int8", "io_dtype": "int8" if settings.int8_io else "float32",
        "calibration": RANGE_NAMES[settings.ranges], "calibration_samples": n,
        "bias_corrected_layers": corrected, "zero_weight_channels_repaired": repaired, "excluded": excluded,
        "float_for_xnnpack": dict(delegate_float),  # op type -> how many
        "float_broadcast_constant": broadcast_float,
        **mixed_info, **quality,
    }
    announce(mixed, "tflite")
    return model, info


RANGE_NAMES = {"minmax": "min/max over all samples", "mean_minmax": "mean of per-sample min/max",
               "dynamic": "none: activation ranges are measured at run time"}


def _calibrate(cal, feeds: Iterable[dict], n: int, recipes, ranges: str, float_model: bytes) -> dict:
    """Every tensor's range: min/max over all samples, or (mean_minmax) each sample's min and max averaged over
    the samples, as NNCF ranges per-tensor activations, so a rare extreme sample widens a range by 1/n. The
    tensors of _whole_range_names keep the min/max over all samples either way: the model's outputs (NNCF leaves them in
    float, and averaged they clipped EfficientNet-Lite0's logits: top-1 agreement 0.968 -> 0.710), its inputs
    (clipped, the data itself changes) and small tensors (averaged, the pooled features of the planted model of
    test_accuracy_aware_tflite were clipped and it missed its budget whatever layers stayed float)."""
    total: dict[str, dict] = {}
    done = 0
    # one sample per call: the data streams through once, under edgekit's bar; the library's bar (one per call)
    # goes to the log
    for feed in progress_iter(feeds, total=n, description="calibrating"):
        with library_output("ai-edge-quantizer"):
            cal.calibrate({SIGNATURE_KEY: [feed]}, recipes)
        if ranges == "mean_minmax":
            for name, qsv in cal.get_model_qsvs().items():
                low, high = np.asarray(qsv["min"], np.float64), np.asarray(qsv["max"], np.float64)
                acc = total.setdefault(name, {"sum_min": 0.0, "sum_max": 0.0, "min": low, "max": high})
                acc["sum_min"] = acc["sum_min"] + low
                acc["sum_max"] = acc["sum_max"] + high
                acc["min"], acc["max"] = np.minimum(acc["min"], low), np.maximum(acc["max"], high)
            cal.reset_model_qsvs()
            done += 1
    if ranges != "mean_minmax":
        return cal.get_model_qsvs()
    f32, whole = np.float32, _whole_range_names(float_model)
    return {name: ({"min": acc["min"].astype(f32), "max": acc["max"].astype(f32)} if name in whole else
                   {"min": (acc["sum_min"] / done).astype(f32), "max": (acc["sum_max"] / done).astype(f32)})
            for name, acc in total.items()}


def _dynamic_int8(q, float_model: bytes, samples, count: int, settings: Int8Settings, granularity, op,
                  AlgorithmName) -> tuple[bytes, dict]:
    """int8 weights; each op quantizes its float input per run (XNNPACK's dynamically quantized kernels)."""
    q.add_dynamic_config(".*", op.ALL_SUPPORTED, num_bits=8, granularity=granularity)
    excluded = _exclude(q, float_model, settings.exclude, op, AlgorithmName)
    try:
        with status("quantizing to int8 (dynamic activations)"), library_output("ai-edge-quantizer"):
            model = bytes(q.quantize(enable_progress_report=False).quantized_model)
    except KeyboardInterrupt:
        raise
    except Exception as e:
        raise BackendError(f"ai-edge-quantizer failed: {first_line(e, 400)}") from e
    n = min(count, CHECK_SAMPLES)
    quality = check_outputs(float_model, model, islice(samples(), n), settings.refuse_constant_output)
    info = {
        "quantizer": f"ai-edge-quantizer {package_version('ai-edge-quantizer')} dynamic_wi8_afp32",
        "weights": "int8 " + ("per-channel" if settings.per_channel else "per-tensor"),
        "activations": "int8, quantized at run time per input", "io_dtype": "float32",
        "calibration": RANGE_NAMES["dynamic"], "calibration_samples": 0, "excluded": excluded, **quality,
    }
    return model, info


def _float_where_xnnpack_needs(q, float_model: bytes, model: bytes, qsvs, op, AlgorithmName) -> tuple[bytes, list]:
    """Quantized again (same ranges) with the int8 ops that XNNPACK leaves to reference kernels in float."""
    from edgekit.backends.tflite.delegation import int8_only_undelegated

    known = {v.value for v in op}
    keep = [(t, name) for t, name in int8_only_undelegated(float_model, model) if t in known]
    if not keep:
        return model, []
    for t, name in keep:
        q.update_quantization_recipe(_scope_regex(name), op(t), algorithm_key=AlgorithmName.NO_QUANTIZE)
    with status(f"keeping {len(keep)} ops in float for XNNPACK"), np.errstate(invalid="ignore", divide="ignore"), \
            library_output("ai-edge-quantizer"):
        model = bytes(q.quantize(qsvs, enable_progress_report=False).quantized_model)
    return model, sorted(Counter(t for t, _ in keep).items())


def _float_broadcast_constant_ops(q, float_model: bytes, op, AlgorithmName) -> list[str]:
    """Same-scale ops with a broadcast constant input stay float: ai-edge-quantizer fails on them."""
    from edgekit.backends.tflite.broadcast_constants import broadcast_constant_ops

    known = {v.value for v in op}
    kept = [(t, name) for t, name in broadcast_constant_ops(float_model) if t in known]
    for t, name in kept:
        q.update_quantization_recipe(_scope_regex(name), op(t), algorithm_key=AlgorithmName.NO_QUANTIZE)
    return [name for _, name in kept]


def _whole_range_names(model: bytes) -> set[str]:
    """Tensors whose range stays the min/max over all samples under mean_minmax: the model's inputs and outputs,
    and tensors of fewer than MEAN_RANGE_MIN_ELEMENTS values a sample (a pooled feature vector), whose min and
    max of one sample say little about the next."""
    sg = fb.read(model).subgraphs[0]
    edges = {fb.tensor_name(sg.tensors[i]) for i in list(sg.inputs) + list(sg.outputs)}
    small = {fb.tensor_name(t) for t in sg.tensors if fb.elements(t) < MEAN_RANGE_MIN_ELEMENTS}
    return edges | small


def _signature_inputs(model: bytes) -> dict[str, int]:
    return {name: d["index"] for name, d in signature_inputs(model).items()}


def _exclude(q, float_model: bytes, patterns: tuple[str, ...], op, AlgorithmName) -> list[str]:
    """Keep ops in float by TFLite op type (FULLY_CONNECTED) or by a glob over their output tensor names."""
    if not patterns:
        return []
    obj = fb.read(float_model)
    sg = obj.subgraphs[0]
    names = fb.op_type_names(obj)
    ops = [(names[o.opcodeIndex], fb.tensor_name(sg.tensors[o.outputs[0]])) for o in sg.operators if o.outputs]
    known = {v.value for v in op}
    chosen = []
    for p in patterns:
        if p.upper() in known and any(t == p.upper() for t, _ in ops):
            q.update_quantization_recipe(".*", op(p.upper()), algorithm_key=AlgorithmName.NO_QUANTIZE)
            chosen.append(p.upper())
            continue
        hits = [(t, scope) for t, scope in ops if fnmatch.fnmatchcase(scope, p)]
        if not hits:
            raise InvalidInputError(f"--exclude {p} matches no op of the .tflite",
                                    hint="a TFLite op type (CONV_2D, FULLY_CONNECTED...) or a glob over op outputs")
        for t, scope in hits:
            if t in known:
                q.update_quantization_recipe(_scope_regex(scope), op(t), algorithm_key=AlgorithmName.NO_QUANTIZE)
                chosen.append(scope)
    return chosen


def _scope_regex(first_output: str) -> str:
    """The regex that picks exactly this op in ai-edge-quantizer, which re.search-es it in the op's scope:
    its output names, each followed by ';' ("out;" for one output), so a regex ending at the name never matches."""
    return "^" + re.escape(first_output) + ";"


def check_outputs(float_model: bytes, quant_model: bytes, samples: Iterable[dict], refuse: bool = True) -> dict:
    """SQNR of the int8 outputs against float on calibration samples; refuse an output stuck at one value."""
    f_interp, q_interp = load_interpreter(float_model), load_interpreter(quant_model)
    f_run = f_interp.get_signature_runner(SIGNATURE_KEY)
    q_run = q_interp.get_signature_runner(SIGNATURE_KEY)
    q_inputs = q_run.get_input_details()
    ref, got = [], []
    for feed in samples:
        ref.append(f_run(**feed))
        got.append(q_run(**{k: _to_input(v, q_inputs[k]) for k, v in feed.items()}))
    if not ref:
        return {}
    names = list(ref[0])
    q_outputs = q_run.get_output_details()
    r = {n: np.stack([np.asarray(s[n], np.float64) for s in ref]) for n in names}
    g = {n: np.stack([_from_output(s[n], q_outputs[n]) for s in got]) for n in names}
    stuck = [n for n in names if len(ref) > 1 and np.ptp(g[n], axis=0).max() == 0 and np.ptp(r[n], axis=0).max() > 0]
    if refuse and len(stuck) == len(names):
        raise CheckFailedError(
            f"the int8 model gives one and the same output for all {len(ref)} calibration samples "
            f"(output '{stuck[0]}'): quantization broke it",
            hint="keep the last ops in float (--exclude FULLY_CONNECTED), use more varied calibration data, "
                 "or check that the output does not sit on a large constant offset")
    noise = sum(float(np.sum((r[n] - g[n]) ** 2)) for n in names)
    signal = sum(float(np.sum(r[n] ** 2)) for n in names)
    sqnr = round(float(10 * np.log10(signal / noise)), 2) if noise > 0 and signal > 0 else None
    return {"calibration_sqnr_db": sqnr, "constant_outputs": stuck}


def _to_input(x: np.ndarray, detail: dict) -> np.ndarray:
    scale, zero = detail["quantization"]
    if scale and np.issubdtype(detail["dtype"], np.integer):
        info = np.iinfo(detail["dtype"])
        return np.clip(np.round(x / scale) + zero, info.min, info.max).astype(detail["dtype"])
    return x.astype(detail["dtype"], copy=False)


def _from_output(y: np.ndarray, detail: dict) -> np.ndarray:
    scale, zero = detail["quantization"]
    if scale and np.issubdtype(detail["dtype"], np.integer):
        return (np.asarray(y, np.float64) - zero) * scale
    return np.asarray(y, np.float64)


def cast_fp16(float_model: bytes) -> tuple[bytes, dict]:
    """fp16 weights (half the size); ARM CPUs with fp16 arithmetic run them natively, others upcast."""
    _, qtyping, quantizer, _, AlgorithmName, _ = _aeq()
    op = qtyping.TFLOperationName
    q = quantizer.Quantizer(bytearray(float_model))
    for name in (op.CONV_2D, op.DEPTHWISE_CONV_2D, op.FULLY_CONNECTED, op.CONV_2D_TRANSPOSE, op.EMBEDDING_LOOKUP):
        q.add_weight_only_config(".*", name, num_bits=16, algorithm_key=AlgorithmName.FLOAT_CASTING)
    try:
        model = bytes(q.quantize(enable_progress_report=False).quantized_model)
    except Exception as e:
        raise BackendError(f"ai-edge-quantizer fp16 casting failed: {first_line(e, 400)}") from e
    return model, {"quantizer": f"ai-edge-quantizer {package_version('ai-edge-quantizer')} float16 weights"}
