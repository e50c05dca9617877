"""Explicit-quantization (Q/DQ) int8 ONNX placed the way TensorRT fuses it.

TensorRT 11 has no int8 builder flag and no calibrator: the precision of every layer comes
from the Q/DQ nodes in the ONNX. TensorRT runs a layer in int8 when DequantizeLinear feeds its
inputs, and fuses the following activation and the next QuantizeLinear into it, so:
- Q/DQ go on the *inputs* of Conv/ConvTranspose/Gemm/MatMul (activations and weights), never on
  their outputs;
- activations are symmetric int8 (zero point 0), weights symmetric int8 per output channel,
  kept as float initializers behind a Q->DQ pair (TensorRT folds the pair itself);
- the residual input of an Add that follows a quantized conv gets Q/DQ too, so TensorRT can fuse
  the add into that conv; the conv-side input of the Add stays float.

The placement is a pure function of the graph (`plan_placement`), tested on its own. Two
quantizers apply it: NVIDIA ModelOpt when installed (`tensorrt_modelopt`), else ONNX Runtime's
`quantize_static` with the options ModelOpt itself passes to it.
"""

from __future__ import annotations

import fnmatch
from collections import Counter
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from edgekit.core.errors import BackendError, InvalidInputError
from edgekit.onnx.control_flow import control_flow

# ops TensorRT runs in int8 when their inputs are dequantized
TRT_INT8_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
QUANTIZERS = ("auto", "modelopt", "onnxruntime")
HIGH_PRECISIONS = ("fp32", "fp16")
METHODS = ("minmax", "entropy", "percentile")
MIXED_RANGE = "inputs of mixed ranges, kept float (mixed_range_float)"


def resolved_method(method: str) -> str:
    """--method auto on the Q/DQ path: min/max (ModelOpt refuses percentile)."""
    return "minmax" if method == "auto" else method


@dataclass(frozen=True)
class QdqSettings:
    """How to place and calibrate Q/DQ; profile `[runtime.options]` may set the fields after `exclude`."""

    method: str = "minmax"
    per_channel: bool = True
    max_samples: int = 300
    exclude: tuple[str, ...] = ()
    # depthwise convs see per-tensor int8 activations channel by channel, with no mixing to average
    # the error out (MobileNet/EfficientNet lose most of their int8 accuracy there); they are
    # memory-bound, so int8 buys TensorRT little on them. Off by default, opt in here.
    quantize_depthwise: bool = False
    residual_add: bool = True
    quantizer: str = "auto"
    high_precision: str = "fp32"  # type of the layers left unquantized (fp16 needs ModelOpt)
    keep: tuple[str, ...] = ()  # node names/op types kept in float, from the profile
    smooth_quant: float | bool | None = None  # SmoothQuant alpha for LayerNorm -> MatMul (edgekit.onnx.smoothquant)
    bias_correction: bool = True  # float biases minus int8 weights' mean output shift (edgekit.onnx.bias_correction)
    mixed_range_float: bool = True  # ops whose inputs differ > 32x in range get no Q/DQ (edgekit.onnx.mixed_range)

    @classmethod
    def from_options(cls, options, extra: dict) -> "QdqSettings":
        """QuantOptions + the target options that concern quantization (others are ignored here)."""
        known = {f.name for f in fields(cls)} - {"method", "per_channel", "max_samples", "exclude"}
        values = {k: v for k, v in extra.items() if k in known}
        if isinstance(values.get("keep"), list):
            values["keep"] = tuple(values["keep"])
        settings = cls(method=resolved_method(options.method), per_channel=options.per_channel, max_samples=options.max_samples,
                       exclude=tuple(options.exclude), **values)
        settings.validate()
        return settings

    def validate(self) -> None:
        if self.method not in METHODS:
            raise InvalidInputError(f"unknown calibration method '{self.method}'", hint=f"one of {', '.join(METHODS)}")
        if self.quantizer not in QUANTIZERS:
            raise InvalidInputError(f"tensorrt option quantizer = '{self.quantizer}'", hint=f"one of {', '.join(QUANTIZERS)}")
        if self.high_precision not in HIGH_PRECISIONS:
            raise InvalidInputError(f"tensorrt option high_precision = '{self.high_precision}'",
                                    hint=f"one of {', '.join(HIGH_PRECISIONS)}")
        from edgekit.onnx.smoothquant import smooth_alpha

        smooth_alpha({"smooth_quant": self.smooth_quant})  # refuses an alpha outside (0, 1]
        for name in ("quantize_depthwise", "residual_add", "bias_correction", "mixed_range_float"):
            if not isinstance(getattr(self, name), bool):
                raise InvalidInputError(f"tensorrt option {name} must be true or false")


@dataclass(frozen=True)
class Placement:
    """Which nodes get Q/DQ on their inputs, and why the others of those op types do not."""

    quantize: tuple[str, ...]
    # (Add node, input index) whose input stays float: the conv branch TensorRT fuses the add into
    float_inputs: tuple[tuple[str, int], ...] = ()
    excluded: dict[str, str] = field(default_factory=dict)  # node name -> reason


