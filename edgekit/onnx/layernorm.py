"""LayerNorm -> MatMul/Gemm groups in an ONNX graph, as the torch exporters emit them (edgekit.onnx.smoothquant).

Two forms of LayerNorm reach us:
- fused: one `LayerNormalization` op (the dynamo exporter, or the TorchScript one at opset >= 17);
- decomposed: ReduceMean, Sub, Pow, ReduceMean, Add, Sqrt, Div, then `Mul(gamma)` and `Add(beta)` (the
  TorchScript exporter below opset 17, and Hugging Face exports made with it); RMSNorm's Mul(gamma) alike.
The legacy exporter hands gamma/beta through `Identity` nodes when parameters share values, so a constant
is followed through Identity and Constant nodes.

The LayerNorm output may reach its MatMuls through a Reshape or Transpose that keeps the channel dim last,
and may also feed a residual Add or a graph output (post-LN transformers: BERT, nn.TransformerEncoderLayer);
then the smoothing gives the MatMul branch its own copy of the affine part (`SmoothGroup.others`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

PASS_OPS = ("Reshape", "Transpose")  # between a LayerNorm and its MatMul, when they keep the channel dim last
NORM_DEPTH = 4  # producers searched from the normalizing Div/Mul back to the variance's ReduceMean


@dataclass(frozen=True)
class SmoothGroup:
    """One LayerNorm whose output reaches MatMul/Gemm weights that can absorb its scale."""

    layer_norm: onnx.NodeProto  # the node that writes the normalized output (LayerNormalization, or the affine Add/Mul)
    consumers: tuple[tuple[onnx.NodeProto, int], ...]  # (MatMul/Gemm, axis of its weight that is input channels)
    affine: tuple[tuple[onnx.NodeProto, int], ...] = ()  # (node, input index) of gamma and beta, divided by the scale
    nodes: tuple[onnx.NodeProto, ...] = ()  # the affine nodes, copied when `others` read the unsmoothed output
    branch: tuple[onnx.NodeProto, ...] = ()  # first nodes on the way to the MatMuls (rewired to the copy)
    others: int = 0  # readers of the output that cannot absorb a scale (residual Add, graph output)
    form: str = "fused"

    @property
    def output(self) -> str:
        return self.layer_norm.output[0]


@dataclass
class GraphIndex:
    """What pattern matching needs to look up in one graph."""

    inits: dict
    consumers: dict
    producers: dict
    floats: dict  # name -> float array of initializers, Constant nodes and Identity of those
    ints: dict
    graph_outputs: set

    @classmethod
    def of(cls, g: onnx.GraphProto) -> GraphIndex:
        inits = {i.name: i for i in g.initializer}
        consumers: dict[str, list[onnx.NodeProto]] = {}
        producers = {}
        for node in g.node:
            for name in node.input:
                consumers.setdefault(name, []).append(node)
            for name in node.output:
                producers[name] = node
        values = {name: numpy_helper.to_array(t) for name, t in inits.items()
                  if t.data_location != onnx.TensorProto.EXTERNAL}  # not loaded: no constant known
        for node in g.node:
            if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
                values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
            elif node.op_type == "Identity" and node.input[0] in values:
                values[node.output[0]] = values[node.input[0]]
        floats = {k: v for k, v in values.items() if v.dtype == np.float32}
        ints = {k: v for k, v in values.items() if v.dtype == np.int64}
        return cls(inits, consumers, producers, floats, ints, {o.name for o in g.output})


def find_groups(model: onnx.ModelProto) -> tuple[list[SmoothGroup], list[str]]:
    """Last-axis LayerNorms (fused or decomposed, constant gamma) whose output goes, maybe through a Reshape or
    Transpose that keeps the channel dim last, into the activation input of MatMul/Gemm with a constant 2-D
    float weight; plus why each other LayerNorm was left alone."""
    index = GraphIndex.of(model.graph)
    groups, skipped = [], []
    for node in model.graph.node:
        found = _layer_norm(node, index)
        if found is None:
            continue
        if isinstance(found, str):
            skipped.append(f"{node.name}: {found}")
            continue
        out_node, affine, nodes, channels, form = found
        group = _group(out_node, affine, nodes, channels, form, index)
        if isinstance(group, str):
            skipped.append(f"{out_node.name}: {group}")
        else:
            groups.append(group)
    return groups, skipped


def _layer_norm(node: onnx.NodeProto, index: GraphIndex):
    """None when `node` does not start a LayerNorm's affine part, a reason when it cannot be smoothed, else
    (output node, ((node, gamma index), (node, beta index)?), affine nodes, channels, form)."""
    if node.op_type == "LayerNormalization":
        gamma = index.floats.get(node.input[1]) if len(node.input) > 1 else None
        if attr(node, "axis", -1) != -1 or gamma is None or gamma.ndim != 1:
            return "not a last-axis LayerNorm with a constant float weight"
        affine = [(node, i) for i in (1, 2) if len(node.input) > i and node.input[i]]
        if len(affine) == 2 and index.floats.get(node.input[2]) is None:
            return "its bias is not a constant"
        return node, tuple(affine), (node,), gamma.size, "fused"
    if node.op_type != "Mul":
        return None
    gamma_at = _vector_input(node, index)
    if gamma_at is None or not _normalized(node.input[1 - gamma_at], index, NORM_DEPTH):
        return None
    channels = index.floats[node.input[gamma_at]].size
    affine, nodes, out = [(node, gamma_at)], [node], node
    nxt = index.consumers.get(node.output[0], [])
    if len(nxt) == 1 and nxt[0].op_type == "Add" and node.output[0] not in index.graph_outputs:
        beta_at = _vector_input(nxt[0], index, channels)
        if beta_at is not None:
            affine.append((nxt[0], beta_at))
            nodes.append(nxt[0])
            out = nxt[0]
    return out, tuple(affine), tuple(nodes), channels, "decomposed"


def _vector_input(node: onnx.NodeProto, index: GraphIndex, channels: int | None = None) -> int | None:
    """Which input of a binary node is a constant 1-D float vector (of `channels` values when given)."""
    for i, name in enumerate(node.input[:2]):
        value = index.floats.get(name)
        if value is not None and value.ndim == 1 and value.size > 1 and channels in (None, value.size):
            other = node.input[1 - i]
            if other not in index.floats:
                return i
    return None


def _normalized(tensor: str, index: GraphIndex, depth: int) -> bool:
    """`tensor` is x / sqrt(var + eps) (or x * rsqrt): a Div/Mul whose inputs come from a last-axis ReduceMean."""
    node = index.producers.get(tensor)
    if node is None or node.op_type not in ("Div", "Mul"):
        return False
    return any(_reaches_reduce_mean(name, index, depth) for name in node.input[1:] if node.op_type == "Div") or (
        node.op_type == "Mul" and any(_reaches_reduce_mean(name, index, depth) for name in node.input))


def _reaches_reduce_mean(tensor: str, index: GraphIndex, depth: int) -> bool:
    node = index.producers.get(tensor)
    if node is None or depth <= 0:
        return False
    if node.op_type == "ReduceMean":
        axes = attr(node, "axes", None)
        if axes is None and len(node.input) > 1:
            axes = index.ints.get(node.input[1])
        return axes is not None and [int(a) for a in np.atleast_1d(axes)] == [-1]
    if node.op_type not in ("Sqrt", "Reciprocal", "Add", "Pow", "Cast"):
        return False
    return any(_reaches_reduce_mean(name, index, depth - 1) for name in node.input if name not in index.floats)


def _group(out_node, affine, nodes, channels: int, form: str, index: GraphIndex):
    tensor = out_node.output[0]
    found, branch, others = [], [], int(tensor in index.graph_outputs)
    reasons = []
    for node in index.consumers.get(tensor, []):
        more = _weight_consumers(node, tensor, channels, index)
        if isinstance(more, str):
            others += 1
            reasons.append(more)
        else:
            found += more
            branch.append(node)
    if not found:
        return reasons[0] if reasons else "its output is a graph output" if others else "feeds no MatMul/Gemm"
    return SmoothGroup(out_node, tuple(found), tuple(affine), tuple(nodes), tuple(branch), others, form)


def _weight_consumers(node: onnx.NodeProto, tensor: str, channels: int, index: GraphIndex):
    """[(MatMul/Gemm, input-channel axis of its weight)] reached from `node` reading `tensor`, or why not."""
    if node.op_type in PASS_OPS and node.input[0] == tensor:
        if node.op_type == "Reshape":
            shape = index.ints.get(node.input[1]) if len(node.input) > 1 else None
            if shape is None or shape.size == 0 or int(shape[-1]) != channels:
                return f"{node.name} reshapes away the channel dim"
        else:
            perm = attr(node, "perm", None)
            if not perm or perm[-1] != len(perm) - 1:
                return f"{node.name} moves the channel dim"
        if node.output[0] in index.graph_outputs:
            return "its output is a graph output"
        found = []
        for nxt in index.consumers.get(node.output[0], []):
            more = _weight_consumers(nxt, node.output[0], channels, index)
            if isinstance(more, str):
                return more
            found += more
        return found or "feeds no MatMul/Gemm"
    if node.op_type not in ("MatMul", "Gemm") or node.input[0] != tensor:
        return f"feeds {node.op_type} {node.name}, which cannot absorb a scale"
    weight = index.inits.get(node.input[1])
    if weight is None or len(weight.dims) != 2 or weight.data_type != onnx.TensorProto.FLOAT:
        return f"{node.name} has no constant 2-D float weight"
    if node.op_type == "Gemm" and attr(node, "transA", 0):
        return f"{node.name} transposes its activation"
    axis = 1 if node.op_type == "Gemm" and attr(node, "transB", 0) else 0
    if weight.dims[axis] != channels:
        return f"{node.name}'s weight does not match {channels} channels"
    return [(node, axis)]


def attr(node: onnx.NodeProto, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default
