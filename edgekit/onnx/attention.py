"""Transformer graphs in int8: which ONNX ops a Q/DQ quantizer should leave in float, and why.

A graph is a transformer here when LayerNorm feeds MatMul weights (edgekit.onnx.layernorm.find_groups, the
same test SmoothQuant uses) and it has a Softmax (attention). For such a graph the Q/DQ rules are:

- only the linear ops are quantized (MatMul, Gemm, Conv), as ONNX Runtime's dynamic quantization of
  transformers does (MatMulInteger): everything between them stays float. Measured on all-MiniLM-L6-v2 (ONNX Runtime,
  TorchScript export, uint8 activations + reduce_range on an AVX2 CPU, 64 sentences), embedding cosine / nearest-
  neighbour agreement against FP32: every op type quantized (ONNX Runtime's default) 0.527 / 0.19; MatMul and
  Gemm only 0.952 / 0.69. The decomposed LayerNorm (a variance of ~1e-4 on a uint8 grid, then divided by),
  GELU's Erf/Mul, the Softmax (its input carries the -3.4e38 additive mask: a scale of inf) and the embedding
  Gathers each lose accuracy in int8 and take a small share of the time;
- the outputs of those linear ops stay float (`OpTypesToExcludeOutputQuantization`): their readers are float
  (bias and residual Add, LayerNorm, GELU), so an output Q/DQ only rounds the residual stream, whose few
  outlier dims (~10-100x the rest after BERT's FFN) set one per-tensor scale for all: 0.952 -> 0.991 / 0.88,
  at the same latency (ONNX Runtime still runs the int8 MatMul kernels, with a float output);
- SmoothQuant (alpha 0.5) on the LayerNorm -> MatMul groups unless the option says otherwise: 0.991 -> 0.995
  (0.990 -> 0.995 on the dynamo export); OpenVINO takes it too, instead of NNCF's own (alpha 0.95): 0.9972 ->
  0.9984 / 0.89 -> 0.95 on a VNNI/AMX CPU (edgekit.backends.openvino.backend.with_transformer_defaults);
- the MLP down-projections (`down_projections`: no LayerNorm precedes them, so SmoothQuant cannot reach them)
  can get their few outlier input channels split off into float (edgekit.onnx.outliers, option
  `split_outliers`): 0.995 -> 0.998 / 0.94-0.97. On ONNX Runtime that cost the speedup (int8 / FP32 time 0.77
  -> 0.93-1.0: the attention output projections no longer fused into QGemm), so there the down-projections stay
  wholly in float instead (option `float_down_projections`, default true): 0.9956 / 0.891 -> 0.9990 / 0.984
  (TorchScript export) and 0.969 (dynamo), int8 / FP32 time 0.64 -> 0.8. OpenVINO splits by default, and keeps
  them wholly in float too where the overflow fix is on (edgekit.backends.openvino.backend.saturating_cpu_downs).

Option `transformer_rules` of QuantOptions.extra (profile [runtime.options]): true = apply whenever the graph
is a transformer (the default), false = quantize as for any other graph.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import onnx

from edgekit.core.errors import InvalidInputError, first_line

OPTION = "transformer_rules"
LINEAR_OPS = ("MatMul", "Gemm", "Conv", "ConvTranspose")  # quantized; every other op type stays float
FLOAT_OUTPUT_OPS = ("MatMul", "Gemm")  # int8 kernels with a float output: no Q/DQ on what they write
ATTENTION_OPS = ("Softmax",)
SMOOTH_OPTION, SMOOTH_ALPHA = "smooth_quant", 0.5  # edgekit.onnx.smoothquant's option and default alpha
FLOAT_DOWN_OPTION = "float_down_projections"  # QuantOptions.extra: the MLP down-projections wholly in float
ACTIVATIONS = ("Erf", "Tanh", "Gelu", "FastGelu", "BiasGelu", "Relu", "Sigmoid", "HardSigmoid", "Elu")
ELEMENTWISE = ("Mul", "Add", "Div", "Sub", "Pow")  # of a decomposed GELU: x * 0.5 * (1 + erf(x / sqrt 2))
SHAPE_OPS = ("Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Identity")
ACTIVATION_DEPTH = 4  # producers searched back from a MatMul input to the activation (Mul, Mul, Add, Erf)


@dataclass(frozen=True)
class TransformerRules:
    """What a Q/DQ quantizer does differently on one graph; `applies` False = nothing."""

    applies: bool
    status: str  # for the provenance: why (not) applied
    layernorm_groups: int = 0
    attention_ops: int = 0
    down_projections: tuple[str, ...] = ()  # MLP MatMuls after the activation (down_projections): the
    # accuracy search's float candidates

    @property
    def op_types(self) -> list[str] | None:
        """ONNX Runtime's `op_types_to_quantize` (None = its default, every op type it can quantize)."""
        return list(LINEAR_OPS) if self.applies else None

    def ort_extra_options(self) -> dict:
        return {"OpTypesToExcludeOutputQuantization": list(FLOAT_OUTPUT_OPS)} if self.applies else {}

    def smooths(self, extra: dict) -> bool:
        """Whether these rules turn SmoothQuant on for options `extra` (the user did not set it)."""
        return self.applies and extra.get(SMOOTH_OPTION) is None

    def quant_extra(self, extra: dict) -> dict:
        """QuantOptions.extra with the transformer's SmoothQuant default (the user's `smooth_quant` wins)."""
        if not self.smooths(extra):
            return dict(extra)
        return {**extra, SMOOTH_OPTION: SMOOTH_ALPHA}

    def split_outliers(self, src: Path, work: Path, calib, options, default: bool = True) -> tuple[Path, dict]:
        """`src` with the down-projections' outlier input channels in float (edgekit.onnx.outliers) when option
        `split_outliers` of `options` (a QuantOptions) says so, else `default` (off on ONNX Runtime: it cost the
        speedup there, see above); (path, provenance entry)."""
        extra, max_samples = options.extra, options.max_samples
        from edgekit.onnx.outliers import OPTION as SPLIT
        from edgekit.onnx.outliers import split_for_quantization

        value = extra.get(SPLIT, default)
        if not isinstance(value, bool):
            raise InvalidInputError(f"option {SPLIT} = {value!r}: give true or false")
        nodes = self.down_projections if self.applies else ()
        return split_for_quantization(src, work, calib, nodes, max_samples, enabled=value)

    def float_down_projections(self, extra: dict, default: bool) -> tuple[str, ...]:
        """The down-projections to keep wholly in float when option `float_down_projections` says so (else
        `default`; on ONNX Runtime true: the neighbour goal of an encoder is met only so), and the outlier split
        does not already treat them."""
        value = extra.get(FLOAT_DOWN_OPTION, default)
        if not isinstance(value, bool):
            raise InvalidInputError(f"option {FLOAT_DOWN_OPTION} = {value!r}: give true or false")
        from edgekit.onnx.outliers import OPTION as SPLIT

        if not (self.applies and value) or extra.get(SPLIT) is True:
            return ()
        return self.down_projections

    def summary(self) -> dict:
        """The provenance entry of a target that takes only the outlier split and SmoothQuant from these rules."""
        entry = {"applied": self.applies, "status": self.status}
        if self.applies:
            entry.update(layernorm_groups=self.layernorm_groups, attention_ops=self.attention_ops)
        return {OPTION: entry}

    def to_provenance(self) -> dict:
        """The provenance entry of a Q/DQ quantizer that applies them all (ONNX Runtime)."""
        entry = self.summary()[OPTION]
        if self.applies:
            entry.update(quantized_op_types=list(LINEAR_OPS), float_outputs=list(FLOAT_OUTPUT_OPS),
                         default_smooth_quant=SMOOTH_ALPHA)
        return {OPTION: entry}


