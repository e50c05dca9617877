"""Small edits and summaries of a .tflite flatbuffer (through ai-edge-litert's schema helpers)."""

from __future__ import annotations

from collections import Counter

import numpy as np

from edgekit.backends.tflite.runner import SIGNATURE_KEY


def _fu():
    from ai_edge_litert.tools import flatbuffer_utils

    return flatbuffer_utils


def read(model: bytes):
    return _fu().read_model_from_bytearray(bytearray(model))


def write(model_obj) -> bytes:
    return bytes(_fu().convert_object_to_bytearray(model_obj))


def tensor_name(t) -> str:
    return t.name.decode() if isinstance(t.name, bytes) else str(t.name)


def elements(tensor) -> int:
    """Values in a tensor of its flatbuffer shape (a dynamic -1 or a 0-d tensor counts as 1)."""
    return product(tensor.shape if tensor.shape is not None else ())


def product(dims) -> int:
    """The product of flatbuffer dimensions, a dynamic -1 counting as 1 (1 for none)."""
    return int(np.prod([max(int(d), 1) for d in dims])) if len(dims) else 1


def op_type_names(model_obj) -> list[str]:
    """Builtin op name of every operator code, e.g. 'CONV_2D'."""
    fu = _fu()
    by_code = {v: k for k, v in vars(fu.BuiltinOperator).items() if not k.startswith("_")}
    return [by_code.get(fu.get_builtin_code_from_operator_code(c), "CUSTOM") for c in model_obj.operatorCodes]


def set_signature(model: bytes, inputs: list[tuple[str, int]], outputs: list[tuple[str, int]]) -> bytes:
    """One `serving_default` signature whose names are the ONNX names, so any LiteRT user sees them."""
    from ai_edge_litert import schema_py_generated as schema

    obj = read(model)

    def tensor_map(name: str, index: int):
        m = schema.TensorMapT()
        m.name, m.tensorIndex = name, index
        return m

    sig = schema.SignatureDefT()
    sig.signatureKey = SIGNATURE_KEY
    sig.subgraphIndex = 0
    sig.inputs = [tensor_map(n, i) for n, i in inputs]
    sig.outputs = [tensor_map(n, i) for n, i in outputs]
    obj.signatureDefs = [sig]
    return write(obj)


def summarize(model: bytes) -> dict:
    """Op counts, float ops left in a quantized model, and memory figures for the sidecar."""
    obj = read(model)
    names = op_type_names(obj)
    sg = obj.subgraphs[0]
    ops = Counter(names[op.opcodeIndex] for op in sg.operators)
    fu = _fu()
    float_types = {fu.TensorType.FLOAT32, fu.TensorType.FLOAT16}
    weight_bytes = activation_bytes = 0
    float_compute = Counter()
    for t in sg.tensors:
        data = obj.buffers[t.buffer].data if t.buffer < len(obj.buffers) else None
        nbytes = int(np.prod(t.shape or [1])) * _itemsize(t.type)
        if data is not None and len(data):
            weight_bytes += len(data)
        else:
            activation_bytes += nbytes
    for op in sg.operators:
        name = names[op.opcodeIndex]
        if name in ("QUANTIZE", "DEQUANTIZE"):
            continue
        outs = [sg.tensors[i] for i in op.outputs if i >= 0]
        if outs and all(o.type in float_types for o in outs):
            float_compute[name] += 1
    return {
        "ops": dict(sorted(ops.items())),
        "float_ops": dict(sorted(float_compute.items())),
        # every non-constant tensor at once: an upper bound of LiteRT's arena, which re-uses memory
        "memory": {"weights_bytes": weight_bytes, "activations_upper_bound_bytes": activation_bytes},
    }


def _itemsize(tensor_type: int) -> int:
    tt = _fu().TensorType
    sizes = {tt.FLOAT32: 4, tt.INT32: 4, tt.UINT32: 4, tt.FLOAT16: 2, tt.INT16: 2, tt.UINT16: 2,
             tt.INT8: 1, tt.UINT8: 1, tt.BOOL: 1, tt.INT64: 8, tt.FLOAT64: 8}
    return sizes.get(tensor_type, 4)
