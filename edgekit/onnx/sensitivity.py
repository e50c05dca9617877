"""Per-layer int8 error: the activations of a Q/DQ ONNX against the FP32 ONNX, layer by layer.

Both models run on ONNX Runtime with every intermediate float tensor added as an output. A
tensor's int8 version is what its consumers really see: the output of the DequantizeLinear that
follows it, when there is one. Errors accumulate down the graph, so layers are ranked by the SQNR
they LOSE (their worst input's SQNR minus their output's), which points at the layer that breaks,
not at everything after it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edgekit.core.errors import InvalidInputError
from edgekit.core.progress import progress_iter

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
SHAPE_OPS = ("Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Identity")
SQNR_CAP = 100.0  # dB: an exact tensor (a graph input) counts as this good
FLOAT = 1  # onnx.TensorProto.FLOAT


@dataclass(frozen=True)
class LayerError:
    name: str  # the layer's node name in the quantized model (what `exclude` resolves)
    op: str
    tensor: str  # the node output compared
    sqnr_db: float  # whole tensor
    channel_sqnr_db: float  # mean over channels
    sqnr_lost_db: float  # worst input channel SQNR minus this output's: the error this layer adds
    cosine: float
    max_abs_err: float
    float_nodes: tuple[str, ...]  # producer + consumers: excluding them all keeps this tensor in float

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class _Acc:
    signal: np.ndarray | None = None  # per channel: an outlier channel hides the others in a per-tensor SQNR
    noise: np.ndarray | None = None
    cos_sum: float = 0.0
    n: int = 0
    max_err: float = 0.0

    def add(self, ref: np.ndarray, got: np.ndarray) -> None:
        if ref.shape != got.shape:
            return
        r, g = _channels_last(ref.astype(np.float64)), _channels_last(got.astype(np.float64))
        d = r - g
        sig, noi = (r * r).sum(0), (d * d).sum(0)
        self.signal = sig if self.signal is None else self.signal + sig
        self.noise = noi if self.noise is None else self.noise + noi
        rf, gf = r.ravel(), g.ravel()
        nr, ng = np.linalg.norm(rf), np.linalg.norm(gf)
        self.cos_sum += float(rf @ gf / (nr * ng)) if nr > 0 and ng > 0 else float(nr == ng)
        self.n += 1
        self.max_err = max(self.max_err, float(np.abs(d).max()) if d.size else 0.0)

    def sqnr(self) -> float:
        return _db(float(self.signal.sum()), float(self.noise.sum())) if self.n else SQNR_CAP

    def channel_sqnr(self) -> float:
        """Mean over channels of each channel's SQNR (dB): what a typical channel keeps."""
        if not self.n:
            return SQNR_CAP
        return float(np.mean([_db(s, e) for s, e in zip(self.signal, self.noise)]))


def _db(signal: float, noise: float) -> float:
    if noise == 0:
        return SQNR_CAP
    if signal == 0:
        return -SQNR_CAP
    return float(np.clip(10 * np.log10(signal / noise), -SQNR_CAP, SQNR_CAP))


def _channels_last(a: np.ndarray) -> np.ndarray:
    """(samples, channels): NCHW/NCDHW conv maps by axis 1, sequences and features by the last axis."""
    if a.ndim <= 1:
        return a.reshape(-1, 1)
    if a.ndim >= 4:
        a = np.moveaxis(a, 1, -1)
    return a.reshape(-1, a.shape[-1])


@dataclass(frozen=True)
class Tap:
    """One layer output to compare: named by the FP32 tensor, with the FP32 tensors that feed it."""

    tensor: str
    name: str
    op: str
    inputs: tuple[str, ...]
    float_nodes: tuple[str, ...]


