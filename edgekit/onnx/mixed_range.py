"""Mixed-range tensors: ops whose float inputs differ so much in range that one int8 scale erases the smaller.

A YOLO head ends in a Concat of box coordinates (0..320 px) and sigmoid scores (0..1): one int8 scale for the
Concat rounds every score to 0 or 1.26 and most detections are lost (mAP@0.5 vs FP32 0.28 on ONNX Runtime;
0.84 with that Concat in float), while cosine and SQNR barely move. A transformer's Add of attention scores
(~10) and the additive mask (0 or -3.4e38) is the same case. Such a node, and the readers of its output (its
output carries both ranges), stays in float on every target (option `mixed_range_float`, on by default).

The rule reads the max |value| of each float input over a few calibration samples:
- Concat (output = its inputs side by side, one scale for all): any two inputs differing by more than RATIO;
- Add/Sub/Where/Max/Min/Sum (output mixes the inputs): the same, unless the smaller input is a constant vector
  (a bias below the activation's step is noise int8 adds anyway, and flagging it would keep every decomposed
  Linear in float). A scalar constant counts: at the scale of the larger input the output cannot represent
  the `+ 1` of a decomposed Softplus (Log(Exp(x) + 1): onnx2tf writes it so; with that ADD in int8 the test
  detector's TFLite mAP@0.5 vs FP32 was 0.949, in float 0.987) or the `+ eps` before a LayerNorm's Sqrt;
- zero-range inputs (a constant 0, a mask that masks nothing) and non-float inputs are not compared;
- the readers of a mixed tensor stay float too, and through shape-only ops and Concat (which pass the values
  on unchanged) their readers, so the tensor never gets an int8 scale: the per-stride Concat -> Reshape ->
  Concat of strides chain of a detector head stays float as a whole.
The rule works on a target-free view of the graph (`OpView`), so the TFLite target applies it to the .tflite
with its own calibration ranges (backends/tflite/mixed_range.py).
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekit.core.errors import InvalidInputError, first_line

OPTION = "mixed_range_float"  # QuantOptions.extra / profile [runtime.options] key: true (default) or false
# int8 has 255 levels: under one scale an input 32x smaller than the largest keeps fewer than 8 of them
# (255 / 32), too few for a sigmoid score or an attention logit; a 4-16x spread (residual branches, the
# two halves of a feature-map Concat) keeps 16-64 levels and is what int8 handles everywhere else.
RATIO = 32.0
MAX_SAMPLES = 8  # ranges this far apart show on the first samples; 8 runs are a small part of a calibration
JOIN_OPS = ("Concat",)
SUM_OPS = ("Add", "Sub", "Where", "Max", "Min", "Sum")
PASS_OPS = ("Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Identity", "Concat")
MAX_DEPTH = 32  # readers followed through pass-through ops


@dataclass(frozen=True)
class OpView:
    """One op as the rule sees it, in any graph format."""

    name: str
    op: str
    kind: str  # join | sum | pass | other
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


@dataclass(frozen=True)
class MixedRange:
    node: str  # the op whose inputs differ (named as the target's exclude takes it)
    op: str
    ranges: tuple[float, ...]  # max |value| of each float input compared, in input order
    ratio: float  # largest over smallest non-zero range
    float_nodes: tuple[str, ...]  # this node and the readers of its output, kept float with it

    def to_dict(self) -> dict:
        return {"node": self.node, "op": self.op, "ranges": [_number(r) for r in self.ranges],
                "ratio": _number(self.ratio), "float_nodes": list(self.float_nodes)}


def _number(value: float):
    return round(float(value), 4) if math.isfinite(value) else "inf"


def mixed_range_enabled(extra: dict) -> bool:
    """Option `mixed_range_float` of a QuantOptions.extra: on unless false."""
    value = extra.get(OPTION, True)
    if not isinstance(value, bool):
        raise InvalidInputError(f"option {OPTION} = {value!r}: give true or false")
    return value


def pick_mixed(ops: list[OpView], ranges: dict[str, float], constants: set[str],
               ratio: float = RATIO) -> list[MixedRange]:
    """The ops whose float inputs (`ranges`: tensor -> max |value|) differ by more than `ratio`, graph order.
    `constants`: the inputs that are constant vectors (scalar constants are not in it: they count)."""
    readers: dict[str, list[OpView]] = {}
    for op in ops:
        for name in dict.fromkeys(op.inputs):
            readers.setdefault(name, []).append(op)
    found = []
    for op in ops:
        if op.kind not in ("join", "sum"):
            continue
        compared = [(i, ranges[i]) for i in op.inputs if i in ranges]
        live = [(i, r) for i, r in compared if r > 0 and not math.isnan(r)]
        if len(live) < 2:
            continue
        smallest = min(live, key=lambda x: x[1])
        spread = max(r for _, r in live) / smallest[1]
        if spread <= ratio or (op.kind == "sum" and smallest[0] in constants):
            continue
        found.append(MixedRange(op.name, op.op, tuple(r for _, r in compared), spread,
                                tuple(dict.fromkeys((op.name, *_readers_kept_float(op, readers))))))
    return found


def _readers_kept_float(op: OpView, readers: dict[str, list[OpView]]) -> list[str]:
    kept, tensors, depth = [], list(op.outputs), 0
    while tensors and depth < MAX_DEPTH:
        following = []
        for tensor in tensors:
            for reader in readers.get(tensor, []):
                if reader.name in kept:
                    continue
                kept.append(reader.name)
                if reader.kind in ("pass", "join"):
                    following += list(reader.outputs)
        tensors, depth = following, depth + 1
    return kept


def float_node_names(found: list[MixedRange]) -> list[str]:
    return list(dict.fromkeys(n for m in found for n in m.float_nodes))


def kept_float_names(provenance: dict) -> set[str]:
    """The node names an artifact keeps in float as mixed-range (its sidecar's `mixed_range_float`), plus
    the target's own op names for them (`mixed_range_ops`: OpenVINO's), for the accuracy search."""
    entries = provenance.get(OPTION)
    names = {n for m in entries for n in m.get("float_nodes", ())} if isinstance(entries, list) else set()
    return names | set(provenance.get("mixed_range_ops") or ())


# --- on an ONNX graph ------------------------------------------------------------------------------

def onnx_ops(model) -> list[OpView]:
    def kind(op_type: str) -> str:
        if op_type in JOIN_OPS:
            return "join"
        return "sum" if op_type in SUM_OPS else "pass" if op_type in PASS_OPS else "other"

    return [OpView(n.name, n.op_type, kind(n.op_type), tuple(n.input), tuple(n.output)) for n in model.graph.node]


def find_mixed_range(model_path: Path, calib, ratio: float = RATIO, max_samples: int = MAX_SAMPLES) -> list[MixedRange]:
    """The mixed-range nodes of the ONNX at `model_path`, ranges measured on the first calibration samples."""
    from edgekit.core.onnx_model import initializer_arrays, load_onnx

    model = load_onnx(model_path)
    ops = onnx_ops(model)
    wanted = {i for op in ops if op.kind in ("join", "sum") for i in op.inputs if i}
    if not wanted:
        return []
    arrays = {name: a for name, a in {**initializer_arrays(model), **_constant_outputs(model)}.items()
              if name in wanted and np.issubdtype(a.dtype, np.floating)}
    constants = {name: float(np.abs(a).max()) if a.size else 0.0 for name, a in arrays.items()}
    ranges = {**constants, **_measure(model, sorted(wanted - set(constants)), calib, max_samples)}
    return pick_mixed(ops, ranges, {name for name, a in arrays.items() if a.size > 1}, ratio)


def _constant_outputs(model) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    out = {}
    for node in model.graph.node:
        if node.op_type == "Constant":
            value = next((a.t for a in node.attribute if a.name == "value"), None)
            if value is not None:
                out[node.output[0]] = numpy_helper.to_array(value)
    return out


def _measure(model, tensors: list[str], calib, max_samples: int) -> dict[str, float]:
    """max |value| of each float tensor among `tensors` (node outputs or graph inputs) over up to
    `max_samples` samples. They are asked for untyped (ONNX Runtime infers the types), so no shape
    inference is needed; non-float ones (shape arithmetic, token ids) are dropped by their values' dtype."""
    import onnx

    from edgekit.onnx.session import ort_session

    graph_inputs = {i.name for i in model.graph.input}
    outputs = [t for t in tensors if t not in graph_inputs]
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.output[:]
    probe.graph.output.extend(onnx.helper.make_empty_tensor_value_info(t) for t in outputs)
    absmax: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="edgekit-ranges-") as tmp:
        path = Path(tmp) / "probe.onnx"
        onnx.save(probe, str(path))
        session = ort_session(path) if outputs else None
        count = 0
        for sample in calib:
            if count >= max_samples:
                break
            count += 1
            values = dict(zip(outputs, session.run(outputs, sample.feed))) if session else {}
            values.update({t: sample.feed[t] for t in tensors if t in graph_inputs and t in sample.feed})
            for name, value in values.items():
                if not np.issubdtype(np.asarray(value).dtype, np.floating):
                    continue
                m = float(np.abs(np.asarray(value, np.float64)).max()) if np.size(value) else 0.0
                absmax[name] = max(absmax.get(name, 0.0), m)
    if count == 0 and tensors:
        raise InvalidInputError("mixed-range detection needs calibration samples; the calibration data is empty")
    return absmax


