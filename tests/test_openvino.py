"""OpenVINO target: IR compile (fp32/fp16), NNCF int8, runner vs ONNX Runtime, shapes, CLI, errors."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekit.backends.base import CompileOptions, QuantOptions
from edgekit.backends.registry import get_backend
from edgekit.core.artifact import Artifact
from edgekit.core.data import open_data
from edgekit.core.errors import InvalidInputError, TargetUnavailableError
from edgekit.core.profiles import parse_profile

pytest.importorskip("openvino")
pytest.importorskip("nncf")

CPU_PROFILE = """
name = "ov-test"
[runtime]
target = "openvino"
precision = "int8"
threads = 2
[runtime.options]
device = "{device}"
"""


def profile(device: str = "CPU"):
    return parse_profile(CPU_PROFILE.format(device=device), "test.toml")


def ort_outputs(path, feed):
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, feed)


def ir_op_types(path) -> list[str]:
    import openvino as ov

    return [op.get_type_name() for op in ov.Core().read_model(str(path)).get_ops()]


def int8_constants(path) -> int:
    import openvino as ov

    return sum(op.get_type_name() == "Constant" and op.get_element_type().get_type_name() == "i8"
               for op in ov.Core().read_model(str(path)).get_ops())


def fed_by_fake_quantize(path) -> set[str]:
    """Op types whose input is quantized (NNCF folds weight quantizers into int8 constants)."""
    import openvino as ov

    return {t.get_node().get_type_name() for op in ov.Core().read_model(str(path)).get_ops()
            if op.get_type_name() == "FakeQuantize" for out in op.outputs() for t in out.get_target_inputs()}


@pytest.fixture(scope="module")
def ov():
    return get_backend("openvino")


@pytest.fixture(scope="module")
def fp32_ir(ov, tiny_onnx, tmp_path_factory):
    return ov.compile(Artifact.load(tiny_onnx), None, tmp_path_factory.mktemp("ir32"), CompileOptions("fp32"))


@pytest.fixture(scope="module")
def int8_ir(ov, tiny_onnx, tiny_data, tmp_path_factory):
    calib = open_data(tiny_data, Artifact.load(tiny_onnx).inputs)
    opts = QuantOptions(max_samples=32, extra={"device": "CPU"})
    return ov.quantize(Artifact.load(tiny_onnx), calib, opts, tmp_path_factory.mktemp("ir8"))


def tiny_batch(tiny_data, n=4):
    return {"input": np.load(tiny_data)[:n]}


def test_fp32_ir_matches_onnxruntime_and_runs_f32(ov, fp32_ir, tiny_onnx, tiny_data):
    assert fp32_ir.path.suffix == ".xml" and fp32_ir.path.with_suffix(".bin").exists()
    assert [p.suffix for p in fp32_ir.files()] == [".xml", ".bin"]
    feed = tiny_batch(tiny_data, 1)
    with ov.runner(fp32_ir, threads=2, profile=profile()) as runner:
        got = runner.infer(feed)
        # on AMX/avx512_bf16 CPUs OpenVINO would run bf16 without the hint: the runner must say f32
        assert runner.effective_precision == "f32"
    assert list(got) == ["output"]
    np.testing.assert_allclose(got["output"], ort_outputs(tiny_onnx, feed)[0], atol=1e-4, rtol=1e-4)


def test_sidecar_records_version_io_and_layout(fp32_ir):
    import openvino

    art = Artifact.load(fp32_ir.path)
    assert art.format == "openvino-ir" and art.precision == "fp32" and art.target == "openvino"
    assert art.provenance["openvino_version"] == openvino.__version__.split("-")[0]
    assert art.inputs[0].name == "input" and art.inputs[0].shape == (None, 3, 32, 32)
    assert art.outputs == ["output"]
    assert art.provenance["input_shapes"] == {"input": "?x3x32x32"}
    assert art.provenance["output_shapes"] == {"output": "?x10"}
    assert art.provenance["layout"] == {"input": "NCHW"}


def test_fp16_ir_compresses_weights_and_stays_close(ov, fp32_ir, tiny_onnx, tiny_data, tmp_path):
    fp16 = ov.compile(Artifact.load(tiny_onnx), None, tmp_path, CompileOptions("fp16"))
    assert fp16.path.name == "tiny.fp16.xml" and fp16.precision == "fp16"
    bin32, bin16 = fp32_ir.path.with_suffix(".bin").stat().st_size, fp16.path.with_suffix(".bin").stat().st_size
    assert bin16 < 0.6 * bin32, (bin16, bin32)
    feed = tiny_batch(tiny_data)
    with ov.runner(fp16, threads=2) as runner:
        got = runner.infer(feed)["output"]
        assert runner.effective_precision in ("f32", "bf16", "f16")
    ref = ort_outputs(tiny_onnx, feed)[0]
    assert np.abs(got - ref).max() < 0.05 * np.abs(ref).max()


def test_nncf_int8_ir_is_quantized_and_close(ov, int8_ir, tiny_onnx, tiny_data):
    assert int8_ir.precision == "int8" and int8_ir.path.name == "tiny.int8.xml"
    assert ir_op_types(int8_ir.path).count("FakeQuantize") >= 5
    p = int8_ir.provenance
    assert p["quantizer"].startswith("nncf ") and p["calibration_samples"] == 32
    assert p["fast_bias_correction"] is False and p["target_device"] == "CPU" and p["preset"] == "performance"
    feed = tiny_batch(tiny_data, 8)
    with ov.runner(int8_ir, threads=2, profile=profile()) as runner:
        got = runner.infer(feed)["output"]
        assert runner.effective_precision.startswith("int8+")
    ref = ort_outputs(tiny_onnx, feed)[0]
    cos = np.sum(got * ref, 1) / np.linalg.norm(got, axis=1) / np.linalg.norm(ref, axis=1)
    assert cos.min() > 0.99, cos
    assert not np.allclose(got, ref, atol=1e-6)  # really int8, not the float model


def test_int8_ir_without_sidecar_is_reported_as_int8(ov, int8_ir, tmp_path):
    for f in int8_ir.files():  # the IR as another tool would hand it over: no edgekit sidecar
        (tmp_path / f.name).write_bytes(f.read_bytes())
    bare = Artifact.load(tmp_path / int8_ir.path.name)
    assert bare.precision == "fp32"  # all a sidecar-less .xml can say
    with ov.runner(bare, threads=2) as runner:
        assert runner.effective_precision == "int8+f32"


def test_exclude_keeps_nodes_in_float(ov, int8_ir, tiny_onnx, tiny_data, tmp_path):
    calib = open_data(tiny_data, Artifact.load(tiny_onnx).inputs)
    art = ov.quantize(Artifact.load(tiny_onnx), calib, QuantOptions(max_samples=8, exclude=("Conv",)), tmp_path)
    assert "node_Conv_35/WithoutBiases" in art.provenance["excluded_nodes"]
    assert {"Convolution", "GroupConvolution", "MatMul"} <= fed_by_fake_quantize(int8_ir.path)
    kept = fed_by_fake_quantize(art.path)
    assert "MatMul" in kept and not kept & {"Convolution", "GroupConvolution"}
    # int8 weights (i8 constants): every conv and the classifier, versus the classifier alone
    assert int8_constants(int8_ir.path) == 6 and int8_constants(art.path) == 1


def test_dynamic_batch_is_kept(ov, fp32_ir, tiny_onnx, tiny_data):
    feed = tiny_batch(tiny_data, 3)
    with ov.runner(fp32_ir, threads=2) as runner:
        assert runner.input_specs[0].shape == (None, 3, 32, 32)
        out = runner.infer(feed)["output"]
    assert out.shape == (3, 10)
    np.testing.assert_allclose(out, ort_outputs(tiny_onnx, feed)[0], atol=1e-4, rtol=1e-4)


def test_cli_compile_reshapes_to_static_input(cli, tiny_onnx, tiny_data, tmp_path):
    r = cli("compile", tiny_onnx, "--target", "openvino", "--input", "input:2x3x32x32", "-o", tmp_path, "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["artifact"]["inputs"][0]["shape"] == [2, 3, 32, 32]
    assert data["artifact"]["provenance"]["reshaped"] == {"input": "2x3x32x32"}
    art = Artifact.load(tmp_path / "tiny.xml")
    with get_backend("openvino").runner(art, threads=2) as runner:
        assert runner.infer(tiny_batch(tiny_data, 2))["output"].shape == (2, 10)
        with pytest.raises(InvalidInputError, match="expects 2x3x32x32"):
            runner.infer(tiny_batch(tiny_data, 3))


def test_cli_quantize_json_output_is_clean(cli, tiny_onnx, tiny_data, tmp_path):
    # NNCF logs and draws progress bars on stdout; --json must still parse
    r = cli("quantize", tiny_onnx, "--target", "openvino", "--calib", tiny_data, "--max-samples", "8",
            "--val", tiny_data, "-o", tmp_path, "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["artifact"]["precision"] == "int8" and data["path"].endswith("tiny.int8.xml")
    assert data["accuracy"]["cosine_mean"] > 0.99
    assert sorted(p.name for p in tmp_path.iterdir()) == ["edgekit.log", "tiny.int8.bin", "tiny.int8.xml",
                                                          "tiny.int8.xml.json"]
    assert "[nncf] " in (tmp_path / "edgekit.log").read_text()  # NNCF's lines went there, not to stdout


def test_two_inputs_keep_their_names(ov, two_input_onnx, two_input_data, tmp_path):
    art = ov.compile(Artifact.load(two_input_onnx), None, tmp_path, CompileOptions("fp32"))
    feed = {k: v[:2] for k, v in np.load(two_input_data).items()}
    with ov.runner(art, threads=2) as runner:
        assert sorted(s.name for s in runner.input_specs) == ["aux", "image"]
        got = runner.infer(feed)
    np.testing.assert_allclose(next(iter(got.values())), ort_outputs(two_input_onnx, feed)[0], atol=1e-4, rtol=1e-4)


def test_deploy_profile_has_openvino_fp32_and_int8_rows(cli, tiny_onnx, tiny_data, tmp_path):
    r = cli("deploy", tiny_onnx, "--profile", "x86-openvino-cpu", "--calib", tiny_data, "--min-seconds", "0.2",
            "-o", tmp_path, "--json")
    assert r.exit_code == 0, r.output
    rows = {row["precision"]: row for row in json.loads(r.stdout)["results"]}
    assert set(rows) == {"fp32", "int8"} and all(row["status"] == "ok" for row in rows.values())
    assert rows["fp32"]["latency_ms"]["effective_precision"] == "f32"
    assert rows["int8"]["latency_ms"]["effective_precision"].startswith("int8+")
    assert rows["fp32"]["accuracy"]["cosine_min"] > 0.9999
    assert rows["int8"]["accuracy"]["cosine_mean"] > 0.99
    assert (tmp_path / "openvino-int8" / "reference.int8.bin").exists()
    assert "x86-openvino-cpu int8: ran in int8+" in (tmp_path / "report.md").read_text()


def _attention_onnx(path):
    """Single-head self-attention: MatMuls of two activations around a Softmax."""
    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.standard_normal((8, 8)).astype(np.float32), n) for n in ("Wq", "Wk", "Wv")]
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "Wq"], ["q"], name="q_proj"),
         helper.make_node("MatMul", ["x", "Wk"], ["k"], name="k_proj"),
         helper.make_node("MatMul", ["x", "Wv"], ["v"], name="v_proj"),
         helper.make_node("Transpose", ["k"], ["kt"], name="kt", perm=[0, 2, 1]),
         helper.make_node("MatMul", ["q", "kt"], ["scores"], name="scores"),
         helper.make_node("Softmax", ["scores"], ["probs"], name="softmax", axis=-1),
         helper.make_node("MatMul", ["probs", "v"], ["y"], name="context")],
        "attn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8])], initializer=weights)
    return _save(graph, path, [("", 17)])


def test_nncf_settings_follow_model_type_cpu_and_profile(tiny_onnx, tmp_path):
    from edgekit.backends.openvino.nncf import choose_settings
    from edgekit.backends.openvino.runtime import load_model
    from edgekit.core.hostinfo import cpu_info
    from edgekit.core.int8_cpu import VNNI_FLAGS

    attention = load_model(Artifact.load(_attention_onnx(tmp_path / "attn.onnx")))
    s = choose_settings(*attention, 10, QuantOptions(max_samples=4))
    assert (s.model_type, s.preset, s.subset_size, s.target_device) == ("transformer", "mixed", 4, "ANY")
    cnn = load_model(Artifact.load(tiny_onnx))
    s = choose_settings(*cnn, 10, QuantOptions(extra={"device": "CPU"}))
    assert (s.model_type, s.preset, s.subset_size, s.target_device) == (None, "performance", 10, "CPU")
    assert s.fast_bias_correction is False
    # VNNI/AMX int8 kernels cannot overflow: no 7-bit weights; AVX2's 16-bit pair sums can: 7-bit everywhere
    x86 = __import__("platform").machine().lower() in ("x86_64", "amd64")
    assert s.overflow_fix == ("disable" if set(cpu_info()["flags"]) & VNNI_FLAGS else "enable" if x86 else None)
    s = choose_settings(*cnn, 10, QuantOptions(extra={"overflow_fix": "enable", "preset": "mixed",
                                                       "fast_bias_correction": True}))
    assert (s.overflow_fix, s.preset, s.fast_bias_correction) == ("enable", "mixed", True)
    with pytest.raises(TargetUnavailableError, match="'TPU' is not an OpenVINO device"):
        choose_settings(*cnn, 10, QuantOptions(extra={"device": "TPU"}))
    assert choose_settings(*cnn, 10, QuantOptions()).activation_ranges == "minmax"
    with pytest.raises(InvalidInputError, match="activation_ranges = 'median'"):
        choose_settings(*cnn, 10, QuantOptions(extra={"activation_ranges": "median"}))


def test_histogram_activation_ranges_reach_nncf(ov, tiny_onnx, tiny_data, tmp_path):
    data = open_data(str(tiny_data), Artifact.load(tiny_onnx).inputs)
    arts = {r: ov.quantize(Artifact.load(tiny_onnx), data, QuantOptions(extra={"activation_ranges": r}), tmp_path / r)
            for r in ("minmax", "histogram")}
    assert arts["histogram"].provenance["activation_ranges"] == "histogram"
    # a histogram range is narrower than the min/max one: some activation FakeQuantize must differ
    assert _fake_quantize_ranges(ov, arts["minmax"]) != _fake_quantize_ranges(ov, arts["histogram"])


def _fake_quantize_ranges(ov, art) -> list:
    import openvino as ov_rt

    model = ov_rt.Core().read_model(str(art.path))
    ranges = []
    for op in model.get_ordered_ops():
        if op.get_type_name() == "FakeQuantize":
            low = op.input_value(1).get_node()
            if low.get_type_name() == "Constant":
                ranges.append(float(np.asarray(low.get_data()).ravel()[0]))
    return ranges


# --- bad input ---------------------------------------------------------------------------------

def _save(graph, path, opsets):
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture
def onnx_ml_model(tmp_path):
    """A real ONNX-ML op (what sklearn exporters emit) that OpenVINO has no conversion rule for."""
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["r"], name="relu0"),
         helper.make_node("LinearRegressor", ["r"], ["y"], name="regressor", domain="ai.onnx.ml",
                          coefficients=[1.0, 2.0, 3.0, 4.0], intercepts=[0.5], targets=1)],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1])])
    return _save(graph, tmp_path / "ml.onnx", [("", 17), ("ai.onnx.ml", 3)])


def test_unconvertible_op_names_op_type_and_onnx_node(cli, onnx_ml_model, tmp_path):
    out = tmp_path / "out"
    r = cli("compile", onnx_ml_model, "--target", "openvino", "-o", out)
    assert r.exit_code == 4
    assert "ai.onnx.ml.LinearRegressor" in r.output and "'regressor'" in r.output
    assert "Traceback" not in r.output
    # nothing half-written; the libraries' log is kept, and the error says where
    assert not out.exists() or [p.name for p in out.iterdir()] in ([], ["edgekit.log"])  # no half-written IR


@pytest.fixture
def reshape_fails_model(tmp_path):
    """Converts (spatial dims dynamic) but its Reshape cannot run on the calibration data's shape."""
    weight = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32), "W")
    shape = numpy_helper.from_array(np.array([-1, 7], np.int64), "shape")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "W"], ["c"], name="conv0", pads=[1, 1, 1, 1]),
         helper.make_node("Reshape", ["c", "shape"], ["y"], name="bad_reshape")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["M", 7])], initializer=[weight, shape])
    model = _save(graph, tmp_path / "fails.onnx", [("", 17)])
    data = tmp_path / "x.npy"
    np.save(data, np.random.default_rng(1).random((4, 3, 8, 8)).astype(np.float32))
    return model, data


