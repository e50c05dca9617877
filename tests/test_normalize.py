"""One checked ONNX for every target (edgekit.onnx.normalize): an opset-12 export with per-channel int8
weights, and a model exported with dynamic height and width, as their users export them."""

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from edgekit.backends.base import QuantOptions
from edgekit.backends.registry import get_backend
from edgekit.core.artifact import Artifact
from edgekit.core.data import open_data
from edgekit.core.onnx_model import graph_inputs
from edgekit.stages.normalize import normalized_source


class Grid(nn.Module):
    """A conv net whose output adds a coordinate grid built from the input's own size, as YOLO heads
    build anchors: with dynamic H/W that grid is Shape/Range arithmetic in the graph."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 4, 3, stride=2, padding=1)

    def forward(self, x):
        y = self.conv2(torch.relu(self.conv1(x)))
        h, w = y.shape[-2:]
        grid = torch.arange(h, dtype=y.dtype)[:, None] * w + torch.arange(w, dtype=y.dtype)[None, :]
        return (y + grid / (h * w)).flatten(1)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("normalize")
    torch.manual_seed(0)
    model, example = Grid().eval(), (torch.randn(1, 3, 32, 32),)
    torch.onnx.export(model, example, str(root / "op12.onnx"), opset_version=12, dynamo=False,
                      input_names=["images"], output_names=["out"])
    torch.onnx.export(model, example, str(root / "dyn.onnx"), opset_version=17, dynamo=False,
                      input_names=["images"], output_names=["out"], dynamic_axes={"images": {0: "b", 2: "h", 3: "w"}})
    np.save(root / "images.npy", np.random.default_rng(0).standard_normal((16, 3, 32, 32)).astype(np.float32))
    return root


def loads(path: Path) -> bool:
    try:
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return True
    except Exception:
        return False


def test_an_opset_12_model_is_upgraded_so_its_per_channel_int8_loads(cli, models, tmp_path):
    source = Artifact.load(models / "op12.onnx")
    raw = get_backend("onnxruntime").quantize(source, open_data(models / "images.npy", source.inputs),
                                              QuantOptions(), tmp_path / "raw")
    assert not loads(raw.path)  # what ONNX Runtime's quantizer writes for opset 12: DequantizeLinear axis

    r = cli("quantize", models / "op12.onnx", "--target", "onnxruntime", "--calib", models / "images.npy",
            "-o", tmp_path / "q", "--val", models / "images.npy", "--json")
    assert r.exit_code == 0, r.output
    assert "normalised op12.onnx: opset 12 -> 13" in r.stderr
    int8 = tmp_path / "q" / "op12.int8.onnx"
    assert loads(int8) and json.loads(r.stdout)["accuracy"]["cosine_mean"] > 0.99
    normalized = json.loads((tmp_path / "q" / "normalized" / "op12.onnx.json").read_text())["provenance"]["normalized"]
    assert normalized["opset"] == [12, 13] and normalized["check"]["max_rel_err"] < 1e-4
    assert json.loads((tmp_path / "q" / "op12.int8.onnx.json").read_text())["provenance"]["normalized"] == normalized


def test_dynamic_height_and_width_are_fixed_from_the_data_and_simplified(models, tmp_path):
    source = Artifact.load(models / "dyn.onnx")
    assert source.inputs[0].shape == (None, 3, None, None)
    data = open_data(models / "images.npy", source.inputs)
    art = normalized_source(source, tmp_path, source.inputs, data)
    assert art.inputs[0].shape == (None, 3, 32, 32)  # the batch stays as exported
    changes = art.provenance["normalized"]
    assert changes["fixed_shapes"] == {"images": [None, 3, 32, 32]} and changes["simplified"] == "onnxslim"
    ops = [n.op_type for n in onnx.load(str(art.path)).graph.node]
    original = [n.op_type for n in onnx.load(str(models / "dyn.onnx")).graph.node]
    assert "Range" in original and "Range" not in ops and len(ops) < len(original)  # the grid folded to a constant
    assert graph_inputs(onnx.load(str(art.path)))[0].shape == (None, 3, 32, 32)


def test_deploy_of_the_dynamic_model_needs_no_input_option(cli, models, tmp_path):
    r = cli("deploy", models / "dyn.onnx", "--profile", "x86-onnxruntime-cpu", "--profile", "x86-openvino-cpu",
            "--calib", models / "images.npy", "--min-seconds", "0.2", "-o", tmp_path / "d")
    assert r.exit_code == 0, r.output
    rows = json.loads((tmp_path / "d" / "report.json").read_text())["results"]
    assert {row["status"] for row in rows} == {"ok"} and len(rows) == 4
    assert all(row["accuracy"]["cosine_mean"] > 0.99 for row in rows)


def test_a_model_that_needs_nothing_is_used_as_it_is(tiny_onnx, tiny_data, tmp_path):
    source = Artifact.load(tiny_onnx)
    assert normalized_source(source, tmp_path, source.inputs, open_data(tiny_data, source.inputs)) is source
    assert not (tmp_path / "normalized").exists()


needs_onnx2tf = pytest.mark.skipif(
    any(__import__("importlib").util.find_spec(m) is None for m in ("onnx2tf", "tensorflow", "tf_keras", "ai_edge_quantizer")),
    reason="needs the tflite-onnx extra (onnx2tf + TensorFlow)")


@needs_onnx2tf
def test_the_dynamic_model_converts_to_tflite_from_onnx(cli, models, tmp_path):
    """onnx2tf reads the fixed, simplified graph and needs no onnxsim executable."""
    r = cli("quantize", models / "dyn.onnx", "--target", "tflite", "--calib", models / "images.npy",
            "-o", tmp_path / "t", "--val", models / "images.npy", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["accuracy"]["cosine_mean"] > 0.98


def test_a_tensorflow_error_is_reported_by_its_cause_not_its_trace():
    from edgekit.backends.tflite.onnx2tf import root_cause

    trace = ("in user code:\n\n    File \"/site-packages/keras/src/layers/layer.py\", line 9, in call\n"
             "        outputs = fn(x)\n\n    ValueError: Dimensions must be equal, but are 40 and 80 for node "
             "Add (op: AddV2) with input shapes: [1,40,40,2], [1,80,80,2].\n")
    assert root_cause(trace).startswith("ValueError: Dimensions must be equal, but are 40 and 80")
    assert root_cause("plain message") == "plain message"


def test_a_model_with_external_weights_deploys_with_them(cli, tmp_path):
    """The dynamo exporter's `model.onnx` + `model.onnx.data`: the weights travel with every copy."""
    import contextlib
    import io

    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3)).eval()
    with contextlib.redirect_stdout(io.StringIO()):
        torch.onnx.export(model, (torch.randn(1, 3, 32, 32),), dynamo=True).save(str(tmp_path / "ext.onnx"),
                                                                                   external_data=True)
    assert (tmp_path / "ext.onnx.data").exists()
    np.save(tmp_path / "x.npy", np.random.default_rng(0).standard_normal((8, 3, 32, 32)).astype(np.float32))
    out = tmp_path / "out"
    r = cli("deploy", tmp_path / "ext.onnx", "--profile", "x86-onnxruntime-cpu", "--calib", tmp_path / "x.npy",
            "--min-seconds", "0.2", "-o", out)
    assert r.exit_code == 0, r.output
    rows = json.loads((out / "report.json").read_text())["results"]
    assert [row["status"] for row in rows] == ["ok", "ok"]
    assert (out / "ext.onnx.data").exists() and (out / "onnxruntime-fp32" / "reference.ort-opt.onnx.data").exists()
    assert Artifact.load(out / "reference.onnx").size_bytes() > (out / "reference.onnx").stat().st_size


