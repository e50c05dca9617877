"""Per-layer int8 error of an OpenVINO IR (NNCF int8) against its FP32 ONNX, ranked like edgekit.onnx.sensitivity.

The IR runs in OpenVINO (f32 inference precision, so bf16 does not blur the picture) with every
layer output tapped; the int8 value of a tensor is the output of the FakeQuantize that follows
it, which is what its consumers compute with. OpenVINO keeps the ONNX tensor names, so the FP32
side is the ONNX reference in ONNX Runtime. Names are OpenVINO op names, which is what the
openvino target's `--exclude` (NNCF ignored_scope) resolves.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgekit.backends.openvino.runtime import import_openvino
from edgekit.core.artifact import Artifact
from edgekit.core.errors import InvalidInputError
from edgekit.onnx.sensitivity import LayerError, Tap, float_tensors, reference_runner, score_layers, with_shapes

SKIP_OV = {"Constant", "Parameter", "Result", "FakeQuantize", "Convert"}


def ir_layer_errors(artifact: Artifact, reference: Path, data, max_samples: int) -> list[LayerError]:
    """Per-layer int8 error of an NNCF int8 IR against the FP32 ONNX it was converted from, worst first."""
    import onnx

    core = import_openvino().Core()
    model = core.read_model(str(artifact.path))
    ref_model = with_shapes(onnx.load(str(reference)))
    taps, ports, names = ir_taps(model, set(float_tensors(ref_model)) | {i.name for i in ref_model.graph.input})
    if not taps:
        raise InvalidInputError(f"{artifact.path.name} shares no tensor name with {Path(reference).name}",
                                hint="--reference must be the FP32 ONNX the IR was converted from")
    run_q = tapped_request(core, model, ports, names)
    return score_layers(taps, reference_runner(ref_model, taps), run_q, data, max_samples)


def ir_taps(model, wanted: set[str]) -> tuple[list[Tap], list, list[str]]:
    """(layers to score, the IR port that holds each tensor's int8 value, the ONNX tensor name of each port)."""
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
        inputs = tuple(dict.fromkeys(t for i in op.inputs() for t in tapped_above(i.get_source_output(), tapped)))
        consumers = [c.get_node() for p in ([out, *[f.output(0) for f in fq]]) for c in p.get_target_inputs()]
        group = [op.get_friendly_name(), *[c.get_friendly_name() for c in consumers
                                           if c.get_type_name() not in SKIP_OV]]
        taps.append(Tap(tensor, op.get_friendly_name(), kind, inputs, tuple(dict.fromkeys(group))))
    return taps, ports, names


def tapped_request(core, model, ports: list, names: list[str]):
    """feed -> {ONNX tensor name: int8 value}: the IR compiled for f32 with every tapped port an output."""
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

    return run_q


def tapped_above(port, tapped: dict, depth: int = 0) -> list[str]:
    """The nearest tapped tensors upstream of a port (through FakeQuantize and untapped ops)."""
    node = port.get_node()
    key = (node.get_friendly_name(), port.get_index())
    if key in tapped:
        return [tapped[key]]
    if depth > 50 or node.get_type_name() in ("Constant", "Parameter"):
        return []
    return [t for i in node.inputs() for t in tapped_above(i.get_source_output(), tapped, depth + 1)]
