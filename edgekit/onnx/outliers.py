"""Outlier input channels of a MatMul split off into float (LLM.int8(), Dettmers et al. 2022, on an ONNX graph).

A transformer's MLP down-projection reads the activation function's output, whose few outlier channels (one to
four of 1536 on all-MiniLM-L6-v2, 6-35x the median channel) set its per-tensor int8 scale and leave the other
channels a handful of levels; no LayerNorm precedes it, so SmoothQuant cannot fold a scale anywhere. Here
y = x @ W becomes

    x_in = x * keep (outlier channels zeroed)   ->  MatMul(x_in, W with those rows zeroed)   (int8)
    x_out = Gather(x, outliers, axis=-1)        ->  Einsum(x_out, W[outliers])               (float, k rows)
    y = Add(int8 part, float part)

which is the same function in FP32. The Einsum is no op type the Q/DQ quantizers quantize, so the k-row product
stays float without a name to exclude. Measured on all-MiniLM-L6-v2 (ONNX Runtime, SmoothQuant, MatMuls only):
embedding cosine 0.9948 -> 0.9979, nearest-neighbour agreement 0.88 -> 0.95, for one elementwise Mul and a
k-column product per layer.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgekit.core.atomic import atomic_path
from edgekit.core.onnx_model import load_onnx

OPTION = "split_outliers"  # QuantOptions.extra: true (default on a transformer, edgekit.onnx.attention) or false
RATIO = 6.0  # a channel whose max |x| is over RATIO x the median channel's is split off
MAX_SHARE = 0.02  # more outliers than this share of the channels is no outlier pattern: the layer is left alone


def outlier_channels(absmax: np.ndarray, ratio: float = RATIO) -> np.ndarray:
    """Indices of the channels over `ratio` x the median max |x|; none when they are more than MAX_SHARE."""
    median = float(np.median(absmax))
    if median <= 0:
        return np.zeros(0, np.int64)
    found = np.flatnonzero(absmax > ratio * median)
    return found if len(found) <= MAX_SHARE * len(absmax) else np.zeros(0, np.int64)


def split_outliers(src: Path, dst: Path, calib, nodes: tuple[str, ...], max_samples: int) -> dict:
    """Write `src` with the outlier input channels of the MatMul/Gemm `nodes` split off to `dst`; the summary."""
    from edgekit.onnx.smoothquant import activation_absmax

    model = load_onnx(src)
    inits = {i.name: i for i in model.graph.initializer}
    chosen = [n for n in model.graph.node if n.name in set(nodes) and n.input[1] in inits]
    absmax, samples = activation_absmax(model, list(dict.fromkeys(n.input[0] for n in chosen)), calib, max_samples)
    before: dict[str, list[onnx.NodeProto]] = {}  # by the first output of the node they go before / after
    after: dict[str, onnx.NodeProto] = {}
    split = {}
    for node in chosen:
        idx = outlier_channels(absmax[node.input[0]])
        if len(idx):
            anchor = _bias_add(model.graph, node, inits) or node
            nodes, add = _split(model.graph, node, anchor, inits[node.input[1]], idx)
            before[node.output[0]], after[anchor.output[0]] = nodes, add
            split[node.name] = len(idx)
    ordered = []
    for node in model.graph.node:
        out = node.output[0] if node.output else ""
        ordered += [*before.get(out, []), node, *([after[out]] if out in after else [])]
    ordered = [onnx.NodeProto.FromString(n.SerializeToString()) for n in ordered]
    del model.graph.node[:]
    model.graph.node.extend(ordered)
    _drop_unused(model.graph)
    with atomic_path(dst) as tmp:
        onnx.save(model, str(tmp))
    return {"ratio": RATIO, "layers": len(split), "channels": int(sum(split.values())), "samples": samples,
            "split": split}


def _bias_add(g: onnx.GraphProto, node: onnx.NodeProto, inits: dict) -> onnx.NodeProto | None:
    """The bias Add that alone reads `node`'s output: the float part is added after it, so that ONNX Runtime
    still fuses MatMul + bias into one int8 Gemm (adding it in between cost ~11% of the FP32 time on MiniLM)."""
    readers = [n for n in g.node if node.output[0] in n.input]
    if len(readers) != 1 or readers[0].op_type != "Add" or node.output[0] in {o.name for o in g.output}:
        return None
    other = [i for i in readers[0].input if i != node.output[0]]
    return readers[0] if len(other) == 1 and other[0] in inits else None


def _split(g: onnx.GraphProto, node: onnx.NodeProto, anchor: onnx.NodeProto, weight: onnx.TensorProto,
           idx: np.ndarray):
    """(nodes before `node`, the Add after `anchor`: `node` or its bias Add); `node` is rewired to the inlier
    channels in place and `anchor` to write the int8 part."""
    w = numpy_helper.to_array(weight)
    trans_b = node.op_type == "Gemm" and any(a.name == "transB" and a.i for a in node.attribute)
    rows = w.T if trans_b else w  # (input channels, outputs)
    keep = np.ones(rows.shape[0], np.float32)
    keep[idx] = 0.0
    inliers = rows * keep[:, None]
    base = node.name or node.output[0]
    names = {k: _fresh(g, f"{base}_outlier_{k}") for k in ("keep", "idx", "w", "x_in", "x_out", "y_in", "y_out")}
    g.initializer.extend([
        numpy_helper.from_array(keep, names["keep"]),
        numpy_helper.from_array(idx.astype(np.int64), names["idx"]),
        numpy_helper.from_array(np.ascontiguousarray(rows[idx]).astype(np.float32), names["w"]),
        numpy_helper.from_array((inliers.T if trans_b else inliers).astype(np.float32), f"{names['w']}_inliers"),
    ])
    x, y = node.input[0], anchor.output[0]
    before = [
        helper.make_node("Mul", [x, names["keep"]], [names["x_in"]], name=f"{base}_outlier_keep"),
        helper.make_node("Gather", [x, names["idx"]], [names["x_out"]], name=f"{base}_outlier_gather", axis=-1),
        helper.make_node("Einsum", [names["x_out"], names["w"]], [names["y_out"]], name=f"{base}_outlier_float",
                         equation="...k,kn->...n"),
    ]
    node.input[0], node.input[1] = names["x_in"], f"{names['w']}_inliers"
    anchor.output[0] = names["y_in"]
    after = helper.make_node("Add", [names["y_in"], names["y_out"]], [y], name=f"{base}_outlier_add")
    return before, after


def _fresh(g: onnx.GraphProto, name: str) -> str:
    taken = {i.name for i in g.initializer} | {o for n in g.node for o in n.output}
    while name in taken:
        name += "_"
    return name


def _drop_unused(g: onnx.GraphProto) -> None:
    used = {name for n in g.node for name in n.input} | {o.name for o in g.output}
    keep = [onnx.TensorProto.FromString(i.SerializeToString()) for i in g.initializer if i.name in used]
    if len(keep) < len(g.initializer):
        del g.initializer[:]
        g.initializer.extend(keep)


def split_for_quantization(src: Path, work: Path, calib, nodes: tuple[str, ...], max_samples: int,
                           enabled: bool = True) -> tuple[Path, dict]:
    """What a quantizer should read: `src` with the outlier channels of `nodes` split off (into folder `work`),
    or `src` itself when there are none or it is off; plus the provenance entry ({} when nothing was asked)."""
    if not nodes:
        return Path(src), {}
    if not enabled:
        return Path(src), {OPTION: "off"}
    out = Path(work) / f"{Path(src).stem}.split.onnx"
    summary = split_outliers(Path(src), out, calib, nodes, max_samples)
    return (out if summary["layers"] else Path(src)), {OPTION: summary}
