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
    as PaddlePaddle's exporter does), or "relu"; then global pooling."""
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
        else:
            nodes.append(helper.make_node("Relu", [f"c{i}"], [f"a{i}"], name=f"relu{i}"))
        x = f"a{i}"
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["output"], name="pool"))
    graph = helper.make_graph(nodes, activation, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 16, 1, 1])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = root / f"{activation}.onnx"
    onnx.save(model, str(path))
    return path


def _quantize(path: Path, root: Path) -> Artifact:
    calib = root / "calib.npy"
    np.save(calib, np.random.default_rng(1).standard_normal((16, 3, 16, 16)).astype(np.float32))
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
