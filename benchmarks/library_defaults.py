"""Each target's int8 the way its library's docs show it, every setting left at its default.

The baselines of benchmarks/accuracy_aware.py (imported from there; run that script, not this one):
- onnxruntime: quantize_static(model, out, reader) - QDQ, per-tensor weights, min/max;
- openvino: nncf.quantize(model, nncf.Dataset(data)) (benchmarks/openvino_int8.py);
- tflite: ai-edge-quantizer's static_wi8_ai8 recipe on litert-torch's float .tflite (benchmarks/tflite.py);
- tensorrt: ModelOpt's int8 placement (every conv, depthwise included), no bias correction.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from edgekit.backends.base import CompileOptions, QuantOptions
from edgekit.backends.onnxruntime import CalibrationReader
from edgekit.backends.registry import get_backend
from edgekit.core.artifact import Artifact

MODELOPT_DEFAULTS = {"quantizer": "modelopt", "quantize_depthwise": True, "bias_correction": False}


def library_default_int8(target: str, ref: Artifact, source: Artifact, calib, work: Path) -> Artifact:
    """`ref` the FP32 ONNX; `source` what the target converts (the .pt2 for tflite)."""
    work.mkdir(parents=True, exist_ok=True)
    if target == "onnxruntime":
        from onnxruntime.quantization import quantize_static

        out = work / "quantize_static.onnx"
        quantize_static(str(ref.path), str(out), CalibrationReader(calib, 300))
        return Artifact(out, "onnx", "int8", "onnxruntime", ref.inputs, ref.outputs)
    if target == "openvino":
        from openvino_int8 import plain_nncf

        return replace(plain_nncf(ref.path, calib, work), inputs=ref.inputs, outputs=ref.outputs)
    if target == "tflite":
        return _ai_edge_quantizer_defaults(source, calib, work)
    if target == "tensorrt":
        return get_backend("tensorrt").cpu_fallback(ref, calib, "int8", QuantOptions(extra=MODELOPT_DEFAULTS), work)
    raise ValueError(f"no library default for {target}")


def _ai_edge_quantizer_defaults(pt2: Artifact, calib, work: Path) -> Artifact:
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_quantizer import quantizer, recipe

    fp32 = get_backend("tflite").compile(pt2, None, work / "fp32", CompileOptions("fp32"))
    inputs = Interpreter(model_path=str(fp32.path)).get_signature_runner("serving_default").get_input_details()
    if len(inputs) != 1:
        raise ValueError("the benchmark's models have one input")
    (name, detail), = inputs.items()  # litert-torch makes int64 token ids int32
    data = [{name: next(iter(s.feed.values())).astype(detail["dtype"])} for s in calib]
    q = quantizer.Quantizer(str(fp32.path), recipe.static_wi8_ai8())
    out = work / "ai_edge_quantizer_default.tflite"
    q.quantize(q.calibrate({"serving_default": data}), enable_progress_report=False).export_model(str(out),
                                                                                                 overwrite=True)
    return replace(fp32, path=out, precision="int8")  # same signature and I/O binding as the float model
