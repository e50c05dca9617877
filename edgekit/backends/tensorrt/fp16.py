"""fp16 ONNX for TensorRT's strongly typed networks, keeping float32 where fp16 would overflow.

TensorRT 11 has no FP16 builder flag: an fp16 engine is built from an ONNX whose tensors are
float16. onnxconverter-common does the conversion; we decide which nodes stay float32:
- nodes reading a weight beyond what the converter keeps exact (it clamps at 1e4);
- with calibration data, nodes whose inputs or outputs reach DATA_MAX. As in ModelOpt AutoCast,
  the limit is well below fp16's 65504 because sums inside a node (a reduction, a matmul)
  overflow before its output does.
Model inputs and outputs stay float32 (casts inside), so callers feed the same arrays.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from edgekit.core.errors import BackendError, TargetUnavailableError
from edgekit.core.hostinfo import package_version
from edgekit.core.progress import progress_iter

DATA_MAX = 512.0  # ModelOpt AutoCast's default `data_max`
WEIGHT_MAX = 1e4  # onnxconverter-common clamps larger weights (its max_finite_val)


def convert_to_fp16(src: Path, dst: Path, calib=None, max_samples: int = 32) -> dict:
    """Write the fp16 model to `dst`; returns provenance (converter, nodes kept in float32 and why)."""
    try:
        from onnxconverter_common.float16 import convert_float_to_float16
    except ImportError as e:
        raise TargetUnavailableError("fp16 conversion needs onnxconverter-common",
                                     hint="pip install 'edgekit[tensorrt]'") from e
    model = onnx.load(str(src))
    keep = weight_overflow_nodes(model)
    if calib is not None:
        for name, peak in activation_overflow_nodes(model, calib, max_samples).items():
            keep.setdefault(name, f"activations reach {peak:.4g} (>= {DATA_MAX:g}) on the calibration data")
    try:
        converted = convert_float_to_float16(model, keep_io_types=True, node_block_list=sorted(keep),
                                             max_finite_val=WEIGHT_MAX)
    except Exception as e:
        raise BackendError(f"fp16 conversion failed: {str(e).strip().splitlines()[0][:400]}") from e
    onnx.save(converted, str(dst))
    return {"converter": f"onnxconverter-common {package_version('onnxconverter-common')}",
            "kept_float32": keep, "data_max": DATA_MAX if calib is not None else None,
            "io": "float32 (casts inside the model)"}


def weight_overflow_nodes(model: onnx.ModelProto) -> dict[str, str]:
    big = {}
    for init in model.graph.initializer:
        if init.data_type == onnx.TensorProto.FLOAT:
            peak = float(np.abs(numpy_helper.to_array(init)).max(initial=0.0))
            if peak > WEIGHT_MAX:
                big[init.name] = peak
    return {n.name: f"weight {i} reaches {big[i]:.4g}" for n in model.graph.node for i in n.input if i in big}


def activation_overflow_nodes(model: onnx.ModelProto, calib, max_samples: int) -> dict[str, float]:
    """Node -> largest |value| seen on its float inputs/outputs, for nodes at or above DATA_MAX."""
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    inferred = onnx.shape_inference.infer_shapes(probe)
    float_tensors = {vi.name for vi in inferred.graph.value_info if vi.type.tensor_type.elem_type == onnx.TensorProto.FLOAT}
    outputs = {o.name for o in probe.graph.output}
    for name in sorted(float_tensors - outputs):
        probe.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every tensor observable
    so.log_severity_level = 3
    session = ort.InferenceSession(probe.SerializeToString(), so, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    peaks: dict[str, float] = {}
    total = min(len(calib), max_samples)
    for count, sample in enumerate(progress_iter(iter(calib), total=total, description="fp16 range check")):
        if count >= total:
            break
        values = dict(zip(names, session.run(names, sample.feed)))
        values.update(sample.feed)
        for name, value in values.items():
            if np.issubdtype(np.asarray(value).dtype, np.floating) and np.size(value):
                peaks[name] = max(peaks.get(name, 0.0), float(np.abs(value).max()))
    found = {}
    for node in model.graph.node:
        peak = max((peaks.get(t, 0.0) for t in [*node.input, *node.output]), default=0.0)
        if peak >= DATA_MAX:
            found[node.name] = peak
    return found