def test_nncf_failure_names_node_and_op(cli, reshape_fails_model, tmp_path):
    model, data = reshape_fails_model
    out = tmp_path / "out"
    r = cli("quantize", model, "--target", "openvino", "--calib", data, "-o", out)
    assert r.exit_code == 4, r.output
    assert "nncf.quantize failed at ONNX node 'bad_reshape' (Reshape)" in r.output
    assert not out.exists() or [p.name for p in out.iterdir()] in ([], ["edgekit.log"])


def test_unknown_device_exits_3_listing_present_devices(ov, fp32_ir):
    with pytest.raises(TargetUnavailableError) as e:
        ov.runner(fp32_ir, threads=2, profile=profile("TPU"))
    assert e.value.exit_code == 3 and "'TPU' is not an OpenVINO device" in e.value.message
    assert "devices present: CPU" in e.value.message


def test_absent_gpu_exits_3_via_cli(cli, fp32_ir, tmp_path):
    import openvino

    if "GPU" in openvino.Core().available_devices:
        pytest.skip("this machine has an OpenVINO GPU")
    toml = tmp_path / "gpu.toml"
    toml.write_text(CPU_PROFILE.format(device="GPU"))
    r = cli("bench", fp32_ir.path, "--profile", toml, "--min-runs", "1", "--min-seconds", "0")
    assert r.exit_code == 3
    assert "OpenVINO device 'GPU' is not present on this machine; devices present: CPU" in r.output


