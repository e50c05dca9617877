"""Per-output accuracy: a broken second output shows on its own line, in validate and in the report,
even when the whole-vector cosine over all outputs still looks fine."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import edgekit
from edgekit.pipeline.deploy import DeployOptions, deploy
from edgekit.stages.bench import BenchOptions


def two_output_model(path, scores_scale: float | None) -> None:
    """boxes = 100 * x @ W (large, like pixel coordinates), scores = sigmoid(x @ V); with scores_scale None
    the scores head is replaced by a constant 0.5 (what a collapsed int8 scale does to it)."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array((100 * rng.standard_normal((16, 8))).astype(np.float32), "W")
    v = numpy_helper.from_array(rng.standard_normal((16, 4)).astype(np.float32), "V")
    nodes = [helper.make_node("MatMul", ["x", "W"], ["boxes"])]
    if scores_scale is None:
        half = numpy_helper.from_array(np.zeros((16, 4), np.float32), "Z")
        nodes += [helper.make_node("MatMul", ["x", "Z"], ["logits"]), helper.make_node("Sigmoid", ["logits"], ["scores"])]
        inits = [w, v, half]
    else:
        nodes += [helper.make_node("MatMul", ["x", "V"], ["logits"]), helper.make_node("Sigmoid", ["logits"], ["scores"])]
        inits = [w, v]
    graph = helper.make_graph(nodes, "two_heads", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
                              [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, 8]),
                               helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)


@pytest.fixture()
def models(tmp_path):
    reference, broken = tmp_path / "reference.onnx", tmp_path / "broken.onnx"
    two_output_model(reference, 1.0)
    two_output_model(broken, None)
    data = tmp_path / "data.npz"
    np.savez(data, x=np.random.default_rng(1).standard_normal((24, 16)).astype(np.float32))
    return reference, broken, data


def test_validate_reports_every_output(models):
    reference, broken, data = models
    got = edgekit.validate(broken, reference=reference, data=data).accuracy
    assert got["cosine_mean"] > 0.999  # the old whole-vector number: the boxes dominate it
    assert set(got["outputs"]) == {"boxes", "scores"}
    assert got["outputs"]["boxes"]["cosine_mean"] == pytest.approx(1.0) and got["outputs"]["boxes"]["max_abs_err"] == 0
    assert got["outputs"]["scores"]["cosine_mean"] < got["cosine_mean"] - 0.05  # the broken head, visible
    assert got["outputs"]["scores"]["max_abs_err"] > 0.3
    same = edgekit.validate(reference, reference=reference, data=data).accuracy
    assert same["outputs"]["scores"]["sqnr_db"] is None and same["outputs"]["scores"]["max_abs_err"] == 0


def test_report_lists_outputs_of_a_multi_output_model(models, tmp_path):
    reference, broken, data = models
    opts = DeployOptions(profiles=("x86-onnxruntime-cpu",), out_dir=tmp_path / "out", calib=str(data), val=str(data),
                         precisions=("fp32",), bench=BenchOptions(warmup=1, min_runs=5, min_seconds=0.05))
    result = deploy(str(broken), opts)
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "## Outputs vs FP32" in markdown
    assert "| x86-onnxruntime-cpu | fp32 | scores |" in markdown and "| x86-onnxruntime-cpu | fp32 | boxes |" in markdown
    assert "Outputs vs FP32" in (tmp_path / "out" / "report.html").read_text()
    assert result.report["results"][0]["accuracy"]["outputs"]["scores"]["cosine_mean"] == pytest.approx(1.0)
