"""Inputs that are not a batch of images: a recurrent state stacked on axis 1, a scalar sample rate given
once in the data or with --const, through validate, quantize and deploy on a real ONNX model."""

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto as T
from onnx import helper, numpy_helper

from edgekit.core.data import open_data
from edgekit.core.errors import InvalidInputError
from edgekit.core.tensors import TensorSpec, parse_input_spec

N = 20
STATE = "state:2x?x8@batch=1"


@pytest.fixture(scope="module")
def stateful(tmp_path_factory):
    """y = x @ W + sum(state over layers and units) * sr / 16000: every input changes the output."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("MatMul", ["x", "W"], ["xw"]),
             helper.make_node("ReduceSum", ["state", "axes"], ["s"], keepdims=0),
             helper.make_node("Cast", ["sr"], ["srf"], to=T.FLOAT),
             helper.make_node("Div", ["srf", "k"], ["scale"]),
             helper.make_node("Mul", ["s", "scale"], ["ss"]),
             helper.make_node("Unsqueeze", ["ss", "ax1"], ["ss2"]),
             helper.make_node("Add", ["xw", "ss2"], ["y"])]
    graph = helper.make_graph(
        nodes, "stateful",
        [helper.make_tensor_value_info("x", T.FLOAT, ["B", 4]), helper.make_tensor_value_info("state", T.FLOAT, [2, "B", 8]),
         helper.make_tensor_value_info("sr", T.INT64, [])],
        [helper.make_tensor_value_info("y", T.FLOAT, ["B", 3])],
        [numpy_helper.from_array(rng.standard_normal((4, 3)).astype(np.float32), "W"),
         numpy_helper.from_array(np.array([0, 2], np.int64), "axes"),
         numpy_helper.from_array(np.array(16000, np.float32), "k"), numpy_helper.from_array(np.array([1], np.int64), "ax1")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    root = tmp_path_factory.mktemp("stateful")
    onnx.save(model, str(root / "m.onnx"))
    x, state = rng.standard_normal((N, 4)).astype(np.float32), rng.standard_normal((2, N, 8)).astype(np.float32)
    np.savez(root / "once.npz", x=x, state=state, sr=np.array(16000, np.int64))
    np.savez(root / "per_sample.npz", x=x, state=state, sr=np.arange(N, dtype=np.int64) * 1000)
    np.savez(root / "no_sr.npz", x=x, state=state)
    return root


def test_spec_syntax_for_batch_axes_and_scalars():
    assert parse_input_spec(STATE) == TensorSpec("state", (2, None, 8), "float32", 1)
    assert parse_input_spec("sr:scalar:int64") == TensorSpec("sr", (), "int64", None)
    assert parse_input_spec("h:1x64@batch=none").batch_axis is None
    assert parse_input_spec(STATE).concrete_shape(3) == (2, 3, 8)
    assert parse_input_spec(STATE).display_shape() == "2x?x8@batch=1"
    spec = parse_input_spec(STATE)
    assert TensorSpec.from_dict(spec.to_dict()) == spec and "batch_axis" not in parse_input_spec("x:1x4").to_dict()
    for bad, message in (("s:2x8@batch=2", "not an axis"), ("s:2x8@axis=1", "bad '@axis=1'"), ("s:2xfoo", "bad dimension")):
        with pytest.raises(InvalidInputError, match=message):
            parse_input_spec(bad)
    with pytest.raises(InvalidInputError) as e:  # the hint names the model's own sizes, not an image's
        TensorSpec("images", (1, 3, None, None)).concrete_shape()
    assert e.value.hint.endswith("images:1x3xSIZExSIZE")


def test_samples_are_sliced_on_each_inputs_own_axis(stateful):
    specs = [TensorSpec("x", (None, 4)), parse_input_spec(STATE), TensorSpec("sr", (), "int64")]
    data = np.load(stateful / "per_sample.npz")
    samples = list(open_data(stateful / "per_sample.npz", specs))
    assert len(samples) == N
    assert samples[5].feed["state"].shape == (2, 1, 8)
    np.testing.assert_array_equal(samples[5].feed["state"][:, 0], data["state"][:, 5])
    assert samples[5].feed["sr"].shape == () and int(samples[5].feed["sr"]) == 5000
    once = list(open_data(stateful / "once.npz", specs))
    assert len(once) == N and all(int(s.feed["sr"]) == 16000 for s in once)
    const = list(open_data(stateful / "no_sr.npz", specs, consts={"sr": "8000"}))
    assert int(const[3].feed["sr"]) == 8000 and const[3].feed["sr"].dtype == np.int64


def test_validate_quantize_and_deploy_take_the_layouts(cli, stateful, tmp_path):
    m, layout = stateful / "m.onnx", ("--input", STATE)
    r = cli("validate", m, "--reference", m, "--data", stateful / "no_sr.npz", *layout, "--const", "sr=16000", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["accuracy"]["samples"] == N
    r = cli("quantize", m, "--target", "onnxruntime", "--calib", stateful / "once.npz", *layout, "-o", tmp_path / "q",
            "--val", stateful / "once.npz")
    assert r.exit_code == 0, r.output
    int8 = next((tmp_path / "q").glob("*.int8.onnx"))
    session = ort.InferenceSession(str(int8), providers=["CPUExecutionProvider"])
    y = session.run(None, {"x": np.ones((1, 4), np.float32), "state": np.ones((2, 1, 8), np.float32),
                           "sr": np.array(16000, np.int64)})[0]
    assert y.shape == (1, 3)
    out = tmp_path / "deploy"
    r = cli("deploy", m, "--profile", "x86-onnxruntime-cpu", "--calib", stateful / "no_sr.npz", *layout,
            "--const", "sr=16000", "--min-seconds", "0.2", "-o", out)
    assert r.exit_code == 0, r.output
    rows = json.loads((out / "report.json").read_text())["results"]
    assert [row["status"] for row in rows] == ["ok", "ok"] and all(row["accuracy"]["samples"] == N for row in rows)


@pytest.mark.parametrize("args, message", [
    (("--const", "rate=1"), "--const names 'rate', which the model does not have"),
    (("--const", "sr=fast"), "--const sr=fast: not a number"),
    (("--const", "sr"), "bad --const 'sr'"),
    ((), "inputs have different sample counts"),  # the state stacked on axis 1, not declared
])
def test_bad_layouts_exit_2_with_one_line(cli, stateful, args, message):
    m = stateful / "m.onnx"
    extra = ("--input", STATE) if args else ()
    r = cli("validate", m, "--reference", m, "--data", stateful / "no_sr.npz" if args else stateful / "once.npz",
            *extra, *args)
    assert r.exit_code == 2 and message in r.stderr, r.output
    assert "Traceback" not in r.output


def test_an_image_folder_feeds_a_model_with_a_shared_second_input(cli, tmp_path):
    """Detectors like RT-DETR take the image and its original size: the folder feeds one, --const the other."""
    from PIL import Image

    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["images"], ["m"], axes=[2, 3], keepdims=0),
         helper.make_node("Cast", ["orig_size"], ["size_f"], to=T.FLOAT),
         helper.make_node("ReduceSum", ["size_f"], ["total"], keepdims=1),
         helper.make_node("Mul", ["m", "total"], ["y"])],
        "sized", [helper.make_tensor_value_info("images", T.FLOAT, [1, 3, 32, 32]),
                  helper.make_tensor_value_info("orig_size", T.INT64, [1, 2])],
        [helper.make_tensor_value_info("y", T.FLOAT, [1, 3])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(tmp_path / "sized.onnx"))
    (tmp_path / "images").mkdir()
    rng = np.random.default_rng(1)
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(tmp_path / "images" / f"{i}.png")
    r = cli("validate", tmp_path / "sized.onnx", "--reference", tmp_path / "sized.onnx", "--data", tmp_path / "images",
            "--preprocess", "raw", "--const", "orig_size=640,480", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["accuracy"]["samples"] == 4
    r = cli("validate", tmp_path / "sized.onnx", "--reference", tmp_path / "sized.onnx", "--data", tmp_path / "images",
            "--const", "orig_size=640")
    assert r.exit_code == 2 and "1 values for input 'orig_size' of shape 1x2" in r.stderr
