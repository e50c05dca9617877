"""A model whose work sits inside an If node (as stateful audio models export): each target quantizes what
it can and says what it could not, by node name, instead of failing deep in a library."""

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper, numpy_helper

from edgekit.onnx.control_flow import control_flow


@pytest.fixture(scope="module")
def branchy(tmp_path_factory):
    """y = x @ W1 when sum(x) > 0, else relu(x @ W2): both MatMuls live in If subgraphs."""
    rng = np.random.default_rng(0)
    then_g = helper.make_graph([helper.make_node("MatMul", ["x", "W1"], ["t_out"])], "then", [],
                               [helper.make_tensor_value_info("t_out", T.FLOAT, [1, 8])])
    else_g = helper.make_graph([helper.make_node("MatMul", ["x", "W2"], ["e1"]), helper.make_node("Relu", ["e1"], ["e_out"])],
                               "else", [], [helper.make_tensor_value_info("e_out", T.FLOAT, [1, 8])])
    nodes = [helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0), helper.make_node("Greater", ["s", "zero"], ["cond"]),
             helper.make_node("If", ["cond"], ["y"], then_branch=then_g, else_branch=else_g, name="branch")]
    inits = [numpy_helper.from_array(rng.standard_normal((8, 8)).astype(np.float32), "W1"),
             numpy_helper.from_array(rng.standard_normal((8, 8)).astype(np.float32), "W2"),
             numpy_helper.from_array(np.array(0, np.float32), "zero")]
    graph = helper.make_graph(nodes, "branchy", [helper.make_tensor_value_info("x", T.FLOAT, [1, 8])],
                              [helper.make_tensor_value_info("y", T.FLOAT, [1, 8])], inits)
    root = tmp_path_factory.mktemp("branchy")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(root / "if.onnx"))
    np.save(root / "x.npy", rng.standard_normal((24, 8)).astype(np.float32))
    return root


def test_control_flow_counts_the_compute_inside_subgraphs(branchy):
    flow = control_flow(onnx.load(str(branchy / "if.onnx")))
    assert flow.nodes == (("branch", "If"),) and flow.compute_inside == 2 and flow.compute_outside == 0
    assert flow.describe() == "If node 'branch' holds 2 of the model's 2 Conv/Gemm/MatMul ops"


def test_onnxruntime_says_its_int8_left_the_subgraphs_in_float(cli, branchy, tmp_path):
    r = cli("quantize", branchy / "if.onnx", "--target", "onnxruntime", "--calib", branchy / "x.npy", "-o", tmp_path)
    assert r.exit_code == 0, r.output
    assert "If node 'branch' holds 2 of the model's 2" in r.stderr and "stay float" in r.stderr
    provenance = json.loads((tmp_path / "if.int8.onnx.json").read_text())["provenance"]
    assert provenance["control_flow"]["compute_inside"] == 2 and provenance["control_flow"]["quantized_compute"] == 0


def test_openvino_quantizes_inside_the_if_bodies(cli, branchy, tmp_path):
    pytest.importorskip("nncf")
    import openvino as ov

    r = cli("quantize", branchy / "if.onnx", "--target", "openvino", "--calib", branchy / "x.npy", "-o", tmp_path,
            "--val", branchy / "x.npy", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["accuracy"]["cosine_mean"] > 0.97  # measured 0.989 (8x8 random weights)
    model = ov.Core().read_model(str(next(tmp_path.glob("*.xml"))))
    branch = next(op for op in model.get_ops() if op.get_type_name() == "If")
    bodies = [[op.get_type_name() for op in branch.get_function(i).get_ops()] for i in range(2)]
    assert all("FakeQuantize" in ops for ops in bodies)  # NNCF entered both branches


def test_tensorrt_names_the_if_node_it_cannot_place_qdq_in(cli, branchy, tmp_path):
    r = cli("quantize", branchy / "if.onnx", "--target", "tensorrt", "--calib", branchy / "x.npy", "-o", tmp_path)
    assert r.exit_code == 4, r.output
    assert "If node 'branch' holds 2" in r.stderr and len(r.stderr.strip().splitlines()) == 2  # error + hint
    assert [p.name for p in tmp_path.iterdir()] in ([], ["edgekit.log"])  # at most the libraries' log


@pytest.fixture(scope="module")
def rate_switch(tmp_path_factory):
    """y = 2x when the scalar input sr is 16000; any other rate takes a branch that cannot run on x (it reads
    column 20 of 8), as silero-vad's 8 kHz branch does not run on 16 kHz frames."""
    then_g = helper.make_graph([helper.make_node("Mul", ["x", "two"], ["t_out"])], "then", [],
                               [helper.make_tensor_value_info("t_out", T.FLOAT, [1, 8])])
    else_g = helper.make_graph([helper.make_node("Gather", ["x", "column20"], ["e_out"], axis=1)], "else", [],
                               [helper.make_tensor_value_info("e_out", T.FLOAT, None)])
    nodes = [helper.make_node("Equal", ["sr", "rate"], ["cond"]),
             helper.make_node("If", ["cond"], ["y"], then_branch=then_g, else_branch=else_g, name="rate_branch")]
    inits = [numpy_helper.from_array(np.array(2, np.float32), "two"), numpy_helper.from_array(np.array(16000), "rate"),
             numpy_helper.from_array(np.array([20] * 8), "column20")]
    graph = helper.make_graph(nodes, "rate_switch", [helper.make_tensor_value_info("x", T.FLOAT, [1, 8]),
                                                     helper.make_tensor_value_info("sr", T.INT64, [])],
                              [helper.make_tensor_value_info("y", T.FLOAT, [1, 8])], inits)
    path = tmp_path_factory.mktemp("rate") / "rate.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_compile_runs_its_conversion_sample_with_the_given_constant(cli, rate_switch, tmp_path):
    pytest.importorskip("onnx2tf")
    args = ("compile", rate_switch, "--target", "tflite", "--input", "sr:scalar:int64")
    r = cli(*args, "-o", tmp_path / "random")
    assert r.exit_code == 4 and "does not run in ONNX Runtime on the conversion sample" in r.output  # a random rate
    r = cli(*args, "--const", "sr=16000", "-o", tmp_path / "given")
    # past the ONNX sample; onnx2tf computes both branches of the If, so its .tflite fails on the other one
    assert "conversion sample" not in r.output and r.exit_code in (0, 4), r.output
    assert r.exit_code == 0 or "the .tflite onnx2tf made fails to run" in r.output
    r = cli(*args, "--const", "rate=16000", "-o", tmp_path / "typo")
    assert r.exit_code == 2 and "--const names 'rate', which the model does not have" in r.output
    assert not any((tmp_path / "typo").glob("*"))
