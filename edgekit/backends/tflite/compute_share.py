"""Where a float .tflite does its multiply-adds: in fully-connected layers (an encoder) or convolutions.

The tflite target's `auto` int8 follows it. Static int8 of a transformer encoder on TFLite keeps every
LayerNorm, softmax and GELU piece in int8 with one calibrated range each, and all-MiniLM-L6-v2 lost its
embeddings (nearest-neighbour agreement 0.047); with int8 weights and activations quantized at run time by
XNNPACK's dynamically quantized kernels it kept 0.922 and ran 1.24x faster than float (2-core AVX2 EPYC).
A network of convolutions is the other way round: the text recognizer SVTR-LCNet (convolutions first,
attention after) kept cosine 0.980 dynamically but ran at 0.48x of float (on a loaded machine), against
1.05x for its static int8.
"""

from __future__ import annotations

from edgekit.backends.tflite.flatbuffer import elements, op_type_names, product, read

MATMUL_OPS = ("FULLY_CONNECTED", "BATCH_MATMUL")
CONV_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV", "CONV_3D")
ENCODER_SHARE = 0.5  # fully-connected multiply-adds above this share: an encoder


def matmul_share(model: bytes) -> float:
    """Share of the multiply-adds of convolutions and matrix products that are in matrix products (0..1)."""
    obj = read(model)
    names = op_type_names(obj)
    sg = obj.subgraphs[0]
    matmul = conv = 0.0
    for o in sg.operators:
        t = names[o.opcodeIndex]
        if t not in MATMUL_OPS + CONV_OPS or not len(o.outputs):
            continue
        out = elements(sg.tensors[o.outputs[0]])
        if t in MATMUL_OPS:
            # the reduced dimension is the first input's last axis
            matmul += out * _dim(sg.tensors[o.inputs[0]], -1)
        elif t == "DEPTHWISE_CONV_2D":
            w = sg.tensors[o.inputs[1]].shape  # 1 x kh x kw x channels
            conv += out * product(w[1:3])
        elif t == "TRANSPOSE_CONV":
            w = sg.tensors[o.inputs[1]].shape  # out channels x kh x kw x in channels
            conv += elements(sg.tensors[o.inputs[2]]) * product(w[:3])
        else:
            w = sg.tensors[o.inputs[1]].shape  # out channels x (kd) x kh x kw x in channels
            conv += out * product(w[1:])
    total = matmul + conv
    return matmul / total if total else 0.0


def _dim(tensor, axis: int) -> float:
    shape = tensor.shape
    return float(shape[axis]) if shape is not None and len(shape) else 1.0

