"""Per-layer int8 error of an artifact of any ONNX-named target against the FP32 ONNX (`edgekit inspect-quant`).

Q/DQ ONNX (onnxruntime, tensorrt): edgekit.onnx.sensitivity taps both graphs in ONNX Runtime.
.tflite: against its float .tflite (given as --reference), edgekit.backends.tflite.sensitivity.
OpenVINO IR (NNCF int8): the IR runs in OpenVINO (f32 inference precision, so bf16 does not
blur the picture) with every layer output tapped; the int8 value of a tensor is the output of
the FakeQuantize that follows it, which is what its consumers compute with. OpenVINO keeps the
ONNX tensor names, so the FP32 side is the ONNX reference in ONNX Runtime.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgekit.core.artifact import Artifact
from edgekit.core.errors import InvalidInputError
from edgekit.onnx.sensitivity import (
    LayerError,
    Tap,
    float_tensors,
    layer_errors,
    reference_runner,
    score_layers,
    with_shapes,
)

SKIP_OV = {"Constant", "Parameter", "Result", "FakeQuantize", "Convert"}


def inspect_artifact(artifact: Artifact, reference: Path, data, max_samples: int = 32) -> list[LayerError]:
    if artifact.format == "onnx":
        return layer_errors(reference, artifact.path, data, max_samples)
    if artifact.format == "openvino-ir":
        return _openvino_errors(artifact, reference, data, max_samples)
    if artifact.format == "tflite":  # op names of a .tflite match its float .tflite, not the ONNX
        from edgekit.backends.tflite.sensitivity import tflite_layer_errors

        float_art = Artifact.load(reference)
        if float_art.format != "tflite" or float_art.precision != "fp32":
            raise InvalidInputError(f"an int8 .tflite is compared with its float .tflite, not {Path(reference).name}",
                                    hint="--reference MODEL.tflite from `edgekit compile MODEL.pt2 --target tflite`")
        return tflite_layer_errors(float_art, artifact, data, max_samples)
    raise InvalidInputError(
        f"inspect-quant does not read {artifact.format} artifacts",
        hint="inspect the Q/DQ ONNX (onnxruntime/tensorrt), OpenVINO IR or .tflite int8 of the same model",
    )


def _openvino_errors(artifact: Artifact, reference: Path, data, max_samples: int) -> list[LayerError]:
    import onnx

    from edgekit.backends.openvino.backend import import_openvino

    ov = import_openvino()
    core = ov.Core()
    model = core.read_model(str(artifact.path))
    ref_model = with_shapes(onnx.load(str(reference)))
    wanted = set(float_tensors(ref_model)) | {i.name for i in ref_model.graph.input}
    # Only tensors that are quantized (a FakeQuantize follows) or model outputs are tapped: tapping a
    # Convolution whose Relu -> FakeQuantize the CPU plugin fuses zeroed that FakeQuantize's output
    # (OpenVINO 2026.4), and the quantized tensors are where int8 error enters anyway.
    results = {r.input(0).get_source_output().get_node().get_friendly_name() for r in model.get_results()}
    tapped: dict[tuple[str, int], str] = {}  # (op name, output index) -> ONNX tensor name
    taps, ports, names = [], [], []
    for op in model.get_ordered_ops():
        kind = op.get_type_name()
        if kind in SKIP_OV - {"Parameter"} or not op.get_output_size():
            continue
        out = op.output(0)
        tensor = next((n for n in sorted(out.get_names()) if n in wanted), None)
        fq = [c.get_node() for c in out.get_target_inputs() if c.get_node().get_type_name() == "FakeQuantize"]
        if tensor is None or not (fq or op.get_friendly_name() in results):
            continue
        ports.append(fq[0].output(0) if fq else out)  # what the consumers compute with
        names.append(tensor)
        tapped[(op.get_friendly_name(), 0)] = tensor
        if kind == "Parameter":
            continue
        inputs = tuple(dict.fromkeys(t for i in op.inputs() for t in _tapped_above(i.get_source_output(), tapped)))
        consumers = [c.get_node() for p in ([out, *[f.output(0) for f in fq]]) for c in p.get_target_inputs()]
        group = [op.get_friendly_name(), *[c.get_friendly_name() for c in consumers
                                           if c.get_type_name() not in SKIP_OV]]
        taps.append(Tap(tensor, op.get_friendly_name(), kind, inputs, tuple(dict.fromkeys(group))))
    if not taps:
        raise InvalidInputError(f"{artifact.path.name} shares no tensor name with {Path(reference).name}",
                                hint="--reference must be the FP32 ONNX the IR was converted from")
    # a private name per tapped port: a port that already is a model output is not added twice
    keys = [f"edgekit_tap_{i}" for i in range(len(ports))]
    for port, key in zip(ports, keys):
        port.get_tensor().add_names({key})
    model.add_outputs(keys)
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    request = compiled.create_infer_request()
    by_name = {n: o for o in compiled.outputs for n in o.get_names()}
    outputs = [by_name[k] if k in by_name else by_name.get(t) for k, t in zip(keys, names)]  # an output keeps its name
    names = [n for n, o in zip(names, outputs) if o is not None]
    outputs = [o for o in outputs if o is not None]

    def run_q(feed):
        result = request.infer({k: np.asarray(v) for k, v in feed.items()})
        return {name: np.array(result[o]) for name, o in zip(names, outputs)}

    return score_layers(taps, reference_runner(ref_model, taps), run_q, data, max_samples)


def _tapped_above(port, tapped: dict, depth: int = 0) -> list[str]:
    """The nearest tapped tensors upstream of a port (through FakeQuantize and untapped ops)."""
    node = port.get_node()
    key = (node.get_friendly_name(), port.get_index())
    if key in tapped:
        return [tapped[key]]
    if depth > 50 or node.get_type_name() in ("Constant", "Parameter"):
        return []
    return [t for i in node.inputs() for t in _tapped_above(i.get_source_output(), tapped, depth + 1)]
