"""A softmax with the NaN guard ONNX exporters put after every attention softmax, where(isnan(s), 0, s): the
scalar 0 is a broadcast constant of SELECT_V2, which ai-edge-quantizer failed on (all-MiniLM-L6-v2), so
edgekit keeps such ops in float (tflite/broadcast_constants.py)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

pytest.importorskip("onnx2tf")
pytest.importorskip("ai_edge_quantizer")

from edgekit.backends.base import CompileOptions, QuantOptions  # noqa: E402
from edgekit.backends.registry import get_backend  # noqa: E402
from edgekit.backends.tflite.broadcast_constants import broadcast_constant_ops  # noqa: E402
from edgekit.core.artifact import Artifact  # noqa: E402
from edgekit.core.data import open_data  # noqa: E402
from edgekit.core.tensors import parse_input_spec  # noqa: E402

SPEC = parse_input_spec("x:1x8x16")


def guarded_softmax_onnx(path):
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((16, 16)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((16, 4)).astype(np.float32), "w2")
    zero = numpy_helper.from_array(np.zeros((), np.float32), "zero")
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["scores"]),
        helper.make_node("Softmax", ["scores"], ["probs"], axis=-1),
        helper.make_node("IsNaN", ["probs"], ["nan"]),
        helper.make_node("Where", ["nan", "zero", "probs"], ["guarded"]),
        helper.make_node("MatMul", ["guarded", "w2"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "guarded_softmax",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 4])],
                              initializer=[w1, w2, zero])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.save(model, path)
    return path


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("guarded")
    src = Artifact.load(guarded_softmax_onnx(tmp / "guarded.onnx"))
    x = np.random.default_rng(1).standard_normal((32, 1, 8, 16)).astype(np.float32)
    np.save(tmp / "calib.npy", x[:, 0])
    backend = get_backend("tflite")
    fp32 = backend.compile(src, None, tmp / "fp32", CompileOptions("fp32"))
    return backend, src, fp32, open_data(tmp / "calib.npy", [SPEC]), x[:8], tmp


def test_the_guard_is_a_select_with_a_broadcast_constant(built):
    _, _, fp32, *_ = built
    assert [t for t, _ in broadcast_constant_ops(fp32.path.read_bytes())] == ["SELECT_V2"]


def test_int8_quantizes_with_the_guard_in_float_and_stays_close(built):
    backend, src, fp32, data, x, tmp = built
    # static ranges: by default a model of matrix products alone quantizes its activations at run time instead
    int8 = backend.quantize(src, data, QuantOptions(method="minmax"), tmp / "int8")
    assert len(int8.provenance["float_broadcast_constant"]) == 1

    def outputs(art):
        with backend.runner(art, 1) as r:
            return np.concatenate([r.infer({"x": s})["y"] for s in x])

    ref, got = outputs(fp32), outputs(int8)
    assert float(np.sum(ref * got) / np.linalg.norm(ref) / np.linalg.norm(got)) > 0.99
