"""Calibration settings the accuracy search tries before any layer leaves int8 (Backend.calibration_variants).

Shared by the targets that quantize the ONNX graph; each target picks its own, in its own order,
with the measured reason next to each.
"""

from __future__ import annotations

from pathlib import Path

from edgekit.backends.base import QuantOptions

SMOOTH_ALPHA = 0.5  # SmoothQuant's own default; edgekit.onnx.smoothquant
ENTROPY_COST = 6  # entropy calibration / a min/max build: ~6x on EfficientNet-Lite0 (minutes on two cores)


def per_channel_variants(quant: QuantOptions) -> list[dict]:
    """Per-channel weights: every target here has them."""
    return [] if quant.per_channel else [{"per_channel": True}]


def wants_smoothing(quant: QuantOptions, reference: Path) -> bool:
    """Transformer MatMuls behind LayerNorm, not yet smoothed: outlier channels move into the weights."""
    return not quant.extra.get("smooth_quant") and has_layernorm_matmul(reference)


def range_variants(quant: QuantOptions, smooth: bool) -> list[dict]:
    """ONNX Runtime's calibration ranges other than the one used (`quant.method` resolved, not auto), the slow
    entropy last."""
    if quant.method == "percentile":
        variants: list[dict] = [{"method": "minmax"}]
    else:
        # on EfficientNet-Lite0 (ONNX Runtime, bias corrected) percentile ranges lifted confident-crop
        # agreement from 0.981 to 1.000
        variants = [{"method": "percentile"}]
        if smooth:
            variants.append({"method": "percentile", "extra": {"smooth_quant": SMOOTH_ALPHA}})
    if quant.method != "entropy":
        variants.append({"method": "entropy", "cost": ENTROPY_COST})
    return variants


def has_layernorm_matmul(path: Path) -> bool:
    from edgekit.core.onnx_model import load_onnx
    from edgekit.onnx.smoothquant import find_groups

    try:  # with external data: the dynamo exporter writes gamma/beta to `<model>.onnx.data`
        return bool(find_groups(load_onnx(path))[0])
    except Exception:  # a graph the smoothing cannot read is simply not smoothed
        return False
