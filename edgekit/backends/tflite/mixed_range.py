"""Mixed-range ops of a float .tflite kept in float (edgekit.onnx.mixed_range's rule, on the .tflite itself).

The rule runs on the .tflite rather than being mapped from the ONNX: the tflite target also converts from a
PyTorch .pt2, which has no ONNX, and onnx2tf / litert-torch rename, split and fuse ops, so ONNX names do not
survive. The ranges are the ones ai-edge-quantizer's calibration has just measured for every tensor (min/max
over all calibration samples), so the detection costs no extra run; constants are read from their buffers.
"""

from __future__ import annotations

import numpy as np

from edgekit.backends.tflite import flatbuffer as fb
from edgekit.core.errors import first_line
from edgekit.onnx.mixed_range import (
    RATIO,
    MixedRange,
    OpView,
    float_node_names,
    pick_mixed,
    provenance,
)

KINDS = {"CONCATENATION": "join", "ADD": "sum", "SUB": "sum", "SELECT": "sum", "SELECT_V2": "sum",
         "MAXIMUM": "sum", "MINIMUM": "sum", "ADD_N": "sum",
         "RESHAPE": "pass", "TRANSPOSE": "pass", "SQUEEZE": "pass", "EXPAND_DIMS": "pass"}


def tflite_ops(obj) -> list[OpView]:
    """Ops named by their first output tensor (what `--exclude` globs and the quantizer's scopes match)."""
    sg, names = obj.subgraphs[0], fb.op_type_names(obj)
    ops = []
    for k, o in enumerate(sg.operators):
        op = names[o.opcodeIndex]
        outputs = tuple(fb.tensor_name(sg.tensors[i]) for i in o.outputs if i >= 0)
        inputs = tuple(fb.tensor_name(sg.tensors[i]) for i in (o.inputs if o.inputs is not None else []) if i >= 0)
        ops.append(OpView(outputs[0] if outputs else f"#{k}", op, KINDS.get(op, "other"), inputs, outputs))
    return ops


def tensor_ranges(obj, qsvs: dict) -> tuple[dict[str, float], set[str]]:
    """(max |value| of every float32 tensor: constants from their buffers, activations from the qsvs;
    the constant vectors, which pick_mixed does not count as the smaller input of an ADD)."""
    from ai_edge_litert.tools import flatbuffer_utils

    ranges, constants = {}, set()
    for t in obj.subgraphs[0].tensors:
        if t.type != flatbuffer_utils.TensorType.FLOAT32:
            continue
        name = fb.tensor_name(t)
        data = obj.buffers[t.buffer].data if 0 < t.buffer < len(obj.buffers) else None
        if data is not None and len(data):
            values = np.frombuffer(bytes(bytearray(data)), np.float32)
            ranges[name] = float(np.abs(values).max()) if values.size else 0.0
            if values.size > 1:
                constants.add(name)
        elif name in qsvs and "min" in qsvs[name] and "max" in qsvs[name]:
            q = qsvs[name]
            ranges[name] = float(max(np.abs(np.asarray(q["min"])).max(), np.abs(np.asarray(q["max"])).max()))
    return ranges, constants


def keep_mixed_float(q, float_model: bytes, qsvs: dict, enabled: bool, names) -> tuple[list[MixedRange], dict]:
    """Set NO_QUANTIZE on the mixed-range ops and their readers; (what was found, its provenance).
    `names`: (TFLOperationName, AlgorithmName, the scope regex of an op) of ai-edge-quantizer / quant.py."""
    if not enabled:
        return [], provenance([], "off (option mixed_range_float = false)")
    op_name, algorithm, scope_regex = names
    try:
        obj = fb.read(float_model)
        ops = tflite_ops(obj)
        found = pick_mixed(ops, *tensor_ranges(obj, qsvs))
        kinds = {o.name: o.op for o in ops}
        known = {v.value for v in op_name}
        kept = [n for n in float_node_names(found) if kinds.get(n) in known]
        for name in kept:
            q.update_quantization_recipe(scope_regex(name), op_name(kinds[name]), algorithm_key=algorithm.NO_QUANTIZE)
    except KeyboardInterrupt:
        raise
    except Exception as e:
        return [], provenance([], f"failed, none kept float: {first_line(e, 200)}")
    return found, provenance(found, f"on (ratio > {RATIO:g}, ranges of all calibration samples)")
