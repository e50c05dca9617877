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
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from edgekit.core.atomic import atomic_path
from edgekit.core.errors import InvalidInputError
from edgekit.core.onnx_model import load_onnx
from edgekit.core.progress import progress_iter
from edgekit.onnx.layernorm import GraphIndex, SmoothGroup, find_groups

OPTION = "smooth_quant"  # QuantOptions.extra key: alpha, or false/0/absent for off
DEFAULT_ALPHA = 0.5
SCALE_LIMITS = (1e-4, 1e4)  # a channel that is ~0 on one side must not blow the other up


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
        absmax, summary["samples"] = activation_absmax(model, [g.output for g in groups], calib,
                                                       max_samples)
        index, placed = GraphIndex.of(model.graph), {}
        scales = [_apply(model, g, absmax[g.output], alpha, index, placed) for g in groups]
        summary["copied_affine"] = sum(1 for g in groups if g.others)
        _place_copies(model.graph, placed)
        _drop_unused_initializers(model.graph)
        summary["groups"] = len(groups)
        summary["max_scale"] = round(float(max(s.max() for s in scales)), 3)
        summary["min_scale"] = round(float(min(s.min() for s in scales)), 5)
    with atomic_path(dst) as tmp:
        onnx.save(model, str(tmp))
    return summary


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


def _apply(model: onnx.ModelProto, group: SmoothGroup, act_max: np.ndarray, alpha: float,
           index: GraphIndex, placed: dict) -> np.ndarray:
    weights = [(node, axis, _own_initializer(model, node, 1)) for node, axis in group.consumers]
    w_max = np.max([np.abs(numpy_helper.to_array(w)).max(axis=1 - a) for _, a, w in weights], axis=0)
    scale = np.ones_like(act_max, dtype=np.float32)
    live = (act_max > 0) & (w_max > 0)
    scale[live] = act_max[live] ** alpha / w_max[live] ** (1 - alpha)
    scale = np.clip(scale, *SCALE_LIMITS).astype(np.float32)
    targets = {id(n): n for n in group.nodes}
    if group.others:  # a residual Add or graph output keeps the unsmoothed output: the MatMuls get a copy
        targets = _copy_affine(model.graph, group, placed)
    for node, at in group.affine:
        target = targets.get(id(node), node)
        value = (index.floats[node.input[at]] / scale).astype(np.float32)
        target.input[at] = _new_initializer(model.graph, value, f"{node.input[at]}_smooth")
    for _, axis, w in weights:
        array = numpy_helper.to_array(w)
        array = array * (scale[:, None] if axis == 0 else scale[None, :])
        w.CopyFrom(numpy_helper.from_array(array.astype(np.float32), w.name))
    return scale


def _copy_affine(g: onnx.GraphProto, group: SmoothGroup, placed: dict) -> dict:
    """Copies of the group's affine nodes (LayerNormalization, or Mul/Add of gamma/beta), placed right after
    the originals (`placed`: output -> copies, for _place_copies), writing `<output>_smooth`, which the MatMul
    branch now reads: {id(original): copy}."""
    renamed = {n.output[0]: f"{n.output[0]}_smooth" for n in group.nodes}
    copies = {}
    for node in group.nodes:
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        copy.name = f"{node.name}_smooth"
        copy.input[:] = [renamed.get(i, i) for i in node.input]
        del copy.output[1:]  # LayerNormalization's optional mean / inv-std outputs stay with the original
        copy.output[0] = renamed[node.output[0]]
        copies[id(node)] = copy
    for node in group.branch:
        node.input[:] = [renamed.get(i, i) if i == group.output else i for i in node.input]
    added = {}
    for node in group.nodes:  # appended; _place_copies puts them in order once every group is done
        g.node.add().CopyFrom(copies[id(node)])
        added[id(node)] = g.node[len(g.node) - 1]
    placed.setdefault(group.output, []).extend(renamed[n.output[0]] for n in group.nodes)
    return added


def _place_copies(g: onnx.GraphProto, copies: dict[str, list[str]]) -> None:
    """Move the affine copies (appended by _copy_affine) right after the node writing the output they copy:
    their inputs exist there, and everything reading them comes later."""
    if not copies:
        return
    moved = {name for outputs in copies.values() for name in outputs}
    nodes = [onnx.NodeProto.FromString(n.SerializeToString()) for n in g.node]
    by_output = {n.output[0]: n for n in nodes if n.output[0] in moved}
    ordered = []
    for node in nodes:
        if node.output[0] in moved:
            continue
        ordered.append(node)
        ordered += [by_output[name] for name in copies.get(node.output[0], ())]
    del g.node[:]
    g.node.extend(ordered)


def _new_initializer(g: onnx.GraphProto, value: np.ndarray, name: str) -> str:
    taken = {i.name for i in g.initializer}
    while name in taken:
        name += "_"
    g.initializer.append(numpy_helper.from_array(value, name))
    return name


def _drop_unused_initializers(g: onnx.GraphProto) -> None:
    used = {name for n in g.node for name in n.input} | {o.name for o in g.output}
    keep = [i for i in g.initializer if i.name in used]
    if len(keep) < len(g.initializer):
        keep = [onnx.TensorProto.FromString(i.SerializeToString()) for i in keep]
        del g.initializer[:]
        g.initializer.extend(keep)


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


def smooth_for_quantization(src: Path, work: Path, calib, extra: dict, max_samples: int) -> tuple[Path, dict]:
    """What a quantizer should read: `src` smoothed into the folder `work` when QuantOptions.extra asks for
    `smooth_quant`, else `src` itself; plus the provenance entry that says so ({} when off)."""
    alpha = smooth_alpha(extra)
    if alpha is None:
        return Path(src), {}
    out = Path(work) / f"{Path(src).stem}.smoothed.onnx"
    summary = smooth_onnx(Path(src), out, calib, alpha, max_samples)
    return out, {OPTION: {k: summary[k] for k in ("alpha", "groups", "max_scale", "samples")}}
