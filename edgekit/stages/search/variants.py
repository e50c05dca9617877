"""The calibration settings the accuracy search tries before any layer leaves int8, per target.

Measured reasons for each are next to it; edgekit.stages.search.search runs them in order within its time bound.
"""

from __future__ import annotations

from pathlib import Path

from edgekit.backends.base import QuantOptions

SMOOTH_ALPHA = 0.5  # SmoothQuant's own default; edgekit.onnx.smoothquant
OPENVINO_ATTENTION = "ScaledDotProductAttention"  # the op type OpenVINO fuses attention into
ENTROPY_COST = 6  # entropy calibration / a min/max build: ~6x on EfficientNet-Lite0 (minutes on two cores)
ONNX_NAMED_TARGETS = ("onnxruntime", "tensorrt", "openvino")  # --exclude takes ONNX node names


def calibration_variants(target: str, quant: QuantOptions, reference: Path) -> list[dict]:
    """Calibration settings to try before any layer leaves int8, most promising first. Each is a change
    of QuantOptions (`extra` merged): only changes towards accuracy that the target allows."""
    extra = quant.extra
    variants: list[dict] = []
    if not quant.per_channel:  # per-channel weights: every target here has them
        variants.append({"per_channel": True})
    if target in ("onnxruntime", "tflite") and extra.get("bias_correction") is False:
        variants.append({"extra": {"bias_correction": True}})
    if target == "openvino" and extra.get("fast_bias_correction"):  # NNCF's full bias correction
        variants.append({"extra": {"fast_bias_correction": False}})
    smooth = (target in ONNX_NAMED_TARGETS and not extra.get("smooth_quant") and _has_layernorm_matmul(reference))
    if smooth:  # transformer MatMuls behind LayerNorm: outlier channels move into the weights
        variants.append({"extra": {"smooth_quant": SMOOTH_ALPHA}})
    if smooth and target == "openvino":
        # OpenVINO fuses attention into one op whose int8 inputs lose most of the rest: on the benchmark
        # transformer, smoothing alone left cosine at 0.908; with attention in float it reached 0.999
        variants.append({"exclude": (OPENVINO_ATTENTION,), "extra": {"smooth_quant": SMOOTH_ALPHA}})
    if target in ("onnxruntime", "tensorrt") and quant.method != "percentile":
        # on EfficientNet-Lite0 (ONNX Runtime, bias corrected) percentile ranges lifted confident-crop
        # agreement from 0.981 to 1.000
        variants.append({"method": "percentile"})
        if smooth:
            variants.append({"method": "percentile", "extra": {"smooth_quant": SMOOTH_ALPHA}})
    if target in ("onnxruntime", "tensorrt") and quant.method != "entropy":
        variants.append({"method": "entropy", "_cost": ENTROPY_COST})
    if target == "openvino" and extra.get("activation_ranges", "minmax") == "minmax":
        variants.append({"extra": {"activation_ranges": "histogram"}})  # NNCF's counterpart of percentile
    if target == "openvino" and extra.get("preset") != "mixed":  # asymmetric activations
        variants.append({"extra": {"preset": "mixed"}})
    return variants


def _has_layernorm_matmul(path: Path) -> bool:
    from edgekit.core.onnx_model import load_onnx
    from edgekit.onnx.smoothquant import find_groups

    try:
        return bool(find_groups(load_onnx(path, load_external_data=False))[0])
    except Exception:  # a graph the smoothing cannot read is simply not smoothed
        return False