# --- what a quantizer calls ----------------------------------------------------------------------

def detect_for_quantization(model_path: Path, calib, extra: dict) -> tuple[list[MixedRange], dict]:
    """(mixed-range nodes to keep in float, their provenance entry). Off by option -> none; a graph the
    detection cannot read -> none, and the provenance says why (quantization goes on without it)."""
    if not mixed_range_enabled(extra):
        return [], provenance([], "off (option mixed_range_float = false)")
    try:
        found = find_mixed_range(Path(model_path), calib)
    except KeyboardInterrupt:
        raise
    except Exception as e:
        return [], provenance([], f"failed, none kept float: {first_line(e, 200)}")
    return found, provenance(found, f"on (ratio > {RATIO:g}, {MAX_SAMPLES} samples)")


def provenance(found: list[MixedRange], status: str) -> dict:
    return {OPTION: [m.to_dict() for m in found], "mixed_range_detection": status}


def describe(entries) -> str:
    """A sidecar's `mixed_range_float` list as one line: `cat_5 (Concat, ranges 159 / 57.3 / 0.971)`."""
    if not isinstance(entries, list):
        return str(entries)
    if not entries:
        return "none"

    def ranges(e) -> str:
        return " / ".join(r if isinstance(r, str) else f"{r:.3g}" for r in e.get("ranges", ()))

    return "; ".join(f"{e.get('node')} ({e.get('op')}, ranges {ranges(e)})" for e in entries)


def announce(found: list[MixedRange], target: str) -> None:
    """One line on stderr naming what stays float; once per process (the accuracy search rebuilds often)."""
    if not found:
        return
    from edgekit.core.console import note_once

    first = found[0]
    shown = [f"{r:.3g}" if math.isfinite(r) else "inf" for r in first.ranges]
    ranges = ", ".join(shown[:-1]) + f" and {shown[-1]}"
    more = f" and {len(found) - 1} more" if len(found) > 1 else ""
    line = (f"{target}: kept {first.op} '{first.node}'{more} in float: input ranges {ranges} differ by more "
            f"than {RATIO:g}x (mixed_range_float = false turns this off)")
    note_once(line)