@pytest.mark.parametrize("args, message", [
    (("--ignore", "no_such_node"), "--exclude/--ignore 'no_such_node' matches no node"),
    (("--method", "entropy"), "calibration method 'entropy' is not available with NNCF"),
])
def test_bad_quantize_options_exit_2(cli, tiny_onnx, tiny_data, tmp_path, args, message):
    r = cli("quantize", tiny_onnx, "--target", "openvino", "--calib", tiny_data, "-o", tmp_path / "o", *args)
    assert r.exit_code == 2, r.output
    assert message in r.output
    assert not (tmp_path / "o").exists()


def test_impossible_input_shape_exits_2(cli, tiny_onnx, tmp_path):
    r = cli("compile", tiny_onnx, "--target", "openvino", "--input", "input:1x3x32", "-o", tmp_path / "o")
    assert r.exit_code == 2, r.output
    assert "cannot give the model input shape input:1x3x32" in r.output and "input:?x3x32x32" in r.output
    assert not (tmp_path / "o").exists()


def test_unknown_profile_option_and_fp32_int8_compile_are_usage_errors(ov, tiny_onnx, tmp_path):
    with pytest.raises(InvalidInputError, match="unknown openvino option 'devcie'"):
        ov.compile(Artifact.load(tiny_onnx), None, tmp_path, CompileOptions("fp32", extra={"devcie": "CPU"}))
    with pytest.raises(InvalidInputError, match="int8 needs calibration data"):
        ov.compile(Artifact.load(tiny_onnx), None, tmp_path, CompileOptions("int8"))


