"""How many calibration samples ONNX Runtime may hold at once.

ORT's calibrators keep every intermediate output of every sample they were given before reducing
them to ranges or histograms: percentile calibration of a YOLOv8s at 640 px over 80 samples asked for
more than 24 GB and was killed. Fed in strides (its `CalibStridedMinMax` option), the ranges and
histograms are merged stride by stride, so memory follows the stride, not the data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

MEMORY_BUDGET = 2 << 30  # bytes of intermediate outputs held at once
MAX_STRIDE = 64


def activation_bytes(model_path: Path) -> int | None:
    """Bytes of one sample's intermediate outputs, from inferred shapes (a symbolic dim counts as 1, a
    batch of one); None when no shape is known."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    if not model.graph.value_info:
        try:
            model = onnx.shape_inference.infer_shapes(model)
        except Exception:  # a graph the checker cannot infer: calibrate in the default stride
            return None
    total, known = 0, 0
    for vi in model.graph.value_info:
        t = vi.type.tensor_type
        if not t.HasField("shape"):
            continue
        dims = [d.dim_value if d.dim_value > 0 else 1 for d in t.shape.dim]
        total += int(np.prod(dims)) * _item_bytes(onnx, t.elem_type)
        known += 1
    return total if known else None


def _item_bytes(onnx, elem_type: int) -> int:
    try:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type)).itemsize
    except (KeyError, TypeError, ValueError):  # an undefined or exotic type: count it as float32
        return 4


def calibration_stride(samples: int, per_sample: int | None, budget: int = MEMORY_BUDGET) -> int | None:
    """The largest divisor of `samples` (ORT wants equal strides) whose outputs fit the budget; None: all at once."""
    if samples <= 1:
        return None
    # ORT keeps each calibrated tensor twice over while it reduces them (the outputs and their merged lists)
    fits = MAX_STRIDE if not per_sample else max(1, min(MAX_STRIDE, budget // (2 * per_sample)))
    if fits >= samples:
        return None
    return max(d for d in range(1, fits + 1) if samples % d == 0)
