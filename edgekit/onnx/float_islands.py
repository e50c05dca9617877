"""Ops of a QDQ int8 model that ONNX Runtime still runs in float, between int8 neighbours.

ONNX Runtime fuses DequantizeLinear -> op -> QuantizeLinear into an int8 kernel only for the ops it has one for.
Any other op (HardSigmoid, the HardSwish of PP-LCNet and MobileNetV3 exported at opset 12) runs in float with a
DequantizeLinear before and a QuantizeLinear after it: three passes over the activation where FP32 fused the op
into its convolution. Profiled on PP-LCNet (30 HardSigmoid): its int8 convolutions took 2.6 ms a run against FP32's
2.7 ms, and the HardSwish pieces 3.5 ms more (the whole int8 0.81x FP32). What is left is read from the graph ONNX
Runtime itself optimises (no list of ops kept here to go stale): every activation DequantizeLinear that survives
feeds a float op.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path

# ops that read only the shape, or only move values as ONNX Runtime's optimiser leaves them (a DequantizeLinear
# into them is not a float compute island)
_NOT_COMPUTE = {"Shape", "Size", "DequantizeLinear", "QuantizeLinear"}
_INT8_COMPUTE = {"QLinearConv", "QLinearMatMul", "QGemm", "MatMulIntegerToFloat", "ConvInteger", "MatMulInteger"}
# islands worth a warning: a detector's float box decode (3 ops against 64 int8 convolutions) costs nothing much
WARN_SHARE = 0.2


def float_islands(int8_model: Path) -> tuple[Counter, int]:
    """(op type -> how many nodes of it run in float between a DequantizeLinear and a QuantizeLinear, the count of
    int8 convolutions and matrix products), after ONNX Runtime's own QDQ fusions (extended optimisation level: no
    layout changes of one CPU)."""
    import onnx
    import onnxruntime as ort

    from edgekit.onnx.session import ort_session

    with tempfile.TemporaryDirectory(prefix="edgekit-islands-") as tmp:
        optimized = Path(tmp) / "optimized.onnx"
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        so.optimized_model_filepath = str(optimized)
        ort_session(int8_model, so, threads=1)
        graph = onnx.load(str(optimized), load_external_data=False).graph
    constants = {i.name for i in graph.initializer} | {o for n in graph.node if n.op_type == "Constant"
                                                          for o in n.output}
    dequantized = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] not in constants}
    quantizes = {n.input[0] for n in graph.node if n.op_type == "QuantizeLinear"}
    found: Counter = Counter()
    for node in graph.node:
        if node.op_type in _NOT_COMPUTE or not dequantized.intersection(node.input):
            continue
        if any(o in quantizes for o in node.output):  # back to int8 after it: an island, not the float tail
            found[node.op_type] += 1
    return found, sum(1 for n in graph.node if n.op_type in _INT8_COMPUTE)


def float_islands_note(int8_model: Path, target: str) -> dict:
    """{"float_between_int8": {op: count}} for the sidecar (empty when every op between int8 ones is int8), and one
    line saying what it costs."""
    from edgekit.core.console import note_once

    try:
        found, int8_ops = float_islands(int8_model)
    except Exception:  # a diagnosis only (a model ONNX Runtime cannot re-serialise, say): the int8 stands
        return {}
    if not found:
        return {}
    if sum(found.values()) >= WARN_SHARE * int8_ops:
        ops = ", ".join(f"{op} x{count}" for op, count in found.most_common())
        line = (f"{target}: {sum(found.values())} ops have no int8 kernel and run in float between int8 ones ({ops}), "
                f"against {int8_ops} int8 convolutions and matrix products; each adds a dequantize and a quantize, "
                "so this int8 may run slower than FP32")
        note_once(line)  # the accuracy search quantizes the same model many times
    return {"float_between_int8": dict(found.most_common()), "int8_compute_ops": int8_ops}
