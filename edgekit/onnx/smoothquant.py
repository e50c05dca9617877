"""SmoothQuant (Xiao et al. 2022) on an FP32 ONNX: move LayerNorm output outliers into the next MatMul weights.

Transformers grow a few LayerNorm feature dims ~100x larger than the rest; a per-tensor int8 scale sized for
them leaves the other dims a handful of levels. For LayerNorm -> MatMul/Gemm (X @ W) each input channel j is
scaled by s_j = max|X_j|^alpha / max|W_j|^(1-alpha): gamma_j and beta_j are divided by s_j and row j of W is
multiplied by it, so the FP32 function is unchanged and the activation range evens out.

edgekit does the transform itself: ONNX Runtime's `extra_options={"SmoothQuant": True}` imports
neural_compressor.adaptor.ox_utils, which neural-compressor 3.x no longer ships.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from edgekit.core.atomic import atomic_path
from edgekit.core.errors import InvalidInputError
from edgekit.core.onnx_model import load_onnx
from edgekit.core.progress import progress_iter

OPTION = "smooth_quant"  # QuantOptions.extra key: alpha, or false/0/absent for off
DEFAULT_ALPHA = 0.5
SCALE_LIMITS = (1e-4, 1e4)  # a channel that is ~0 on one side must not blow the other up
SHAPE_OPS = ("Reshape",)  # between a LayerNorm and its MatMul (dynamo's Gemm on 2-D input)


@dataclass(frozen=True)
class SmoothGroup:
    """One LayerNorm whose output reaches only MatMul/Gemm weights that can absorb its scale."""

    layer_norm: onnx.NodeProto
    consumers: tuple[tuple[onnx.NodeProto, int], ...]  # (MatMul/Gemm, axis of its weight that is input channels)


def smooth_alpha(extra: dict) -> float | None:
    """The `smooth_quant` option of a QuantOptions.extra: None when off, else alpha in (0, 1]."""
    value = extra.get(OPTION)
    if value is None or value is False or value == 0:
        return None
    if value is True:
        return DEFAULT_ALPHA
    return check_alpha(value)


def check_alpha(value) -> float:
    try:
        alpha = float(value)
    except (TypeError, ValueError):
        alpha = float("nan")
    if isinstance(value, bool) or not 0.0 < alpha <= 1.0:
        raise InvalidInputError(f"smooth_quant = {value!r}: SmoothQuant alpha must be in (0, 1]",
                                hint="0.5 moves half of the activation range into the weights; false turns it off")
    return alpha


def smooth_onnx(src: Path, dst: Path, calib, alpha: float = DEFAULT_ALPHA, max_samples: int = 64) -> dict:
    """Write `src` with every LayerNorm -> MatMul/Gemm group smoothed to `dst`; returns what was done."""
    alpha = check_alpha(alpha)
    model = load_onnx(src)
    groups, skipped = find_groups(model)
    summary = {"alpha": alpha, "groups": 0, "max_scale": 1.0, "samples": 0, "skipped": skipped}
    if groups:
        absmax, summary["samples"] = activation_absmax(model, [g.layer_norm.output[0] for g in groups], calib,
                                                       max_samples)
        scales = [_apply(model, g, absmax[g.layer_norm.output[0]], alpha) for g in groups]
        summary["groups"] = len(groups)
        summary["max_scale"] = round(float(max(s.max() for s in scales)), 3)
        summary["min_scale"] = round(float(min(s.min() for s in scales)), 5)
    with atomic_path(dst) as tmp:
        onnx.save(model, str(tmp))
    return summary


def find_groups(model: onnx.ModelProto) -> tuple[list[SmoothGroup], list[str]]:
    """LayerNorms (last axis, constant gamma) whose output goes only, maybe through a Reshape that keeps
    the channel dim, into the activation input of MatMul/Gemm with a constant 2-D float weight."""
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in g.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    constants = _constant_values(g, inits)
    graph_outputs = {o.name for o in g.output}
    groups, skipped = [], []
    for node in g.node:
        if node.op_type != "LayerNormalization":
            continue
        gamma = inits.get(node.input[1]) if len(node.input) > 1 else None
        if _attr(node, "axis", -1) != -1 or gamma is None or gamma.data_type != onnx.TensorProto.FLOAT:
            skipped.append(f"{node.name}: not a last-axis LayerNorm with a float initializer weight")
            continue
        channels = int(np.prod(gamma.dims))
        found = _weight_consumers(node.output[0], channels, consumers, constants, inits, graph_outputs)
        if isinstance(found, str):
            skipped.append(f"{node.name}: {found}")
        else:
            groups.append(SmoothGroup(node, tuple(found)))
    return groups, skipped


def _weight_consumers(tensor: str, channels: int, consumers, constants, inits, graph_outputs):
    """[(node, input-channel axis of its weight)], or why the tensor cannot be scaled."""
    if tensor in graph_outputs:
        return "its output is a graph output"
    found = []
    for node in consumers.get(tensor, []):
        if node.op_type in SHAPE_OPS and node.input[0] == tensor:
            shape = constants.get(node.input[1])
            if shape is None or shape.size == 0 or int(shape[-1]) != channels:
                return f"{node.name} reshapes away the channel dim"
            more = _weight_consumers(node.output[0], channels, consumers, constants, inits, graph_outputs)
            if isinstance(more, str):
                return more
            found += more
            continue
        if node.op_type not in ("MatMul", "Gemm") or node.input[0] != tensor:
            return f"feeds {node.op_type} {node.name}, which cannot absorb a scale"
        weight = inits.get(node.input[1])
        if weight is None or len(weight.dims) != 2 or weight.data_type != onnx.TensorProto.FLOAT:
            return f"{node.name} has no constant 2-D float weight"
        if node.op_type == "Gemm" and _attr(node, "transA", 0):
            return f"{node.name} transposes its activation"
        axis = 1 if node.op_type == "Gemm" and _attr(node, "transB", 0) else 0
        if weight.dims[axis] != channels:
            return f"{node.name}'s weight does not match {channels} channels"
        found.append((node, axis))
    return found or "feeds no MatMul/Gemm"


def activation_absmax(model: onnx.ModelProto, tensors: list[str], calib, max_samples: int) -> tuple[dict, int]:
    """Per-channel (last dim) max |value| of `tensors` over the calibration samples, via ONNX Runtime."""
    from edgekit.onnx.session import ort_session

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.output[:]
    probe.graph.output.extend(onnx.helper.make_empty_tensor_value_info(t) for t in tensors)
    for out in probe.graph.output:
        out.type.tensor_type.elem_type = onnx.TensorProto.FLOAT
    with tempfile.TemporaryDirectory(prefix="edgekit-smooth-") as tmp:
        path = Path(tmp) / "probe.onnx"
        onnx.save(probe, str(path))
        session = ort_session(path)
        absmax: dict[str, np.ndarray] = {}
        count = 0
        total = min(len(calib), max_samples)
        for sample in progress_iter(iter(calib), total=total, description="SmoothQuant statistics"):
            if count >= total:
                break
            for name, value in zip(tensors, session.run(tensors, sample.feed)):
                m = np.abs(value.reshape(-1, value.shape[-1])).max(axis=0)
                absmax[name] = m if name not in absmax else np.maximum(absmax[name], m)
            count += 1
    if not count:
        raise InvalidInputError("SmoothQuant needs calibration samples; the calibration data is empty")
    return absmax, count


def _apply(model: onnx.ModelProto, group: SmoothGroup, act_max: np.ndarray, alpha: float) -> np.ndarray:
    ln = group.layer_norm
    weights = [(node, axis, _own_initializer(model, node, 1)) for node, axis in group.consumers]
    w_max = np.max([np.abs(numpy_helper.to_array(w)).max(axis=1 - a) for _, a, w in weights], axis=0)
    scale = np.ones_like(act_max, dtype=np.float32)
    live = (act_max > 0) & (w_max > 0)
    scale[live] = act_max[live] ** alpha / w_max[live] ** (1 - alpha)
    scale = np.clip(scale, *SCALE_LIMITS).astype(np.float32)
    for index in (1, 2):  # gamma, beta (optional)
        if len(ln.input) > index and ln.input[index]:
            t = _own_initializer(model, ln, index)
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t) / scale, t.name))
    for _, axis, w in weights:
        array = numpy_helper.to_array(w)
        array = array * (scale[:, None] if axis == 0 else scale[None, :])
        w.CopyFrom(numpy_helper.from_array(array.astype(np.float32), w.name))
    return scale


def _own_initializer(model: onnx.ModelProto, node: onnx.NodeProto, index: int) -> onnx.TensorProto:
    """The initializer at `node.input[index]`, copied under a new name if anything else reads it
    (exporters merge equal initializers: every LayerNorm of a fresh transformer shares one gamma)."""
    g = model.graph
    name = node.input[index]
    tensor = next(i for i in g.initializer if i.name == name)
    uses = sum(list(n.input).count(name) for n in g.node) + sum(o.name == name for o in g.output)
    if uses <= 1:
        return tensor
    taken = {i.name for i in g.initializer}
    new = f"{name}_smooth_{node.name or 'node'}"
    while new in taken:
        new += "_"
    copy = g.initializer.add()
    copy.CopyFrom(tensor)
    copy.name = new
    node.input[index] = new
    return copy


def _constant_values(g: onnx.GraphProto, inits: dict) -> dict[str, np.ndarray]:
    values = {name: numpy_helper.to_array(t) for name, t in inits.items() if t.data_type == onnx.TensorProto.INT64}
    for node in g.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return values


def _attr(node: onnx.NodeProto, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def smooth_for_quantization(src: Path, work: Path, calib, extra: dict, max_samples: int) -> tuple[Path, dict]:
    """What a quantizer should read: `src` smoothed into the folder `work` when QuantOptions.extra asks for
    `smooth_quant`, else `src` itself; plus the provenance entry that says so ({} when off)."""
    alpha = smooth_alpha(extra)
    if alpha is None:
        return Path(src), {}
    out = Path(work) / f"{Path(src).stem}.smoothed.onnx"
    summary = smooth_onnx(Path(src), out, calib, alpha, max_samples)
    return out, {OPTION: {k: summary[k] for k in ("alpha", "groups", "max_scale", "samples")}}