def plan_placement(model: onnx.ModelProto, settings: QdqSettings, keep_float: frozenset[str] = frozenset()) -> Placement:
    """The TensorRT placement for a float ONNX graph (pure: reads the graph, changes nothing). `keep_float`:
    mixed-range nodes and their readers (edgekit.onnx.mixed_range), which get no Q/DQ on their inputs."""
    graph = model.graph
    initializers = {i.name: i for i in graph.initializer}
    user_excluded = match_nodes(model, settings.exclude + settings.keep)
    excluded: dict[str, str] = {n.name: MIXED_RANGE for n in graph.node
                                if n.name in keep_float and n.name not in user_excluded}
    chosen: list[str] = []
    for node in graph.node:
        if node.op_type not in TRT_INT8_OPS or node.name in keep_float:
            continue
        if node.name in user_excluded:
            excluded[node.name] = "excluded by the user"
        elif node.op_type == "Conv" and not settings.quantize_depthwise and _is_depthwise(node, initializers):
            excluded[node.name] = "depthwise conv (opt in with quantize_depthwise = true)"
        else:
            chosen.append(node.name)
    float_inputs: list[tuple[str, int]] = []
    if settings.residual_add:
        producers = {out: n for n in graph.node for out in n.output}
        quantized = set(chosen)
        for node in graph.node:
            if node.op_type != "Add" or node.name in user_excluded or node.name in keep_float or len(node.input) != 2:
                continue
            if any(i in initializers for i in node.input):
                continue  # a bias add, not a skip connection
            from_conv = [k for k, i in enumerate(node.input)
                         if i in producers and producers[i].name in quantized and producers[i].op_type == "Conv"]
            if len(from_conv) == 1:  # exactly one branch fusible into its conv; the other is the skip
                chosen.append(node.name)
                float_inputs.append((node.name, from_conv[0]))
    if not chosen:
        flow = control_flow(model)
        if flow.compute_inside:
            raise BackendError(f"tensorrt: {flow.describe()}, and its Q/DQ placement covers the main graph only",
                               hint="use --target onnxruntime or openvino, or export without data-dependent branches")
        raise InvalidInputError("nothing to quantize for TensorRT: no Conv/ConvTranspose/Gemm/MatMul left in int8",
                                hint="check --exclude; TensorRT int8 needs at least one of these ops")
    return Placement(tuple(chosen), tuple(float_inputs), excluded)


def name_unnamed_nodes(model: onnx.ModelProto) -> bool:
    """Give every node a unique name (placement and both quantizers select nodes by name)."""
    taken = {n.name for n in model.graph.node if n.name}
    changed = False
    for i, node in enumerate(model.graph.node):
        if not node.name:
            name = f"{node.op_type}_{i}"
            while name in taken:
                name += "_"
            node.name, changed = name, True
            taken.add(name)
    return changed


def match_nodes(model: onnx.ModelProto, patterns: tuple[str, ...]) -> set[str]:
    """Node names matching exact names, op types or fnmatch globs; a pattern matching nothing is an error."""
    chosen: set[str] = set()
    for pattern in patterns:
        hits = {n.name for n in model.graph.node if pattern == n.op_type or fnmatch.fnmatchcase(n.name, pattern)}
        if not hits:
            raise InvalidInputError(f"--exclude {pattern} matches no node of the model",
                                    hint="give a node name, an op type (Conv) or a glob (*/head/*)")
        chosen |= hits
    return chosen


def _is_depthwise(node: onnx.NodeProto, initializers: dict) -> bool:
    group = next((a.i for a in node.attribute if a.name == "group"), 1)
    weight = initializers.get(node.input[1]) if len(node.input) > 1 else None
    return group > 1 and weight is not None and len(weight.dims) >= 2 and weight.dims[1] == 1


# --- ONNX Runtime quantizer with the options ModelOpt passes to it ---------------------------------

def ort_extra_options(model: onnx.ModelProto, settings: QdqSettings) -> dict:
    """quantize_static extra_options that give TensorRT's placement (see the module docstring)."""
    return {
        "ActivationSymmetric": True,  # TensorRT int8 activations have zero point 0
        "WeightSymmetric": True,
        "QuantizeBias": False,  # TensorRT takes float biases
        "AddQDQPairToWeight": True,  # float weights behind Q->DQ; TensorRT folds them
        "DedicatedQDQPair": False,  # one Q/DQ per tensor, shared by its consumers
        "ForceQuantizeNoInputCheck": True,
        "QDQKeepRemovableActivations": True,  # Clip/Relu stay explicit; TensorRT fuses them
        "OpTypesToExcludeOutputQuantization": sorted({n.op_type for n in model.graph.node}),
        "QDQOpTypePerChannelSupportToAxis": {"Conv": 0, "ConvTranspose": 1, "MatMul": 1},
        "QDQDisableWeightAdjustForInt32Bias": True,  # biases stay float, nothing to adjust for
    }


