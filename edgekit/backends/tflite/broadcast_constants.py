"""Ops whose constant inputs ai-edge-quantizer cannot quantize: it gives them the output's own scale.

SELECT_V2 (ONNX Where) takes its inputs at the output's scale, and ai-edge-quantizer quantizes a constant
input with the output's scale array, which has the output's rank; a broadcast constant of a lower rank (the
scalar 0 of `where(isnan(softmax), 0, softmax)` that the ONNX exporter puts after every attention softmax, or
the -inf of an attention mask) then fails with "Ranks of scales (4) and zps (4) must be the same as the tensor
rank (1)". Such ops stay float: XNNPACK runs SELECT_V2 in neither dtype, so it costs a QUANTIZE/DEQUANTIZE.
"""

from __future__ import annotations

from edgekit.backends.tflite.flatbuffer import op_type_names, read, tensor_name

SAME_SCALE_BROADCASTING = ("SELECT_V2", "SELECT")


def broadcast_constant_ops(model: bytes) -> list[tuple[str, str]]:
    """(op type, first output name) of each same-scale op with a constant input of another rank than its output."""
    obj = read(model)
    names = op_type_names(obj)
    sg = obj.subgraphs[0]
    found = []
    for o in sg.operators:
        t = names[o.opcodeIndex]
        if t not in SAME_SCALE_BROADCASTING or not len(o.outputs):
            continue
        out = sg.tensors[o.outputs[0]]
        rank = len(out.shape) if out.shape is not None else 0
        if any(_is_constant(obj, sg.tensors[i]) and len(sg.tensors[i].shape or []) != rank
               for i in o.inputs if i >= 0):
            found.append((t, tensor_name(out)))
    return found


def _is_constant(obj, tensor) -> bool:
    data = obj.buffers[tensor.buffer].data if 0 < tensor.buffer < len(obj.buffers) else None
    return data is not None and len(data) > 0