def layer_errors(reference: Path, quantized: Path, data, max_samples: int = 32) -> list[LayerError]:
    """Per-layer error of the Q/DQ ONNX `quantized` against the FP32 ONNX `reference`, worst first."""
    import onnx

    ref_model = with_shapes(onnx.load(str(reference)))
    q_model = onnx.load(str(quantized))
    q_nodes = [n for n in q_model.graph.node if n.op_type not in QDQ_OPS]
    if not any(n.op_type in QDQ_OPS for n in q_model.graph.node):
        raise InvalidInputError(f"{Path(quantized).name} has no QuantizeLinear/DequantizeLinear node",
                                hint="give the int8 Q/DQ ONNX made by `edgekit quantize` (onnxruntime or tensorrt)")
    dq_of = _dequantized_names(q_model)
    undq = {dq: t for t, dq in dq_of.items()}  # a DQ output stands for the float tensor it dequantizes
    produced = {o: n for n in q_nodes for o in n.output}
    readers: dict[str, list] = {}
    for n in q_nodes:
        for i in n.input:
            readers.setdefault(undq.get(i, i), []).append(n)

    def consumers(tensor: str, depth: int = 0) -> list[str]:
        """Nodes reading `tensor`, through shape-only ops: all must stay float for the tensor to stay float."""
        found = []
        for n in readers.get(tensor, []):
            found.append(n.name)
            if n.op_type in SHAPE_OPS and depth < 10:
                found += [c for o in n.output for c in consumers(o, depth + 1)]
        return found
    # compare only tensors both graphs compute, made by a real (non Q/DQ) node of the int8 graph
    compared = [t for t in float_tensors(ref_model) if t in produced]
    known = {*compared, *(i.name for i in q_model.graph.input)}

    def compared_above(tensor: str, depth: int = 0) -> list[str]:
        """The nearest compared tensors feeding `tensor`, through nodes the quantizer added (its Transposes)."""
        tensor = undq.get(tensor, tensor)
        if tensor in known:
            return [tensor]
        node = produced.get(tensor)
        if node is None or depth > 20:
            return []
        return [t for i in node.input for t in compared_above(i, depth + 1)]

    taps = [Tap(t, produced[t].name, produced[t].op_type,
                tuple(dict.fromkeys(a for i in produced[t].input for a in compared_above(i))),
                tuple(dict.fromkeys((produced[t].name, *consumers(t)))))
            for t in compared]
    if not taps:
        raise InvalidInputError(f"{Path(quantized).name} shares no tensor name with {Path(reference).name}",
                                hint="--reference must be the FP32 ONNX the int8 model was quantized from")
    # graph inputs are quantized too: their error is the first layer's starting point
    inputs = {i.name: dq_of[i.name] for i in q_model.graph.input if i.name in dq_of}
    q_names = {**{t.tensor: dq_of.get(t.tensor, t.tensor) for t in taps}, **inputs}
    q_sess = tap_session(q_model, list(q_names.values()), optimize=False)

    def run_q(feed):
        return dict(zip(q_names, q_sess.run(list(q_names.values()), feed)))

    return score_layers(taps, reference_runner(ref_model, taps), run_q, data, max_samples)


def reference_runner(ref_model, taps: list[Tap]):
    """feed -> FP32 values of the tapped tensors and of the graph inputs."""
    names = [t.tensor for t in taps]
    sess = tap_session(ref_model, names, optimize=True)

    def run(feed):
        out = dict(zip(names, sess.run(names, feed)))
        out.update({k: np.asarray(v) for k, v in feed.items()})
        return out

    return run


def score_layers(taps: list[Tap], run_ref, run_q, data, max_samples: int) -> list[LayerError]:
    """Run both sides over the data and rank the layers by the SQNR they lose."""
    accs: dict[str, _Acc] = {}
    n = min(len(data), max_samples)
    for i, sample in enumerate(progress_iter(iter(data), total=n, description="per-layer error")):
        if i >= n:
            break
        ref_out, q_out = run_ref(sample.feed), run_q(sample.feed)
        for name, got in q_out.items():
            if name in ref_out:
                accs.setdefault(name, _Acc()).add(np.asarray(ref_out[name]), np.asarray(got))
    sqnr = {t: a.channel_sqnr() for t, a in accs.items()}
    rows = []
    for tap in taps:
        acc = accs.get(tap.tensor)
        if acc is None or not acc.n:
            continue
        seen = [sqnr[i] for i in tap.inputs if i in sqnr]
        lost = (min(seen) if seen else SQNR_CAP) - sqnr[tap.tensor]
        rows.append(LayerError(tap.name, tap.op, tap.tensor, round(acc.sqnr(), 2), round(sqnr[tap.tensor], 2),
                               round(max(lost, 0.0), 2), round(acc.cos_sum / acc.n, 6), acc.max_err,
                               tap.float_nodes))
    rows.sort(key=lambda r: (-r.sqnr_lost_db, r.channel_sqnr_db))
    return rows


def with_shapes(model):
    import onnx

    try:
        return onnx.shape_inference.infer_shapes(model)
    except Exception:  # shape inference is only needed for the tensor types; run without it
        return model


def float_tensors(model) -> list[str]:
    """Float node outputs, in graph order (types from shape inference)."""
    types = {v.name: v.type.tensor_type.elem_type for v in (*model.graph.value_info, *model.graph.output)}
    return [o for n in model.graph.node for o in n.output if o and types.get(o) == FLOAT]


def _dequantized_names(model) -> dict[str, str]:
    """tensor -> output of the Q -> DQ pair applied to it."""
    q_out = {n.input[0]: n.output[0] for n in model.graph.node if n.op_type == "QuantizeLinear"}
    dq_of_q = {n.input[0]: n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    return {t: dq_of_q[q] for t, q in q_out.items() if q in dq_of_q}


def tap_session(model, outputs: list[str], optimize: bool):
    """An ORT session of `model` that also returns the given intermediate tensors."""
    import onnx
    import onnxruntime as ort

    tapped = onnx.ModelProto()
    tapped.CopyFrom(model)
    existing = {o.name for o in tapped.graph.output}
    for name in outputs:
        if name not in existing:
            tapped.graph.output.append(onnx.helper.make_tensor_value_info(name, FLOAT, None))
            existing.add(name)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    # unoptimized, the Q/DQ arithmetic runs as written (ORT's int8 kernels would hide the taps)
    so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_BASIC if optimize
                                   else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    return ort.InferenceSession(tapped.SerializeToString(), so, providers=["CPUExecutionProvider"])
