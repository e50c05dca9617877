"""Reading ONNX files: load with clear errors, describe I/O, count parameters and MACs."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from edgekit.core.errors import InvalidInputError
from edgekit.core.tensors import TensorSpec

ONNX_DTYPES = {
    onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.FLOAT16: "float16",
    onnx.TensorProto.INT64: "int64", onnx.TensorProto.INT32: "int32",
    onnx.TensorProto.INT8: "int8", onnx.TensorProto.UINT8: "uint8", onnx.TensorProto.BOOL: "bool",
}
QUANT_OPS = {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "MatMulInteger", "ConvInteger"}


@dataclass(frozen=True)
class OnnxInfo:
    inputs: list[TensorSpec]
    outputs: list[str]
    precision: str
    params: int
    macs: int


def load_onnx(path: str | Path, load_external_data: bool = True) -> onnx.ModelProto:
    path = Path(path)
    if not path.exists():
        raise InvalidInputError(f"model file not found: {path}")
    try:
        return onnx.load(str(path), load_external_data=load_external_data)
    except Exception as e:  # protobuf raises several types for truncated/corrupt files
        raise InvalidInputError(
            f"{path} is not a readable ONNX model ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'parse error'})",
            hint="the file is corrupt or truncated, or not an ONNX model",
        ) from e


def external_data_files(path: str | Path) -> list[Path]:
    """The files beside an ONNX model that hold its weights (the dynamo exporter's `model.onnx.data`).

    Parsed once per file version: an artifact's size and hash ask for its files again and again."""
    path = Path(path)
    stat = path.stat() if path.exists() else None
    names = _external_names(str(path.resolve()), stat and (stat.st_mtime_ns, stat.st_size))
    return [path.parent / name for name in names]


@functools.lru_cache(maxsize=64)
def _external_names(path: str, version) -> tuple[str, ...]:
    model = load_onnx(path, load_external_data=False)
    return tuple(sorted({entry.value for init in model.graph.initializer if init.data_location == onnx.TensorProto.EXTERNAL
                         for entry in init.external_data if entry.key == "location"}))


def graph_inputs(model: onnx.ModelProto) -> list[TensorSpec]:
    initializers = {i.name for i in model.graph.initializer}
    specs = []
    for vi in model.graph.input:
        if vi.name in initializers:
            continue
        tt = vi.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in tt.shape.dim)
        specs.append(TensorSpec(vi.name, dims, ONNX_DTYPES.get(tt.elem_type, "float32")))
    return specs


def describe_onnx(path: str | Path) -> OnnxInfo:
    model = load_onnx(path)
    return describe_model(model)


def describe_model(model: onnx.ModelProto) -> OnnxInfo:
    ops = {n.op_type for n in model.graph.node}
    precision = "int8" if ops & QUANT_OPS else "fp32"
    if precision == "fp32" and any(i.data_type == onnx.TensorProto.FLOAT16 for i in model.graph.initializer):
        precision = "fp16"
    params = sum(int(np.prod(i.dims)) for i in model.graph.initializer)
    return OnnxInfo(graph_inputs(model), [o.name for o in model.graph.output], precision, params, count_macs(model))


def count_macs(model: onnx.ModelProto, batch: int = 1) -> int:
    """Multiply-accumulates of Conv/Gemm/MatMul at batch 1 (the usual headline figure)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(_with_batch(model, batch))
    except Exception:
        return 0
    shapes = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.output) + list(inferred.graph.input):
        dims = [d.dim_value if d.HasField("dim_value") else 0 for d in vi.type.tensor_type.shape.dim]
        shapes[vi.name] = dims
    for init in inferred.graph.initializer:
        shapes[init.name] = list(init.dims)
    macs = 0
    for node in inferred.graph.node:
        out = shapes.get(node.output[0]) if node.output else None
        if not out or 0 in out:
            continue
        if node.op_type in ("Conv", "ConvTranspose"):
            w = shapes.get(node.input[1])
            if w:  # out elements x (Cin/groups x kH x kW)
                macs += int(np.prod(out)) * int(np.prod(w[1:]))
        elif node.op_type in ("Gemm", "MatMul"):
            a = shapes.get(node.input[0])
            if a:
                macs += int(np.prod(out)) * a[-1]
    return macs


def _with_batch(model: onnx.ModelProto, batch: int) -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for vi in m.graph.input:
        dims = vi.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_value = batch
    return m


def initializer_arrays(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
