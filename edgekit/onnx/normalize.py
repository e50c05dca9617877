"""One checked ONNX for every target: opsets below 13 upgraded, dynamic axes fixed at the data's shape,
the result simplified with onnxslim at that shape and compared with the original on a real sample.

Why each step:
- opset 13 gave DequantizeLinear its `axis`: ONNX Runtime's per-channel int8 of an opset-12 model writes
  an attribute the opset does not have and the file does not load.
- a detector exported with dynamic height/width keeps its anchor grid as Shape/Range/Gather arithmetic;
  at a fixed size onnxslim folds it to constants, which onnx2tf, OpenVINO's reshape and the quantizers
  read without guessing shapes.
A model that needs none of this is used as it is (same file, same node names for `--exclude`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from edgekit.core.atomic import atomic_path
from edgekit.core.errors import BackendError, InvalidInputError, first_line
from edgekit.core.onnx_model import load_onnx
from edgekit.core.tensors import TensorSpec

MIN_OPSET = 13
KNOWN_DOMAINS = ("", "ai.onnx", "ai.onnx.ml", "com.microsoft")  # ONNX, ONNX-ML, ONNX Runtime's fused ops
CHECK_RTOL = 1e-3  # relative to the output's range: float reassociation after folding, not a real change


@dataclass
class Normalization:
    path: Path  # the model every target starts from (the original when nothing changed)
    changes: dict = field(default_factory=dict)  # "opset": [from, to], "fixed_shapes", "simplified", "check"

    @property
    def changed(self) -> bool:
        return bool(self.changes)


def normalize_onnx(src: Path, out_dir: Path, specs: list[TensorSpec], feed: dict[str, np.ndarray] | None) -> Normalization:
    """`specs`: the model inputs as the command resolved them (--input overrides included); `feed`: one
    real sample, whose shapes fix the dynamic axes other than each input's batch axis."""
    src = Path(src)
    model = load_onnx(src)
    check_graph(model, src)
    changes: dict = {}
    opset = default_opset(model)
    if opset < MIN_OPSET:
        model = upgraded(model, src, opset)
        changes["opset"] = [opset, MIN_OPSET]
    fixed = fix_dynamic_axes(model, specs, feed)
    if fixed:
        changes["fixed_shapes"] = fixed
    if not changes:
        return Normalization(src)
    candidates = [slimmed(model), model] if fixed else [model]
    out = Path(out_dir) / "normalized" / src.name  # same stem: the targets' files keep the model's name
    for candidate in candidates:
        if candidate is None:
            continue
        save_model(candidate, out)
        error = None if feed is None else output_error(src, out, feed)
        if error is None or error <= CHECK_RTOL:
            if candidate is not model:
                changes["simplified"] = "onnxslim"
            if error is not None:
                changes["check"] = {"max_rel_err": float(error)}
            elif feed is not None:
                changes["check"] = {"skipped": "the original does not run on the sample in ONNX Runtime"}
            return Normalization(out, changes)
    out.unlink(missing_ok=True)
    raise BackendError(f"{src.name}: the normalised model's outputs differ from the original's "
                       f"(max relative error {error:.3g})", hint="give the model's real input shapes with --input")


def check_graph(model: onnx.ModelProto, src: Path) -> None:
    """What would otherwise fail minutes later, inside a calibration: an invalid graph, an opset newer
    than the installed onnx knows, an op of a domain no target here implements."""
    newest = onnx.defs.onnx_opset_version()
    if default_opset(model) > newest:
        raise InvalidInputError(f"{src.name} uses opset {default_opset(model)}; the installed onnx knows up to {newest}",
                                hint="re-export at a lower opset, or upgrade onnx")
    for node in model.graph.node:
        if node.domain not in KNOWN_DOMAINS:
            raise InvalidInputError(f"{src.name}: node '{node.name or node.output[0]}' is op {node.op_type} of domain "
                                    f"'{node.domain}', which no target here implements",
                                    hint="replace the custom op in the export, or register it with the runtime")
    try:
        if model.ByteSize() < 1_800_000_000:  # larger models are checked by their loaders
            onnx.checker.check_model(model)
    except onnx.checker.ValidationError as e:
        raise InvalidInputError(f"{src.name} is not a valid ONNX graph: {first_line(e, 200)}") from e


def default_opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), MIN_OPSET)


def upgraded(model: onnx.ModelProto, src: Path, opset: int) -> onnx.ModelProto:
    from onnx import version_converter

    try:
        up = version_converter.convert_version(model, MIN_OPSET)
        onnx.checker.check_model(up)
    except Exception as e:
        raise InvalidInputError(f"{src.name} is at opset {opset} and the ONNX version converter could not "
                                f"take it to {MIN_OPSET}: {first_line(e, 200)}",
                                hint="re-export the model at opset 13 or newer") from e
    return up


def fix_dynamic_axes(model: onnx.ModelProto, specs: list[TensorSpec], feed: dict | None) -> dict[str, list]:
    """Set each graph input's dynamic axes, except its batch axis, from the given spec or the sample."""
    by_name = {s.name: s for s in specs}
    fixed = {}
    for vi in model.graph.input:
        spec = by_name.get(vi.name)
        dims = vi.type.tensor_type.shape.dim
        if spec is None or not dims:
            continue
        sample = None if feed is None or vi.name not in feed else np.shape(feed[vi.name])
        changed = False
        for axis, dim in enumerate(dims):
            if dim.HasField("dim_value") and dim.dim_value > 0 or axis == spec.batch_axis:
                continue
            size = spec.shape[axis] if axis < len(spec.shape) else None
            if size is None and sample is not None and axis < len(sample):
                size = int(sample[axis])
            if size:
                dim.Clear()
                dim.dim_value = size
                changed = True
        if changed:
            fixed[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    return fixed


def slimmed(model: onnx.ModelProto) -> onnx.ModelProto | None:
    """onnxslim at the fixed shape (constant folding, dead code); None when it fails: the unslimmed
    model is used then, as the simplification is an optimisation."""
    try:
        import onnxslim

        return onnxslim.slim(model)
    except Exception:
        return None


def save_model(model: onnx.ModelProto, out: Path) -> None:
    big = model.ByteSize() > 1_800_000_000  # protobuf's 2 GB limit: weights beside the model
    with atomic_path(out) as tmp:
        if big:
            onnx.save(model, str(tmp), save_as_external_data=True, location=f"{out.name}.data")
        else:
            onnx.save(model, str(tmp))


def output_error(original: Path, normalized: Path, feed: dict) -> float | None:
    """Max over outputs of max |a - b| / (range of a): how far the normalised model is from the original;
    None when the original does not run on the sample in ONNX Runtime."""
    from edgekit.onnx.session import ort_session

    try:
        a = ort_session(original).run(None, feed)
    except Exception:  # the model itself does not run on this sample: each target reports that in its terms
        return None
    try:
        b = ort_session(normalized).run(None, feed)
    except Exception:  # the original runs, this one does not: not an equal model
        return float("inf")
    worst = 0.0
    for x, y in zip(a, b):
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        if x.shape != y.shape:
            return float("inf")
        if x.size:
            scale = max(float(np.ptp(x)), float(np.abs(x).max()), 1e-12)
            worst = max(worst, float(np.abs(x - y).max()) / scale)
    return worst