def test_ir_without_bin_is_invalid_input(ov, fp32_ir, tmp_path):
    xml = tmp_path / "lonely.xml"
    xml.write_bytes(fp32_ir.path.read_bytes())
    with pytest.raises(InvalidInputError, match="not a readable OpenVINO IR"):
        ov.runner(Artifact.load(xml), threads=2)


def test_node_index_maps_openvino_names_to_onnx_nodes(tiny_onnx):
    from edgekit.backends.openvino.graph import NodeIndex

    index = NodeIndex.from_onnx(tiny_onnx)
    node = index.find_in("[CPU] Convolution node with name 'node_Conv_35/WithoutBiases' failed")
    assert (node.name, node.op, node.graph) == ("node_Conv_35", "Conv", "ONNX")
    assert index.lookup("output").name == "node_linear"  # an op named after its output tensor
    assert index.find_in("nothing named here") is None


def test_telemetry_is_declined(ov):
    from openvino_telemetry.utils.opt_in_checker import ConsentCheckResult, OptInChecker

    ov.check_available()
    # with no consent file OpenVINO's converter and NNCF would send usage events; edgekit never may
    assert OptInChecker().check(enable_opt_in_dialog=False, disable_in_ci=False) == ConsentCheckResult.DECLINED



def test_a_dead_node_left_by_the_onnx_frontend_no_longer_breaks_nncf():
    """silero-vad's converted model keeps Squeezes on a live Constant that reach no output; NNCF builds its graph
    from get_ops() and failed on them ("Could not find a node ... in NNCFGraph"). The IR round trip drops them."""
    import nncf
    import openvino as ov
    import openvino.opset13 as ops

    from edgekit.backends.openvino.runtime import dead_consumers, without_dead_consumers

    x = ops.parameter([1, 3, 8, 8], np.float32, name="x")
    w = ops.constant(np.random.default_rng(0).random((4, 3, 3, 3), np.float32))
    y = ops.relu(ops.convolution(x, w, [1, 1], [0, 0], [0, 0], [1, 1]))
    dead = ops.squeeze(w, ops.constant(np.array([0], np.int64)))  # held: a collected node leaves the graph
    dead.set_friendly_name("dead_squeeze")
    model = ov.Model([ops.result(y)], [x])
    data = nncf.Dataset([{"x": np.random.default_rng(1).random((1, 3, 8, 8), np.float32)}])
    assert dead_consumers(model) == ["dead_squeeze"]
    with pytest.raises(Exception, match="dead_squeeze"):
        nncf.quantize(model, data, subset_size=1)
    clean = without_dead_consumers(model)
    assert dead_consumers(clean) == []
    quantized = nncf.quantize(clean, data, subset_size=1)
    assert any(op.get_type_name() == "FakeQuantize" for op in quantized.get_ops())


def test_a_scalar_input_stays_a_scalar(tmp_path):
    """np.ascontiguousarray turns a 0-d feed into shape (1), which OpenVINO refuses for a rank-0 input (silero-vad's
    sample rate `sr`)."""
    graph = helper.make_graph([helper.make_node("Cast", ["sr"], ["f"], to=TensorProto.FLOAT),
                               helper.make_node("Mul", ["x", "f"], ["y"])], "scalar",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4]),
                               helper.make_tensor_value_info("sr", TensorProto.INT64, [])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    path = tmp_path / "scalar.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    backend = get_backend("openvino")
    art = backend.compile(Artifact.load(path), None, tmp_path / "ir", CompileOptions("fp32"))
    with backend.runner(art, 1) as runner:
        out = runner.infer({"x": np.ones((1, 4), np.float32), "sr": np.array(3, np.int64)})
    np.testing.assert_allclose(list(out.values())[0], np.full((1, 4), 3.0))
