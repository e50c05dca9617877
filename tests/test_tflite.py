"""TFLite target: tiny PyTorch and ONNX models to fp32/fp16/int8 .tflite, run on LiteRT, checked against
ONNX Runtime; NHWC and int8-I/O mapping in the runner; bad input and broken quantization."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert")
pytest.importorskip("litert_torch")
pytest.importorskip("ai_edge_quantizer")

import torch  # noqa: E402
from models import tiny_cnn  # noqa: E402

from edgekit.backends.base import CompileOptions, QuantOptions  # noqa: E402
from edgekit.backends.registry import get_backend  # noqa: E402
from edgekit.core.artifact import Artifact  # noqa: E402
from edgekit.core.data import open_data  # noqa: E402
from edgekit.core.errors import InvalidInputError  # noqa: E402
from edgekit.core.tensors import parse_input_spec  # noqa: E402
from edgekit.stages.export import save_pt2  # noqa: E402

TINY = parse_input_spec("input:1x3x32x32")

needs_onnx2tf = pytest.mark.skipif(
    any(__import__("importlib").util.find_spec(m) is None for m in ("onnx2tf", "tensorflow", "tf_keras")),
    reason="needs the tflite-onnx extra (onnx2tf + TensorFlow)",
)


@pytest.fixture(scope="module")
def backend():
    return get_backend("tflite")


@pytest.fixture(scope="module")
def tiny_pt2(tmp_path_factory) -> Artifact:
    return save_pt2(tiny_cnn(), tmp_path_factory.mktemp("pt2") / "model.pt2", [TINY])


@pytest.fixture(scope="module")
def reference(tiny_onnx, tiny_data):
    """ONNX Runtime outputs of the tiny CNN on the first 16 samples of the shared data."""
    import onnxruntime as ort

    x = np.load(tiny_data)[:16]
    session = ort.InferenceSession(str(tiny_onnx), providers=["CPUExecutionProvider"])
    return x, session.run(None, {"input": x})[0]


def run_all(backend, artifact, x, threads=2) -> np.ndarray:
    with backend.runner(artifact, threads) as runner:
        return np.concatenate([runner.infer({"input": x[i:i + 1]})["output"] for i in range(len(x))])


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(a.argmax(1) == b.argmax(1)))


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sum(a * b) / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.fixture(scope="module")
def pt2_models(backend, tiny_pt2, tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("pt2-out")
    fp32 = backend.compile(tiny_pt2, None, out, CompileOptions("fp32"))
    int8 = backend.quantize(tiny_pt2, open_data(tiny_data, [TINY]), QuantOptions(), out)
    return fp32, int8


def test_pytorch_to_fp32_and_int8_matches_onnxruntime(backend, pt2_models, reference):
    fp32, int8 = pt2_models
    x, ref = reference
    assert fp32.path.suffix == ".tflite" and fp32.precision == "fp32"
    assert fp32.provenance["converter"].startswith("litert-torch")
    np.testing.assert_allclose(run_all(backend, fp32, x), ref, atol=1e-4, rtol=1e-4)

    got = run_all(backend, int8, x)
    assert agreement(got, ref) >= 0.9 and cosine(got, ref) > 0.99
    p = int8.provenance
    assert int8.precision == "int8" and p["io"]["inputs"] == [{"name": "input", "perm": None}]
    assert p["float_ops"] == {}  # full integer inside
    assert p["bias_corrected_layers"] >= 5 and p["calibration_samples"] == 64
    assert p["calibration_sqnr_db"] > 25
    # the sidecar travels with the file: a fresh load runs the same way
    again = Artifact.load(int8.path)
    np.testing.assert_array_equal(run_all(backend, again, x[:4]), got[:4])


def test_bias_correction_reduces_int8_error(backend, tiny_pt2, tiny_data, reference, tmp_path):
    x, ref = reference
    data = open_data(tiny_data, [TINY])
    plain = backend.quantize(tiny_pt2, data, QuantOptions(extra={"bias_correction": False}), tmp_path / "plain")
    fixed = backend.quantize(tiny_pt2, data, QuantOptions(), tmp_path / "fixed")
    err_plain = np.abs(run_all(backend, plain, x) - ref).mean()
    err_fixed = np.abs(run_all(backend, fixed, x) - ref).mean()
    assert plain.provenance["bias_corrected_layers"] == 0
    assert err_fixed < err_plain


class _DeadChannel(torch.nn.Module):
    """Channel 1 of the conv has only zero weights: its output is its bias, 0.5, for every input."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        with torch.no_grad():
            self.conv.weight[1].zero_()
            self.conv.bias[1] = 0.5

    def forward(self, x):
        return torch.nn.functional.relu6(self.conv(x)).mean(dim=(2, 3))


