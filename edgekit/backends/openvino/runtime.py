"""The OpenVINO runtime calls both the backend and its NNCF quantizer use: import, convert/read, reshape, save IR."""

from __future__ import annotations

import re
from pathlib import Path

from edgekit.backends.openvino.graph import NodeIndex, conversion_error, summary
from edgekit.core.artifact import Artifact
from edgekit.core.atomic import atomic_dir, write_json
from edgekit.core.errors import BackendError, InvalidInputError, TargetUnavailableError
from edgekit.core.hostinfo import package_version
from edgekit.core.progress import status
from edgekit.core.tensors import TensorSpec

INSTALL_HINT = "pip install 'edgekit[openvino]'"
PHYSICAL_DEVICES = ("CPU", "GPU", "NPU")
VIRTUAL_DEVICES = ("AUTO", "HETERO", "MULTI", "BATCH")  # these name other devices after a ':'
OV_DTYPES = {"f32": "float32", "f16": "float16", "i64": "int64", "i32": "int32", "i8": "int8", "u8": "uint8",
             "boolean": "bool"}


def import_openvino():
    """The `openvino` module, with its usage telemetry declined for this process.

    OpenVINO's model converter and NNCF send usage events to Google Analytics unless the user opted out
    in ~/intel; edgekit never reaches the network at run time, so it declines without touching that file.
    """
    try:
        import openvino as ov
    except ImportError as e:
        raise TargetUnavailableError("openvino is not installed", hint=INSTALL_HINT) from e
    _decline_telemetry()
    return ov


def _decline_telemetry() -> None:
    try:
        from openvino_telemetry.utils.opt_in_checker import ConsentCheckResult, OptInChecker
    except ImportError:  # no telemetry package: nothing is sent
        return
    OptInChecker.check = lambda self, *args, **kwargs: ConsentCheckResult.DECLINED


def ov_version() -> str:
    return package_version("openvino") or import_openvino().__version__


def ir_stem(path: Path) -> str:
    """`reference.onnx` -> `reference`; `model.int8.onnx` -> `model` (the IR gets its own precision suffix)."""
    return re.sub(r"\.(int8|fp16)$", "", path.stem)


def load_model(source: Artifact):
    """The source as an ov.Model (ONNX through ov.convert_model, or an IR), with its node index."""
    ov = import_openvino()
    if source.format not in ("onnx", "openvino-ir"):
        raise InvalidInputError(f"OpenVINO converts ONNX models or reads IR, got {source.format}: {source.path}")
    if source.format == "openvino-ir":
        try:
            model = ov.Core().read_model(str(source.path))
        except Exception as e:
            raise InvalidInputError(f"{source.path} is not a readable OpenVINO IR: {summary(e)}",
                                    hint="the .xml needs its .bin beside it") from e
        return model, NodeIndex(model)
    index = NodeIndex.from_onnx(source.path)
    with status(f"converting {source.path.name} to OpenVINO"):
        try:
            model = ov.convert_model(str(source.path))
        except Exception as e:
            raise conversion_error(e, index, source.path.name) from e
    model = without_dead_consumers(model)
    index.add_ov_model(model)
    return model, index


def dead_consumers(model) -> list[str]:
    """Nodes that consume a live output but reach no model output: the ONNX frontend leaves some behind (silero-vad's
    unused LSTM-state Squeezes); saving the IR drops them, but NNCF builds its graph from get_ops() and fails on them
    ("Could not find a node ... in NNCFGraph")."""
    live = {op.get_friendly_name() for op in model.get_ops()}
    return sorted({inp.get_node().get_friendly_name() for op in model.get_ops() for out in op.outputs()
                   for inp in out.get_target_inputs() if inp.get_node().get_friendly_name() not in live})


def without_dead_consumers(model):
    """The model as saving and reading its IR leaves it: dead nodes gone (a round trip through a temp folder)."""
    if not dead_consumers(model):
        return model
    import tempfile

    ov = import_openvino()
    with tempfile.TemporaryDirectory(prefix="edgekit-ov-clean-") as tmp:
        path = Path(tmp) / "model.xml"
        ov.save_model(model, str(path), compress_to_fp16=False)
        return ov.Core().read_model(str(path))  # read_model copies the weights into memory: the folder may go


def reshape_inputs(model, specs, index: NodeIndex | None = None) -> dict[str, str]:
    """Give inputs the shapes the user asked for (`--input name:1x3x224x224`); returns what changed."""
    ov = import_openvino()
    if not specs:
        return {}
    current = {s.name: s for s in io_specs(model.inputs)}
    unknown = [s.name for s in specs if s.name not in current]
    if unknown:
        raise InvalidInputError(f"--input names '{unknown[0]}', which the model does not have",
                                hint="model inputs: " + ", ".join(current))
    changed = {s.name: s.display_shape() for s in specs if s.shape != current[s.name].shape}
    if not changed:
        return {}
    shapes = {s.name: ov.PartialShape([-1 if d is None else d for d in s.shape]) for s in specs if s.name in changed}
    try:
        model.reshape(shapes)
    except Exception as e:
        node = index.find_in(str(e)) if index else None
        where = f" at {node}" if node else ""
        raise InvalidInputError(
            f"cannot give the model input shape {', '.join(f'{k}:{v}' for k, v in changed.items())}{where}: "
            f"{summary(e)}",
            hint="the model's inputs: " + ", ".join(f"{s.name}:{s.display_shape()}" for s in current.values()),
        ) from e
    return changed


def io_specs(ports, preferred: list[str] | None = None) -> list[TensorSpec]:
    return [TensorSpec(port_name(p, preferred), _dims(p), OV_DTYPES.get(p.get_element_type().get_type_name(), "float32"))
            for p in ports]


def port_name(port, preferred: list[str] | None = None) -> str:
    """The tensor name of a port; the ONNX name when OpenVINO gave the port several."""
    names = port.get_names()
    for name in preferred or ():
        if name in names:
            return name
    return port.get_any_name()


def _dims(port) -> tuple[int | None, ...]:
    shape = port.get_partial_shape()
    if shape.rank.is_dynamic:
        return ()
    return tuple(d.get_length() if d.is_static else None for d in shape)


def _layout(spec: TensorSpec) -> str | None:
    # ONNX convolutions take NCHW; other ranks carry no convention worth guessing
    return {4: "NCHW", 2: "NC"}.get(len(spec.shape))


def save_ir(model, out: Path, precision: str, provenance: dict, preferred_outputs: list[str]) -> Artifact:
    """Write .xml, .bin and the sidecar together: all three appear, or none (atomic_dir)."""
    ov = import_openvino()
    inputs = io_specs(model.inputs)
    outputs = io_specs(model.outputs, preferred_outputs)
    art = Artifact(
        path=out, format="openvino-ir", precision=precision, target="openvino",
        inputs=inputs, outputs=[o.name for o in outputs],
        provenance={
            **provenance, "openvino_version": ov_version(),
            "input_shapes": {s.name: s.display_shape() for s in inputs},
            "output_shapes": {s.name: s.display_shape() for s in outputs},
            "layout": {s.name: _layout(s) for s in inputs},
        },
    )
    with atomic_dir(out.parent) as tmp, status(f"writing {out.name}"):
        try:
            ov.save_model(model, str(tmp / out.name), compress_to_fp16=precision == "fp16")
        except Exception as e:
            raise BackendError(f"OpenVINO could not save {out.name}: {summary(e)}") from e
        write_json(tmp / art.sidecar_path.name, art.to_dict())
    return art