def test_a_custom_op_or_a_broken_graph_is_refused_before_calibration(cli, tmp_path):
    from onnx import TensorProto as T
    from onnx import helper

    def save(name, nodes, extra_opsets=()):
        graph = helper.make_graph(nodes, name, [helper.make_tensor_value_info("x", T.FLOAT, [1, 8])],
                                  [helper.make_tensor_value_info("y", T.FLOAT, [1, 8])])
        opsets = [helper.make_opsetid("", 17), *extra_opsets]
        onnx.save(helper.make_model(graph, opset_imports=opsets), str(tmp_path / f"{name}.onnx"))
        return tmp_path / f"{name}.onnx"

    custom = save("custom", [helper.make_node("Relu", ["x"], ["r"]),
                             helper.make_node("MyOp", ["r"], ["y"], domain="my.ops", name="custom1")],
                  [helper.make_opsetid("my.ops", 1)])
    dangling = save("dangling", [helper.make_node("Relu", ["nothere"], ["y"])])
    np.save(tmp_path / "x.npy", np.random.default_rng(0).standard_normal((8, 8)).astype(np.float32))
    for model, message in ((custom, "node 'custom1' is op MyOp of domain 'my.ops'"),
                           (dangling, "is not a valid ONNX graph")):
        out = tmp_path / f"out-{model.stem}"
        r = cli("quantize", model, "--target", "onnxruntime", "--calib", tmp_path / "x.npy", "-o", out)
        assert r.exit_code == 2 and message in r.stderr, r.output
        assert not out.exists() or not any(out.rglob("*"))


def test_onnx_runtime_preprocessing_leaves_nothing_in_the_current_directory(tmp_path, monkeypatch):
    """ORT's symbolic shape inference saves `sym_shape_infer_temp.onnx` into the current directory when it
    gives up (here on a custom op); edgekit runs it inside its private folder."""
    from onnx import TensorProto as T
    from onnx import helper

    from edgekit.backends.onnxruntime import preprocess_for_quantization

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["r"]), helper.make_node("MyOp", ["r"], ["y"], domain="my.ops")],
                              "custom", [helper.make_tensor_value_info("x", T.FLOAT, [1, 8])],
                              [helper.make_tensor_value_info("y", T.FLOAT, [1, 8])])
    model = tmp_path / "custom.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("my.ops", 1)]),
              str(model))
    user, private = tmp_path / "user", tmp_path / "private"
    user.mkdir(), private.mkdir()
    monkeypatch.chdir(user)
    preprocess_for_quantization(model, private / "prepared.onnx")
    assert list(user.iterdir()) == [] and (private / "prepared.onnx").exists()
    assert Path.cwd() == user