def test_zero_weight_channel_keeps_its_bias_in_int8(backend, tiny_data, tmp_path):
    """ai-edge-quantizer gives such a channel a ~1e-11 scale, so its int32 bias saturates; edgekit repairs it."""
    pt2 = save_pt2(_DeadChannel().eval(), tmp_path / "dead.pt2", [TINY])
    data = open_data(tiny_data, [TINY])
    art = backend.quantize(pt2, data, QuantOptions(), tmp_path)
    assert art.provenance["zero_weight_channels_repaired"] == 1
    got = run_all(backend, art, np.load(tiny_data)[:4])
    np.testing.assert_allclose(got[:, 1], 0.5, atol=0.02)


def test_int8_io_model_takes_and_returns_float_nchw(backend, cli, tiny_pt2, tiny_data, reference, tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    x, ref = reference
    result = cli("quantize", tiny_pt2.path, "--target", "tflite", "--calib", tiny_data, "--int8-io", "-o", tmp_path,
                 "--json")
    assert result.exit_code == 0, result.output
    art = Artifact.load(json.loads(result.output)["path"])
    inp = Interpreter(str(art.path)).get_input_details()[0]
    out = Interpreter(str(art.path)).get_output_details()[0]
    assert inp["dtype"] == np.int8 and out["dtype"] == np.int8 and inp["quantization"][0] > 0
    assert art.provenance["io_dtype"] == "int8"
    got = run_all(backend, art, x)  # float NCHW in, float out: the runner (de)quantizes
    assert got.dtype == np.float32 and got.shape == ref.shape
    assert agreement(got, ref) >= 0.9 and cosine(got, ref) > 0.99


def test_fp16_halves_the_weights_and_keeps_the_outputs(backend, tiny_pt2, pt2_models, reference, tmp_path):
    fp32, _ = pt2_models
    x, ref = reference
    fp16 = backend.compile(fp32, None, tmp_path, CompileOptions("fp16"))
    assert fp16.precision == "fp16"
    assert fp16.provenance["memory"]["weights_bytes"] < 0.6 * fp32.provenance["memory"]["weights_bytes"]
    np.testing.assert_allclose(run_all(backend, fp16, x), ref, atol=5e-3, rtol=5e-3)


@needs_onnx2tf
def test_onnx_to_nhwc_tflite_fp32_and_int8_match_onnxruntime(backend, tiny_onnx, tiny_data, reference, tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    x, ref = reference
    fp32 = backend.compile(Artifact.load(tiny_onnx), None, tmp_path, CompileOptions("fp32"))
    assert fp32.provenance["converter"].startswith("onnx2tf")
    # NHWC inside, NCHW for the caller
    assert list(Interpreter(str(fp32.path)).get_input_details()[0]["shape"]) == [1, 32, 32, 3]
    assert fp32.provenance["io"]["inputs"] == [{"name": "input", "perm": [0, 2, 3, 1]}]
    np.testing.assert_allclose(run_all(backend, fp32, x), ref, atol=1e-4, rtol=1e-4)

    int8 = backend.quantize(Artifact.load(tiny_onnx), open_data(tiny_data, [TINY]), QuantOptions(), tmp_path)
    got = run_all(backend, int8, x)
    assert int8.provenance["float_ops"] == {} and int8.provenance["bias_corrected_layers"] >= 5
    assert agreement(got, ref) >= 0.9 and cosine(got, ref) > 0.99


@needs_onnx2tf
def test_two_input_onnx_maps_each_input(backend, two_input_onnx, two_input_data, tmp_path):
    import onnxruntime as ort

    art = backend.compile(Artifact.load(two_input_onnx), None, tmp_path, CompileOptions("fp32"))
    perms = {b["name"]: b["perm"] for b in art.provenance["io"]["inputs"]}
    assert perms == {"image": [0, 2, 3, 1], "aux": None}
    data = np.load(two_input_data)
    feed = {"image": data["image"][:1], "aux": data["aux"][:1]}
    ref = ort.InferenceSession(str(two_input_onnx), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    with backend.runner(art, 1) as runner:
        got = runner.infer(feed)
    np.testing.assert_allclose(got["output"], ref, atol=1e-4, rtol=1e-4)


def test_onnx2tf_child_refuses_the_network():
    """The audit hook the onnx2tf child installs: any outbound connection fails before it is made."""
    code = ("import socket, sys\n"
            "from edgekit.backends.tflite.onnx2tf import refuse_network\n"
            "sys.addaudithook(refuse_network)\n"
            "socket.create_connection(('127.0.0.1', 9), timeout=1)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode != 0
    assert "conversion runs offline" in proc.stderr


def test_onnx2tf_sample_images_come_from_the_users_data(tiny_data):
    from edgekit.backends.tflite.convert import sample_images

    x = np.load(tiny_data)
    images = sample_images([TINY], [{"input": x[i:i + 1]} for i in range(30)])
    assert images.shape == (20, 32, 32, 3)  # at most 20, channels-last, as onnx2tf reads them
    np.testing.assert_array_equal(images, x[:20].transpose(0, 2, 3, 1))


def test_runner_names_an_input_it_cannot_map(backend, pt2_models, cli):
    fp32, _ = pt2_models
    bare = Artifact(path=fp32.path, format="tflite", inputs=[parse_input_spec("input:1x5x7x7")])
    with pytest.raises(InvalidInputError, match="input 'input': cannot map the shape 1x5x7x7"):
        backend.runner(bare, 1)
    # through the CLI: a feed of the wrong shape is exit 2 naming the input, no traceback
    result = cli("bench", fp32.path, "--input", "input:1x5x7x7", "--min-runs", "1", "--min-seconds", "0")
    assert result.exit_code == 2
    assert "input 'input'" in result.output and "Traceback" not in result.output


def test_bare_tflite_without_sidecar_guesses_channels_last(backend, tmp_path, tiny_data, reference):
    """A .tflite from elsewhere (no sidecar): NCHW specs map onto an NHWC model by shape."""
    import litert_torch

    from edgekit.backends.tflite.runner import TfliteRunner

    class Nhwc(torch.nn.Module):  # a model that really is channels-last at its input
        def forward(self, x):
            return x.mean(dim=(1, 2))

    model = litert_torch.convert(Nhwc().eval(), (torch.zeros(1, 32, 32, 3),)).model_content()
    x = np.load(tiny_data)[:1]
    with TfliteRunner(model, [TINY], None, 1) as runner:
        out = next(iter(runner.infer({"input": x}).values()))
    np.testing.assert_allclose(out, x.mean(axis=(2, 3)), rtol=1e-5, atol=1e-6)


class _Cumprod(torch.nn.Module):
    def forward(self, x):
        return torch.cumprod(x, dim=1)


class _Offset(torch.nn.Module):
    """Outputs sit on a large constant: int8 rounds the tiny variation away (a known TFLite failure)."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 2)
        with torch.no_grad():
            self.fc.weight.fill_(1.0)
            self.fc.bias.fill_(1000.0)

    def forward(self, x):
        return self.fc(x)


def test_unsupported_pytorch_op_is_exit_4_naming_op_and_node(cli, tmp_path):
    pt2 = save_pt2(_Cumprod().eval(), tmp_path / "cum.pt2", [parse_input_spec("x:1x8")])
    result = cli("compile", pt2.path, "--target", "tflite", "-o", tmp_path / "out")
    assert result.exit_code == 4, result.output
    assert "aten.cumprod" in result.output and "node 'cumprod'" in result.output
    assert "Traceback" not in result.output
    assert not list(tmp_path.glob("out/*.tflite"))


@needs_onnx2tf
def test_unsupported_onnx_op_is_exit_4_naming_op_and_node(cli, tmp_path):
    import onnx
    from onnx import TensorProto, helper

    w = np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], name="conv0", pads=[1, 1, 1, 1]),
         helper.make_node("LpPool", ["c"], ["y"], name="pool_lp", kernel_shape=[2, 2], strides=[2, 2], p=2)],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 4, 4])],
        [onnx.numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save(model, tmp_path / "lp.onnx")
    result = cli("compile", tmp_path / "lp.onnx", "--target", "tflite", "-o", tmp_path / "out")
    assert result.exit_code == 4, result.output
    assert "LpPool" in result.output and "pool_lp" in result.output
    assert "Traceback" not in result.output


def test_output_stuck_at_one_value_is_an_accuracy_failure(cli, tmp_path):
    pt2 = save_pt2(_Offset().eval(), tmp_path / "offset.pt2", [parse_input_spec("x:1x4")])
    np.save(tmp_path / "calib.npy", 0.01 * np.random.default_rng(0).standard_normal((16, 4)).astype(np.float32))
    # static ranges: by default a model of fully-connected layers quantizes its activations at run time instead
    result = cli("quantize", pt2.path, "--target", "tflite", "--calib", tmp_path / "calib.npy", "--method", "minmax",
                 "-o", tmp_path / "out")
    assert result.exit_code == 1, result.output
    assert "same output for all 16 calibration samples" in result.output
    assert not (tmp_path / "out" / "offset.int8.tflite").exists()


def test_compile_a_pytorch_factory_from_the_cli(cli, tmp_path):
    models = Path(__file__).parent / "models.py"
    result = cli("compile", f"{models}:tiny_cnn", "--input", "input:1x3x32x32", "--target", "tflite",
                 "-o", tmp_path, "--json")
    assert result.exit_code == 0, result.output
    art = Artifact.load(json.loads(result.output)["path"])
    assert art.format == "tflite" and (tmp_path / "model.pt2").exists()  # the factory travels as a .pt2
    assert art.provenance["converter"].startswith("litert-torch") and art.inputs == [TINY]


def test_compile_int8_without_calibration_points_to_quantize(cli, tiny_pt2, tmp_path):
    result = cli("compile", tiny_pt2.path, "--target", "tflite", "--precision", "int8", "-o", tmp_path)
    assert result.exit_code == 2
    assert "calibration data" in result.output and "edgekit quantize" in result.output


def test_quantize_rejects_an_exclude_that_matches_nothing(backend, tiny_pt2, tiny_data, tmp_path):
    with pytest.raises(InvalidInputError, match="matches no op"):
        backend.quantize(tiny_pt2, open_data(tiny_data, [TINY]), QuantOptions(exclude=("*no_such_layer*",)), tmp_path)
    keep_fc = QuantOptions(exclude=("FULLY_CONNECTED",))
    kept = backend.quantize(tiny_pt2, open_data(tiny_data, [TINY]), keep_fc, tmp_path)
    assert kept.provenance["float_ops"] == {"FULLY_CONNECTED": 1}


def test_deploy_to_raspberry_pi_profile(cli, tiny_data, tmp_path):
    models = Path(__file__).parent / "models.py"
    result = cli("deploy", f"{models}:tiny_cnn", "--input", "input:1x3x32x32", "--profile", "raspberry-pi-5",
                 "--calib", tiny_data, "--min-seconds", "0.2", "-o", tmp_path, "--json")
    report = json.loads((tmp_path / "report.json").read_text())
    rows = {r["precision"]: r for r in report["results"]}
    assert set(rows) == {"fp32", "int8"}, result.output
    for r in rows.values():
        assert r["target"] == "tflite" and r["status"] == "ok", r["error"]
        assert r["latency_ms"]["threads"] == 4
        assert r["artifact"]["path"].endswith(".tflite")
        assert r["artifact"]["provenance"]["converter"].startswith("litert-torch")  # from the .pt2, not the ONNX
    assert rows["fp32"]["accuracy"]["top1_agreement"] == 1.0
    assert rows["int8"]["accuracy"]["top1_agreement"] >= 0.9 and not rows["int8"]["accuracy"]["constant_output"]


def test_backend_imports_no_runtime_and_says_what_to_install(tmp_path):
    code = ("import sys\n"
            "for m in ('ai_edge_litert', 'tflite_runtime'): sys.modules[m] = None\n"
            "import edgekit.backends.tflite.backend as t\n"
            "heavy = ('litert_torch', 'ai_edge_quantizer', 'tensorflow', 'onnx2tf', 'torch')\n"
            "heavy = [m for m in heavy if m in sys.modules]\n"
            "assert not heavy, heavy\n"
            "from edgekit.backends.registry import get_backend\n"
            "from edgekit.core.errors import TargetUnavailableError\n"
            "try:\n"
            "    get_backend('tflite').check_available()\n"
            "except TargetUnavailableError as e:\n"
            "    print('EXIT', e.exit_code, e.hint)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "EXIT 3 pip install 'edgekit[tflite]'" in proc.stdout


def test_quantize_and_compile_refuse_other_formats(backend, tmp_path):
    art = Artifact(path=tmp_path / "m.xml", format="openvino-ir")
    with pytest.raises(InvalidInputError):
        backend.compile(art, None, tmp_path, CompileOptions("fp32"))
    with pytest.raises(InvalidInputError):
        backend.runner(art)
