"""Control flow in an ONNX graph: If / Loop / Scan nodes and how much of the model's compute sits inside
their subgraphs, so a target that quantizes the main graph only can say what stayed float."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import onnx

CONTROL_FLOW_OPS = ("If", "Loop", "Scan")
COMPUTE_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")  # what int8 speeds up


@dataclass(frozen=True)
class ControlFlow:
    nodes: tuple[tuple[str, str], ...]  # (name, op type) of the main graph's control-flow nodes
    compute_inside: int  # Conv/Gemm/MatMul inside their subgraphs (at any depth)
    compute_outside: int  # in the main graph

    def __bool__(self) -> bool:
        return bool(self.nodes)

    def describe(self) -> str:
        names = ", ".join(f"{op} node '{name}'" for name, op in self.nodes[:3])
        more = f" and {len(self.nodes) - 3} more" if len(self.nodes) > 3 else ""
        total = self.compute_inside + self.compute_outside
        verb = "holds" if len(self.nodes) == 1 else "hold"
        return f"{names}{more} {verb} {self.compute_inside} of the model's {total} Conv/Gemm/MatMul ops"

    def to_dict(self) -> dict:
        return {"nodes": [{"name": n, "op": op} for n, op in self.nodes], "compute_inside": self.compute_inside,
                "compute_outside": self.compute_outside}


def control_flow(model: onnx.ModelProto) -> ControlFlow:
    nodes = tuple((n.name or n.output[0], n.op_type) for n in model.graph.node if n.op_type in CONTROL_FLOW_OPS)
    inside = sum(_compute(a.g) for n in model.graph.node if n.op_type in CONTROL_FLOW_OPS
                 for a in n.attribute if a.type == onnx.AttributeProto.GRAPH)
    outside = sum(1 for n in model.graph.node if n.op_type in COMPUTE_OPS)
    return ControlFlow(nodes, inside, outside)


def _compute(graph: onnx.GraphProto) -> int:
    count = 0
    for node in graph.node:
        count += node.op_type in COMPUTE_OPS
        count += sum(_compute(a.g) for a in node.attribute if a.type == onnx.AttributeProto.GRAPH)
        count += sum(_compute(g) for a in node.attribute if a.type == onnx.AttributeProto.GRAPHS for g in a.graphs)
    return count


def quantized_compute(model: onnx.ModelProto) -> int:
    """Main-graph Conv/Gemm/MatMul ops that read a DequantizeLinear: what a QDQ int8 really quantized."""
    dequantized = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    return sum(1 for n in model.graph.node if n.op_type in COMPUTE_OPS and any(i in dequantized for i in n.input))


def main_graph_only_note(float_model: Path, int8_model: Path, target: str) -> dict:
    """For a target whose int8 does not enter subgraphs: {"control_flow": ...} for the sidecar (empty without
    control flow), and one line saying what stayed float."""
    from edgekit.core.console import note
    from edgekit.core.onnx_model import load_onnx

    flow = control_flow(load_onnx(float_model, load_external_data=False))
    if not flow:
        return {}
    done = quantized_compute(load_onnx(int8_model, load_external_data=False))
    note(f"{target}: {flow.describe()}; its int8 does not enter subgraphs, so they stay float"
         + ("; nothing was quantized" if done == 0 else f" ({done} quantized outside them)"))
    return {"control_flow": {**flow.to_dict(), "quantized_compute": done}}