def down_projections(model: onnx.ModelProto) -> list[str]:
    """Names of the MLP down-projections: MatMul/Gemm with a constant weight whose input comes from an activation
    function (GELU as Erf/Tanh and Muls or fused, ReLU, Sigmoid), through shape-only ops. No LayerNorm precedes
    them, so SmoothQuant cannot even out their input, whose few outlier channels (~35x the median on
    all-MiniLM-L6-v2) set its per-tensor int8 scale: in float they lift that encoder from cosine 0.9948 to 0.9985
    and neighbour agreement from 0.89 to 0.97, for about a third of the int8 MatMul time."""
    g = model.graph
    constants = {i.name for i in g.initializer} | {o for n in g.node if n.op_type == "Constant" for o in n.output}
    producers = {o: n for n in g.node for o in n.output}

    def activated(tensor: str, depth: int) -> bool:
        node = producers.get(tensor)
        if node is None or depth > ACTIVATION_DEPTH:
            return False
        if node.op_type in ACTIVATIONS:
            return True
        if node.op_type not in ELEMENTWISE + SHAPE_OPS:
            return False
        return any(activated(i, depth + 1) for i in node.input if i and i not in constants)

    return [n.name for n in g.node if n.op_type in ("MatMul", "Gemm") and len(n.input) > 1
            and n.input[1] in constants and activated(n.input[0], 0)]


def rules_enabled(extra: dict) -> bool:
    value = extra.get(OPTION, True)
    if not isinstance(value, bool):
        raise InvalidInputError(f"option {OPTION} = {value!r}: give true or false")
    return value


def transformer_parts(model: onnx.ModelProto) -> tuple[int, int]:
    """(LayerNorm -> MatMul groups, attention ops) of the graph."""
    from edgekit.onnx.layernorm import find_groups

    groups, _ = find_groups(model)
    return len(groups), sum(1 for n in model.graph.node if n.op_type in ATTENTION_OPS)


def is_transformer(model: onnx.ModelProto) -> bool:
    groups, attention = transformer_parts(model)
    return bool(groups and attention)


def transformer_rules(model_path: Path, extra: dict) -> TransformerRules:
    """The rules for the FP32 ONNX at `model_path` (read with its external data, for gamma/beta)."""
    if not rules_enabled(extra):
        return TransformerRules(False, f"off (option {OPTION} = false)")
    from edgekit.core.onnx_model import load_onnx

    try:
        model = load_onnx(Path(model_path))
        groups, attention = transformer_parts(model)
    except KeyboardInterrupt:
        raise
    except Exception as e:  # a graph the matcher cannot read is quantized as any other
        return TransformerRules(False, f"not checked: {first_line(e, 200)}")
    if not (groups and attention):
        return TransformerRules(False, "not a transformer (no LayerNorm -> MatMul with attention)",
                                groups, attention)
    return TransformerRules(True, "on (LayerNorm -> MatMul groups and attention)", groups, attention,
                            tuple(down_projections(model)))
