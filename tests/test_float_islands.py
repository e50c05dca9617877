"""Ops ONNX Runtime runs in float between int8 ones, read from its own optimised graph (edgekit.onnx.float_islands)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekit.backends.base import QuantOptions
from edgekit.backends.registry import get_backend
from edgekit.core.artifact import Artifact
from edgekit.core.data import open_data

pytest.importorskip("onnxruntime")


def _model(root: Path, activation: str) -> Path:
    """Two 3x3 convolutions, each followed by `activation`: "hardswish" as opset 12 writes it (x * HardSigmoid(x),
    as PaddlePaddle's exporter does), "relu6-div" (x * relu6(x + 3) / 6, its other spelling) or "relu"; then global
    pooling."""
    rng = np.random.default_rng(0)
    nodes, inits, x = [], [], "x"
    for i, (cin, cout) in enumerate(((3, 16), (16, 16))):
        w = numpy_helper.from_array((rng.standard_normal((cout, cin, 3, 3)) * 0.3).astype(np.float32), f"w{i}")
        b = numpy_helper.from_array((rng.standard_normal(cout) * 0.1).astype(np.float32), f"b{i}")
        inits += [w, b]
        nodes.append(helper.make_node("Conv", [x, f"w{i}", f"b{i}"], [f"c{i}"], name=f"conv{i}", pads=[1] * 4))
        if activation == "hardswish":
            nodes += [helper.make_node("HardSigmoid", [f"c{i}"], [f"h{i}"], name=f"hsig{i}", alpha=1 / 6, beta=0.5),
                      helper.make_node("Mul", [f"c{i}", f"h{i}"], [f"a{i}"], name=f"mul{i}")]
        elif activation == "relu6-div":
            inits += [numpy_helper.from_array(np.array(v, np.float32), n) for n, v in (("three", 3), ("six", 6),
                                                                                         ("zero", 0))]
            nodes += [helper.make_node("Add", [f"c{i}", "three"], [f"p{i}"], name=f"add{i}"),
                      helper.make_node("Clip", [f"p{i}", "zero", "six"], [f"r{i}"], name=f"relu6_{i}"),
                      helper.make_node("Mul", [f"c{i}", f"r{i}"], [f"m{i}"], name=f"mul{i}"),
                      helper.make_node("Div", [f"m{i}", "six"], [f"a{i}"], name=f"div{i}")]
        else:
            nodes.append(helper.make_node("Relu", [f"c{i}"], [f"a{i}"], name=f"relu{i}"))
        x = f"a{i}"
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["output"], name="pool"))
    graph = helper.make_graph(nodes, activation.replace("-", "_"), [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 16, 1, 1])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = root / f"{activation}.onnx"
    onnx.save(model, str(path))
    return path


def _calib(root: Path) -> Path:
    calib = root / "calib.npy"
    np.save(calib, np.random.default_rng(1).standard_normal((16, 3, 16, 16)).astype(np.float32))
    return calib


def _quantize(path: Path, root: Path) -> Artifact:
    calib = _calib(root)
    source = Artifact.load(path)
    out = root / path.stem
    out.mkdir()
    return get_backend("onnxruntime").quantize(source, open_data(str(calib), source.inputs), QuantOptions(), out)


def test_hardsigmoid_between_int8_convolutions_is_named(tmp_path, capfd):
    art = _quantize(_model(tmp_path, "hardswish"), tmp_path)
    # ONNX Runtime fuses the convolutions and the Mul into int8 kernels, but has none for HardSigmoid
    assert art.provenance["float_between_int8"] == {"HardSigmoid": 2}
    assert art.provenance["int8_compute_ops"] == 2
    err = capfd.readouterr().err
    assert "2 ops have no int8 kernel" in err and "HardSigmoid x2" in err and "slower than FP32" in err


def test_relu_network_has_no_float_islands(tmp_path, capfd):
    art = _quantize(_model(tmp_path, "relu"), tmp_path)
    assert "float_between_int8" not in art.provenance  # Relu folds into the quantization range
    assert "no int8 kernel" not in capfd.readouterr().err


def test_division_by_a_constant_is_quantized_as_a_product(tmp_path):
    """ONNX Runtime has no int8 Div: x / 6 becomes x * (1/6), one int8 Mul instead of a float island."""
    import onnxruntime as ort

    model = _model(tmp_path, "relu6-div")
    art = _quantize(model, tmp_path)
    assert art.provenance["divisions_as_products"] == 2
    assert "Div" not in art.provenance.get("float_between_int8", {})
    assert [n.op_type for n in onnx.load(str(art.path)).graph.node].count("Div") == 0
    assert [n.op_type for n in onnx.load(str(model)).graph.node].count("Div") == 2  # the source is untouched
    x = np.load(_calib(tmp_path))
    want = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    got = ort.InferenceSession(str(art.path), providers=["CPUExecutionProvider"])
    a = np.concatenate([want.run(None, {"x": x[i:i + 1]})[0].ravel() for i in range(len(x))])
    b = np.concatenate([got.run(None, {"x": x[i:i + 1]})[0].ravel() for i in range(len(x))])
    assert float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)) > 0.99