def quantize_with_ort(prepared: Path, out: Path, reader, settings: QdqSettings, placement: Placement) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    model = onnx.load(str(prepared))
    by_name = {n.name: n.op_type for n in model.graph.node}
    extra = ort_extra_options(model, settings)
    if settings.method == "percentile":
        extra["CalibPercentile"] = 99.999
    try:
        quantize_static(
            str(prepared), str(out), reader, quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, per_channel=settings.per_channel,
            calibrate_method={"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                              "percentile": CalibrationMethod.Percentile}[settings.method],
            nodes_to_quantize=list(placement.quantize),
            op_types_to_quantize=sorted({by_name[n] for n in placement.quantize}),
            extra_options=extra,
        )
    except (InvalidInputError, KeyboardInterrupt):
        raise
    except Exception as e:
        raise BackendError(f"onnxruntime quantize_static failed: {str(e).strip().splitlines()[0][:400]}") from e
    quantized = onnx.load(str(out))
    drop_input_qdq(quantized, placement.float_inputs)
    onnx.save(quantized, str(out))


def drop_input_qdq(model: onnx.ModelProto, float_inputs: tuple[tuple[str, int], ...]) -> None:
    """Feed the given node inputs from the float tensor again; drop Q/DQ nodes nobody reads any more."""
    if not float_inputs:
        return
    graph = model.graph
    producers = {out: n for n in graph.node for out in n.output}
    nodes = {n.name: n for n in graph.node}
    for node_name, index in float_inputs:
        node = nodes[node_name]
        dq = producers.get(node.input[index])
        if dq is None or dq.op_type != "DequantizeLinear":
            continue
        q = producers.get(dq.input[0])
        if q is None or q.op_type != "QuantizeLinear":
            continue
        node.input[index] = q.input[0]
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    # DQ first, then the Q it read, as each becomes unused
    for op in ("DequantizeLinear", "QuantizeLinear"):
        dead = [n for n in graph.node if n.op_type == op and not (set(n.output) & used)]
        for n in dead:
            graph.node.remove(n)
        used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    for init in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(init)


# --- what a Q/DQ model contains (sidecar, tests, benchmark) -------------------------------------

@dataclass(frozen=True)
class QdqSummary:
    quantize_nodes: int
    dequantize_nodes: int
    ops_with_dq_inputs: dict[str, int]  # op type -> nodes fed by a DequantizeLinear
    quantized_nodes: tuple[str, ...]
    per_channel_weights: dict[str, int]  # weight initializer -> channel axis
    symmetric: bool  # every zero point is 0
    quantized_types: tuple[str, ...]  # int8, uint8, ...
    float_outputs: bool  # no graph output comes from a DequantizeLinear's requantized path

    def to_dict(self) -> dict:
        return {"quantize_nodes": self.quantize_nodes, "dequantize_nodes": self.dequantize_nodes,
                "ops_with_dq_inputs": self.ops_with_dq_inputs, "quantized_node_count": len(self.quantized_nodes),
                "per_channel_weights": len(self.per_channel_weights), "symmetric": self.symmetric,
                "quantized_types": list(self.quantized_types)}


def summarize_qdq(model: onnx.ModelProto) -> QdqSummary:
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    producers = {out: n for n in graph.node for out in n.output}
    q_nodes = [n for n in graph.node if n.op_type == "QuantizeLinear"]
    dq_nodes = [n for n in graph.node if n.op_type == "DequantizeLinear"]
    dq_outputs = {n.output[0] for n in dq_nodes}
    consumers = [n for n in graph.node
                 if n.op_type not in ("QuantizeLinear", "DequantizeLinear") and set(n.input) & dq_outputs]
    per_channel = {}
    zero_points, types = [], set()
    for dq in dq_nodes:
        scale = inits.get(dq.input[1])
        if scale is not None and len(scale.dims) == 1 and scale.dims[0] > 1:
            source = producers.get(dq.input[0])
            weight = source.input[0] if source is not None and source.op_type == "QuantizeLinear" else dq.input[0]
            per_channel[weight] = next((a.i for a in dq.attribute if a.name == "axis"), 1)
        if len(dq.input) > 2 and dq.input[2] in inits:
            zp = inits[dq.input[2]]
            zero_points.append(numpy_helper.to_array(zp))
            types.add(onnx.helper.tensor_dtype_to_np_dtype(zp.data_type).name)
    return QdqSummary(
        quantize_nodes=len(q_nodes), dequantize_nodes=len(dq_nodes),
        ops_with_dq_inputs=dict(sorted(Counter(n.op_type for n in consumers).items())),
        quantized_nodes=tuple(n.name for n in consumers), per_channel_weights=per_channel,
        symmetric=all(not np.any(z) for z in zero_points), quantized_types=tuple(sorted(types)),
        float_outputs=not any(o.name in dq_outputs for o in graph.output),
    )
