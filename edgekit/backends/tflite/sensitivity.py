"""Per-op int8 error of an int8 .tflite against its float .tflite, ranked like edgekit.onnx.sensitivity.

ai-edge-quantizer keeps the op output tensor names of the float model and adds QUANTIZE /
DEQUANTIZE ops (`<name>_quantized`, `<name>_dequant`) where float and int8 meet, so the two
models line up by name. LiteRT runs both with every intermediate tensor kept; int8 tensors are
dequantized with their own scale and zero point. Names here are TFLite op output names, which is
what the tflite target's `--exclude` globs match.
"""

from __future__ import annotations

import numpy as np

from edgekit.core.artifact import Artifact
from edgekit.onnx.sensitivity import LayerError, Tap, score_layers

EDGE_OPS = ("QUANTIZE", "DEQUANTIZE")
SUFFIXES = ("_quantized", "_dequant")


def tflite_layer_errors(float_art: Artifact, int8_art: Artifact, data, max_samples: int = 32) -> list[LayerError]:
    from edgekit.backends.tflite import flatbuffer as fb
    from edgekit.backends.tflite.runner import IoMap, load_interpreter, signature_details, to_model_layout

    io = IoMap.from_dict(int8_art.provenance.get("io"))
    obj = fb.read(int8_art.path.read_bytes())
    sg, types = obj.subgraphs[0], fb.op_type_names(obj)
    ops = [(types[o.opcodeIndex], [fb.tensor_name(sg.tensors[i]) for i in o.inputs if i >= 0],
            [fb.tensor_name(sg.tensors[i]) for i in o.outputs]) for o in sg.operators]
    consumers: dict[str, list[str]] = {}
    for kind, ins, outs in ops:
        if kind not in EDGE_OPS and outs:
            for i in ins:
                consumers.setdefault(_base(i), []).append(outs[0])
    float_interp = load_interpreter(float_art.path, preserve_all_tensors=True)
    float_names = {d["name"] for d in float_interp.get_tensor_details()}
    taps = [Tap(outs[0], outs[0], kind, tuple(_base(i) for i in ins),
                tuple(dict.fromkeys((outs[0], *consumers.get(outs[0], [])))))
            for kind, ins, outs in ops if kind not in EDGE_OPS and outs and outs[0] in float_names]
    int8_interp = load_interpreter(int8_art.path, preserve_all_tensors=True)
    int8_index = {d["name"]: d for d in int8_interp.get_tensor_details()}
    float_index = {d["name"]: d["index"] for d in float_interp.get_tensor_details()}
    # graph inputs are quantized too: their error is the first op's starting point
    wanted = [t.tensor for t in taps] + [fb.tensor_name(sg.tensors[i]) for i in sg.inputs]

    def feed_model(interp, feed):
        details = signature_details(interp)[0]  # signature name = the ONNX-side input name
        for b in io.inputs:
            detail = details[b.name]
            value = to_model_layout(np.asarray(feed[b.name]), b.perm).astype(detail["dtype"], copy=False)
            interp.set_tensor(detail["index"], value)
        interp.invoke()

    def run_ref(feed):
        feed_model(float_interp, feed)
        return {n: _nchw(float_interp.get_tensor(float_index[n])) for n in wanted if n in float_index}

    def run_q(feed):
        feed_model(int8_interp, feed)
        out = {}
        for n in wanted:
            seen = f"{n}_quantized" if f"{n}_quantized" in int8_index else n  # what the consumers compute with
            if seen in int8_index:
                out[n] = _nchw(_dequantize(int8_interp.get_tensor(int8_index[seen]["index"]), int8_index[seen]))
        return out

    return score_layers(taps, run_ref, run_q, data, max_samples)


def _base(name: str) -> str:
    for s in SUFFIXES:
        if name.endswith(s):
            return name[: -len(s)]
    return name


def _dequantize(value: np.ndarray, detail: dict) -> np.ndarray:
    if value.dtype.kind == "f":
        return value
    q = detail.get("quantization_parameters") or {}
    scales, zeros = np.asarray(q.get("scales", [])), np.asarray(q.get("zero_points", []))
    if scales.size == 0:
        return value.astype(np.float32)
    if scales.size == 1:
        return (value.astype(np.float32) - zeros[0]) * scales[0]
    shape = [1] * value.ndim
    shape[q.get("quantized_dimension", 0)] = -1
    return (value.astype(np.float32) - zeros.reshape(shape)) * scales.reshape(shape)


def _nchw(a: np.ndarray) -> np.ndarray:
    """NHWC maps with channels where edgekit.onnx.sensitivity looks for them (axis 1)."""
    a = np.array(a)
    return np.moveaxis(a, -1, 1) if a.ndim == 4 else a

