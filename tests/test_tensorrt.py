"""TensorRT target: Q/DQ placement, quantizers, fp16, build plan, engine compatibility, deploy without TensorRT.

Everything up to the engine runs on a CPU. Engine build/run/bench tests are marked `tensorrt`
(skipped without TensorRT and an NVIDIA GPU, see conftest.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from edgekit.backends.base import CompileOptions, QuantOptions
from edgekit.backends.registry import get_backend
from edgekit.backends.tensorrt.modelopt import modelopt_installed
from edgekit.backends.tensorrt.plan import (
    BuildSettings,
    DeviceFacts,
    TrtVersion,
    check_engine_compatible,
    plan_build,
    shape_profiles,
    timing_cache_name,
)
from edgekit.backends.tensorrt.qdq import QdqSettings, name_unnamed_nodes, plan_placement, summarize_qdq
from edgekit.core.artifact import Artifact
from edgekit.core.data import open_data
from edgekit.core.errors import InvalidInputError, TargetUnavailableError
from edgekit.core.tensors import TensorSpec, parse_input_spec
from edgekit.stages.validate import compare, run_outputs, run_reference


def _has_tensorrt() -> bool:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False
    return True


needs_modelopt = pytest.mark.skipif(not modelopt_installed(), reason="nvidia-modelopt is not installed")
no_tensorrt = pytest.mark.skipif(_has_tensorrt(), reason="TensorRT is installed here")


def _nodes(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {n.name: n for n in model.graph.node}


def _producers(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {o: n for n in model.graph.node for o in n.output}


def _dq_inputs(model: onnx.ModelProto, node: onnx.NodeProto) -> list[int]:
    """Indices of `node`'s inputs fed by a DequantizeLinear."""
    prod = _producers(model)
    return [i for i, t in enumerate(node.input) if t in prod and prod[t].op_type == "DequantizeLinear"]


def _quantize(onnx_path, data_path, out_dir, **extra):
    backend = get_backend("tensorrt")
    source = Artifact.load(onnx_path)
    exclude = tuple(extra.pop("exclude", ()))
    opts = QuantOptions(method=extra.pop("method", "minmax"), exclude=exclude, extra=extra)
    return backend.quantize(source, open_data(str(data_path), source.inputs), opts, Path(out_dir))


def _accuracy(reference: Path, artifact: Artifact, data_path) -> dict:
    ref_backend, backend = get_backend("onnxruntime"), get_backend("tensorrt")
    data = open_data(str(data_path), Artifact.load(reference).inputs)
    with ref_backend.runner(Artifact.load(reference)) as r:
        ref = run_reference(r, data)
    with backend.runner(artifact) as r:
        assert "simulated on CPU" in r.effective_precision
        return compare(ref, run_outputs(r, data, ref.output_names))


@pytest.fixture(scope="module")
def ort_qdq(tiny_onnx, tiny_data, tmp_path_factory):
    return _quantize(tiny_onnx, tiny_data, tmp_path_factory.mktemp("trt-ort"), quantizer="onnxruntime")


# --- placement (pure) ----------------------------------------------------------------------

def test_placement_quantizes_weighted_ops_and_residual_add_not_depthwise(tiny_onnx):
    model = onnx.load(str(tiny_onnx))
    ops = {n.name: n.op_type for n in model.graph.node}
    p = plan_placement(model, QdqSettings())
    chosen = [ops[n] for n in p.quantize]
    assert chosen.count("Conv") == 4 and chosen.count("Gemm") == 1 and chosen.count("Add") == 1
    depthwise = [n for n, why in p.excluded.items() if why.startswith("depthwise")]
    assert len(depthwise) == 1 and ops[depthwise[0]] == "Conv"
    (add_name, index), = p.float_inputs
    producer = _producers(model)[_nodes(model)[add_name].input[index]]
    assert producer.op_type == "Conv" and producer.name in p.quantize  # the conv branch stays float


def test_placement_options_and_user_exclusions(tiny_onnx):
    model = onnx.load(str(tiny_onnx))
    ops = {n.name: n.op_type for n in model.graph.node}
    with_dw = plan_placement(model, QdqSettings(quantize_depthwise=True))
    assert sum(ops[n] == "Conv" for n in with_dw.quantize) == 5 and not with_dw.excluded
    no_add = plan_placement(model, QdqSettings(residual_add=False))
    assert "Add" not in {ops[n] for n in no_add.quantize} and not no_add.float_inputs
    gemm_out = plan_placement(model, QdqSettings(exclude=("Gemm",)))
    assert [ops[n] for n in gemm_out.excluded if gemm_out.excluded[n] == "excluded by the user"] == ["Gemm"]
    with pytest.raises(InvalidInputError, match="matches no node"):
        plan_placement(model, QdqSettings(exclude=("no_such_node",)))
    with pytest.raises(InvalidInputError, match="nothing to quantize"):
        plan_placement(model, QdqSettings(exclude=("Conv", "Gemm")))


def test_unknown_or_bad_options_are_usage_errors(tiny_onnx, tiny_data, tmp_path):
    with pytest.raises(InvalidInputError, match="unknown tensorrt option 'quantise_depthwise'"):
        _quantize(tiny_onnx, tiny_data, tmp_path, quantise_depthwise=True)
    with pytest.raises(InvalidInputError, match="quantizer"):
        _quantize(tiny_onnx, tiny_data, tmp_path, quantizer="tensorrt")
    assert not list(tmp_path.glob("*.onnx"))


# --- ONNX Runtime quantizer with TensorRT placement -----------------------------------------

def test_ort_qdq_structure_is_what_tensorrt_fuses(ort_qdq):
    model = onnx.load(str(ort_qdq.path))
    s = summarize_qdq(model)
    assert s.quantize_nodes == s.dequantize_nodes == 10  # 5 activations + 5 weights
    assert s.ops_with_dq_inputs == {"Add": 1, "Conv": 4, "Gemm": 1}
    assert s.symmetric and s.quantized_types == ("int8",) and s.float_outputs
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    nodes, prod = _nodes(model), _producers(model)
    for name in s.quantized_nodes:
        node = nodes[name]
        if node.op_type in ("Conv", "Gemm"):
            assert _dq_inputs(model, node) == [0, 1]  # activation and weight, bias stays float
            weight = prod[prod[node.input[1]].input[0]].input[0]  # DQ <- Q <- float weight
            assert s.per_channel_weights[weight] == 0
            assert inits[weight].dtype == np.float32  # Q/DQ pair kept on the float weight
    for node in model.graph.node:  # outputs are never re-quantized
        if node.op_type == "QuantizeLinear" and node.input[0] in prod:
            assert prod[node.input[0]].op_type not in ("Conv", "Gemm", "MatMul")
    add = next(n for n in model.graph.node if n.op_type == "Add")
    (quantized_input,) = _dq_inputs(model, add)
    assert prod[add.input[1 - quantized_input]].op_type == "Conv"  # the conv branch is float
    dw = next(n for n in model.graph.node if n.op_type == "Conv" and any(a.name == "group" and a.i > 1 for a in n.attribute))
    assert _dq_inputs(model, dw) == []


def test_ort_qdq_sidecar_and_numerics(ort_qdq, tiny_onnx, tiny_data):
    side = json.loads(ort_qdq.sidecar_path.read_text())
    p = side["provenance"]
    assert side["target"] == "tensorrt" and side["precision"] == "int8"
    assert p["quantizer"].startswith("onnxruntime.quantization") and p["calibration_samples"] == 64
    assert p["qdq"]["quantize_nodes"] == 10 and any("depthwise" in why for why in p["excluded_nodes"].values())
    acc = _accuracy(tiny_onnx, ort_qdq, tiny_data)
    assert acc["cosine_mean"] > 0.99 and acc["top1_agreement"] >= 0.9
    assert 20 < acc["sqnr_db"] < 80  # really quantized, and not broken


def test_excluded_nodes_stay_float(tiny_onnx, tiny_data, tmp_path):
    art = _quantize(tiny_onnx, tiny_data, tmp_path, quantizer="onnxruntime", exclude=("Gemm",), residual_add=False)
    model = onnx.load(str(art.path))
    gemm = next(n for n in model.graph.node if n.op_type == "Gemm")
    assert _dq_inputs(model, gemm) == []
    ops = summarize_qdq(model).ops_with_dq_inputs
    assert "Gemm" not in ops and ops["Conv"] == 4
    assert art.provenance["excluded_nodes"][gemm.name] == "excluded by the user"


def test_unnamed_nodes_get_names(tiny_onnx, tiny_data, tmp_path):
    model = onnx.load(str(tiny_onnx))
    for node in model.graph.node:
        node.name = ""
    onnx.save(model, str(tmp_path / "anon.onnx"))
    assert name_unnamed_nodes(model) and len({n.name for n in model.graph.node}) == len(model.graph.node)
    assert not name_unnamed_nodes(model)
    art = _quantize(tmp_path / "anon.onnx", tiny_data, tmp_path, quantizer="onnxruntime")
    assert summarize_qdq(onnx.load(str(art.path))).ops_with_dq_inputs["Conv"] == 4


def test_two_input_model(two_input_onnx, two_input_data, tmp_path):
    art = _quantize(two_input_onnx, two_input_data, tmp_path, quantizer="onnxruntime")
    s = summarize_qdq(onnx.load(str(art.path)))
    assert s.ops_with_dq_inputs["Gemm"] == 2 and s.ops_with_dq_inputs["Conv"] == 1
    assert _accuracy(two_input_onnx, art, two_input_data)["cosine_mean"] > 0.99


def test_auto_quantizer_is_recorded(tiny_onnx, tiny_data, tmp_path):
    art = _quantize(tiny_onnx, tiny_data, tmp_path, method="percentile")  # ModelOpt has no percentile
    assert art.provenance["quantizer"].startswith("onnxruntime")
    assert art.provenance["quantizer_note"]


# --- ModelOpt quantizer ------------------------------------------------------------------------

@needs_modelopt
def test_modelopt_qdq_in_a_child_process(tiny_onnx, tiny_data, tmp_path):
    import onnxruntime.quantization.calibrate as calibrate

    before = calibrate.create_calibrator
    art = _quantize(tiny_onnx, tiny_data, tmp_path)  # auto picks ModelOpt when it is installed
    assert art.provenance["quantizer"].startswith("nvidia-modelopt")
    assert calibrate.create_calibrator is before  # ModelOpt's ORT patches stayed in the child
    model = onnx.load(str(art.path))
    s = summarize_qdq(model)
    assert s.symmetric and s.quantized_types == ("int8",) and s.ops_with_dq_inputs.get("Conv") == 4
    assert all(axis == 0 for axis in s.per_channel_weights.values())
    dw = next(n for n in model.graph.node if n.op_type == "Conv" and any(a.name == "group" and a.i > 1 for a in n.attribute))
    assert _dq_inputs(model, dw) == []  # our exclusions reach ModelOpt
    assert _accuracy(tiny_onnx, art, tiny_data)["cosine_mean"] > 0.99


@needs_modelopt
def test_modelopt_refuses_percentile(tiny_onnx, tiny_data, tmp_path):
    with pytest.raises(InvalidInputError, match="no 'percentile'"):
        _quantize(tiny_onnx, tiny_data, tmp_path, quantizer="modelopt", method="percentile")


# --- fp16 ----------------------------------------------------------------------------------------

def test_fp16_onnx_keeps_float32_io(tiny_onnx, tiny_data, tmp_path):
    pytest.importorskip("onnxconverter_common")
    backend = get_backend("tensorrt")
    source = Artifact.load(tiny_onnx)
    art = backend.fp16_onnx(source, tmp_path, open_data(str(tiny_data), source.inputs))
    model = onnx.load(str(art.path))
    assert art.precision == "fp16" and art.provenance["kept_float32"] == {}
    assert {i.data_type for i in model.graph.initializer if i.dims} >= {onnx.TensorProto.FLOAT16}
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    acc = _accuracy(tiny_onnx, art, tiny_data)
    assert acc["cosine_mean"] > 0.9999 and acc["max_abs_err"] > 0  # fp16 rounding, nothing more


def _overflowing_model(path: Path) -> Path:
    """x -> Mul(2000) -> Sub(x*2000) -> Add(1): the Mul output (thousands) overflows fp16 sums."""
    big = numpy_helper.from_array(np.array(2000.0, np.float32), "big")
    one = numpy_helper.from_array(np.array(1.0, np.float32), "one")
    huge_w = numpy_helper.from_array(np.full((4,), 3e4, np.float32), "huge_w")
    nodes = [helper.make_node("Mul", ["x", "big"], ["scaled"], name="scale_up"),
             helper.make_node("Sub", ["scaled", "scaled"], ["zero"], name="cancel"),
             helper.make_node("Add", ["x", "one"], ["shifted"], name="shift"),
             helper.make_node("Mul", ["shifted", "huge_w"], ["weighted"], name="heavy"),
             helper.make_node("Add", ["zero", "weighted"], ["y"], name="join")]
    graph = helper.make_graph(nodes, "overflow", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4])], [big, one, huge_w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_fp16_keeps_float32_where_fp16_overflows(tmp_path):
    pytest.importorskip("onnxconverter_common")
    from edgekit.backends.tensorrt.fp16 import convert_to_fp16

    src = _overflowing_model(tmp_path / "over.onnx")
    data = tmp_path / "x.npy"
    np.save(data, np.random.default_rng(0).uniform(0.5, 2.0, (8, 4)).astype(np.float32))
    prov = convert_to_fp16(src, tmp_path / "over.fp16.onnx", open_data(str(data), [TensorSpec("x", (None, 4))]))
    kept = prov["kept_float32"]
    assert {"scale_up", "cancel", "heavy", "join"} <= set(kept) and "shift" not in kept
    assert "weight huge_w" in kept["heavy"] and "activations reach" in kept["scale_up"]
    without_data = convert_to_fp16(src, tmp_path / "static.fp16.onnx")  # only the weight check
    assert set(without_data["kept_float32"]) == {"heavy"}


# --- build plan (pure) ---------------------------------------------------------------------------

DYNAMIC = [TensorSpec("input", (None, 3, 224, 224))]
ORIN = DeviceFacts("Orin (nvgpu)", "8.7", arch="aarch64", integrated=True)
T4 = DeviceFacts("Tesla T4", "7.5")
A10 = DeviceFacts("NVIDIA A10", "8.6")


def test_plan_tensorrt_10_vs_11():
    ten = plan_build(DYNAMIC, "int8", "int8", BuildSettings(), TrtVersion.parse("10.13.3.9"), A10)
    eleven = plan_build(DYNAMIC, "int8", "int8", BuildSettings(), TrtVersion.parse("11.4.0"), A10)
    assert ten.network_flags == ("STRONGLY_TYPED",) and eleven.network_flags == ()
    for plan in (ten, eleven):
        assert plan.precision == "int8" and plan.builder_flags == () and plan.cleared_builder_flags == ()
        assert plan.optimization_level == 3 and plan.workspace_bytes is None and plan.hardware_compatibility is None
    assert ten.timing_cache_file == "timing-trt10.13.3-sm86-nvidia-a10.cache"
    assert eleven.timing_cache_file != ten.timing_cache_file
    assert plan_build(DYNAMIC, "fp16", "fp32", BuildSettings(), TrtVersion(11), A10).precision == "fp16"


def test_plan_refusals():
    with pytest.raises(InvalidInputError, match="Q/DQ"):
        plan_build(DYNAMIC, "fp32", "int8", BuildSettings(), TrtVersion(11), A10)
    with pytest.raises(TargetUnavailableError, match="too old"):
        plan_build(DYNAMIC, "int8", "int8", BuildSettings(), TrtVersion(8, 6, 1), A10)
    with pytest.raises(InvalidInputError, match="Jetson"):
        plan_build(DYNAMIC, "int8", "int8", BuildSettings(hardware_compatibility="ampere+"), TrtVersion(10, 3), ORIN)
    with pytest.raises(InvalidInputError, match="Ampere or newer"):
        plan_build(DYNAMIC, "int8", "int8", BuildSettings(hardware_compatibility="ampere+"), TrtVersion(10, 3), T4)
    for bad in ({"optimization_level": 6}, {"hardware_compatibility": "any"}, {"workspace_mb": 0}, {"max_batch": True}):
        with pytest.raises(InvalidInputError):
            BuildSettings.from_options(bad)


def test_plan_options_become_flags():
    s = BuildSettings.from_options({"workspace_mb": 2048, "optimization_level": 5, "hardware_compatibility": "ampere+",
                                    "version_compatible": True, "tf32": False, "timing_cache": False, "cuda_graph": True})
    plan = plan_build(DYNAMIC, "fp32", "fp32", s, TrtVersion(10, 8), A10)
    assert plan.workspace_bytes == 2048 << 20 and plan.optimization_level == 5
    assert plan.hardware_compatibility == "AMPERE_PLUS" and plan.builder_flags == ("VERSION_COMPATIBLE",)
    assert plan.cleared_builder_flags == ("TF32",) and plan.timing_cache_file is None
    assert json.loads(json.dumps(plan.to_dict()))["profiles"][0]["max"] == [1, 3, 224, 224]


def test_optimization_profiles():
    static = [TensorSpec("input", (1, 3, 32, 32))]
    assert shape_profiles(static, BuildSettings()) == ()
    (r,) = shape_profiles(DYNAMIC, BuildSettings(max_batch=8, opt_batch=4))
    assert (r.min, r.opt, r.max) == ((1, 3, 224, 224), (4, 3, 224, 224), (8, 3, 224, 224))
    (r,) = shape_profiles(DYNAMIC, BuildSettings(), (parse_input_spec("input:2x3x224x224"),))
    assert r.min == r.opt == r.max == (2, 3, 224, 224)
    seq = [TensorSpec("ids", (None, None), "int64")]
    (r,) = shape_profiles(seq, BuildSettings(shapes={"ids": "1x16,1x128,4x512"}))
    assert (r.min, r.opt, r.max) == ((1, 16), (1, 128), (4, 512))
    with pytest.raises(InvalidInputError, match="dynamic axis 1"):
        shape_profiles(seq, BuildSettings())
    with pytest.raises(InvalidInputError, match="not ordered"):
        shape_profiles(seq, BuildSettings(shapes={"ids": "1x128,1x16,4x512"}))
    with pytest.raises(InvalidInputError, match="does not fit"):
        shape_profiles(DYNAMIC, BuildSettings(shapes={"input": "1x3x224x224,1x3x224x224,1x3x256x256"}))
    with pytest.raises(InvalidInputError, match="opt_batch"):
        shape_profiles(DYNAMIC, BuildSettings(max_batch=2, opt_batch=4))


def test_timing_cache_is_per_device():
    v = TrtVersion(10, 13, 3)
    assert timing_cache_name(v, ORIN) == "timing-trt10.13.3-sm87-orin-nvgpu.cache"
    assert timing_cache_name(v, T4) != timing_cache_name(v, A10)


# --- engine compatibility --------------------------------------------------------------------------

BUILT = {"version": "10.13.3", "gpu": "NVIDIA A10", "compute_capability": "8.6",
         "hardware_compatibility": None, "version_compatible": False}


def test_engine_compatibility():
    assert check_engine_compatible(BUILT, TrtVersion(10, 13, 3), A10) == []
    with pytest.raises(TargetUnavailableError, match="TensorRT 10.13.3, this is TensorRT 10.14.0") as e:
        check_engine_compatible(BUILT, TrtVersion(10, 14), A10)
    assert "rebuild it on this device" in e.value.hint
    with pytest.raises(TargetUnavailableError, match="compute capability 8.6"):
        check_engine_compatible(BUILT, TrtVersion(10, 13, 3), T4)
    (warning,) = check_engine_compatible(BUILT, TrtVersion(10, 13, 3), DeviceFacts("NVIDIA RTX A6000", "8.6"))
    assert "rebuild for best latency" in warning
    portable = {**BUILT, "version_compatible": True, "hardware_compatibility": "AMPERE_PLUS"}
    assert check_engine_compatible(portable, TrtVersion(10, 15), DeviceFacts("NVIDIA L4", "8.9")) == []
    with pytest.raises(TargetUnavailableError, match="same major"):
        check_engine_compatible(portable, TrtVersion(11, 0), A10)
    with pytest.raises(TargetUnavailableError, match="same major"):
        check_engine_compatible(portable, TrtVersion(10, 8), A10)
    with pytest.raises(TargetUnavailableError, match="Ampere or newer"):
        check_engine_compatible(portable, TrtVersion(10, 13, 3), T4)
    same_cc = {**BUILT, "hardware_compatibility": "SAME_COMPUTE_CAPABILITY"}
    assert check_engine_compatible(same_cc, TrtVersion(10, 13, 3), DeviceFacts("NVIDIA RTX A6000", "8.6")) == []


# --- without TensorRT: exit 3 for engines, CPU-checked ONNX in deploy ---------------------------------

@no_tensorrt
def test_no_tensorrt_means_exit_3_with_a_hint(cli, tiny_onnx, tmp_path):
    with pytest.raises(TargetUnavailableError) as e:
        get_backend("tensorrt").check_available()
    assert "TensorRT is not installed" in e.value.message and "JetPack" in e.value.hint
    r = cli("compile", tiny_onnx, "--target", "tensorrt", "-o", tmp_path)
    assert r.exit_code == 3 and "TensorRT is not installed" in r.output and "JetPack" in r.output
    assert not list(tmp_path.iterdir())
    r = cli("doctor", "--json")
    assert "TensorRT is not installed" in json.loads(r.stdout)["targets"]["tensorrt"]["reason"]


def test_quantize_cli_needs_no_tensorrt(cli, tiny_onnx, tiny_data, tmp_path):
    r = cli("quantize", tiny_onnx, "--target", "tensorrt", "--calib", tiny_data, "--val", tiny_data,
            "-o", tmp_path, "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["artifact"]["format"] == "onnx" and out["artifact"]["provenance"]["qdq"]["quantize_nodes"] > 0
    assert out["accuracy"]["cosine_mean"] > 0.99
    assert Artifact.load(tmp_path / "tiny.qdq.onnx").target == "tensorrt"


@no_tensorrt
def test_deploy_without_tensorrt_checks_the_onnx_on_cpu(cli, tiny_onnx, tiny_data, tmp_path):
    r = cli("deploy", tiny_onnx, "--profile", "x86-nvidia-gpu", "--calib", tiny_data, "-o", tmp_path / "a",
            "--min-seconds", "0.1", "--json")
    assert r.exit_code == 0, r.output
    rows = {row["precision"]: row for row in json.loads(r.stdout)["results"]}
    int8 = rows["int8"]
    assert int8["status"] == "skipped" and int8["latency_ms"] is None and int8["passed"]
    assert int8["simulated"].startswith("QDQ simulated on CPU") and "engine not built" in int8["error"]
    assert int8["artifact"]["path"].endswith(".qdq.onnx") and (tmp_path / "a" / int8["artifact"]["path"]).exists()
    assert 0.99 < int8["accuracy"]["cosine_mean"] < 1.0
    assert rows["fp32"]["artifact"]["path"] == "reference.onnx" and rows["fp32"]["accuracy"]["cosine_mean"] > 0.9999
    r = cli("deploy", tiny_onnx, "--profile", "x86-nvidia-gpu", "--calib", tiny_data, "-o", tmp_path / "b",
            "--precision", "int8", "--min-seconds", "0.1", "--require-engine")
    assert r.exit_code == 3
    strict = tmp_path / "strict-gpu.toml"  # an impossible budget: agreement above 1
    strict.write_text('name = "strict-gpu"\n[runtime]\ntarget = "tensorrt"\nprecision = "int8"\n'
                      '[budgets]\nmin_top1_agreement = 1.01\n')
    r = cli("deploy", tiny_onnx, "--profile", strict, "--calib", tiny_data, "-o", tmp_path / "c",
            "--precision", "int8", "--min-seconds", "0.1")
    assert r.exit_code == 1 and "FAIL" in r.output


# --- on a machine with TensorRT and an NVIDIA GPU ------------------------------------------------------

@pytest.fixture(scope="module")
def gpu_engine(ort_qdq, tmp_path_factory):
    backend = get_backend("tensorrt")
    out = tmp_path_factory.mktemp("engine")
    return backend.compile(ort_qdq, None, out, CompileOptions("int8", (), {"max_batch": 4, "opt_batch": 2,
                                                                           "timing_cache_dir": str(out / "cache")}))


@pytest.mark.tensorrt
def test_engine_build_sidecar(gpu_engine):
    side = json.loads(gpu_engine.sidecar_path.read_text())
    trt_block = side["provenance"]["tensorrt"]
    assert side["format"] == "tensorrt-engine" and side["precision"] == "int8"
    assert trt_block["version"] and trt_block["gpu"] and "." in trt_block["compute_capability"]
    assert side["provenance"]["build"]["profiles"][0]["max"][0] == 4
    assert Path(side["provenance"]["build"]["timing_cache"]).exists()


@pytest.mark.tensorrt
def test_engine_outputs_match_onnx_runtime(gpu_engine, ort_qdq, tiny_onnx, tiny_data):
    acc = _accuracy(tiny_onnx, ort_qdq, tiny_data)
    backend = get_backend("tensorrt")
    data = open_data(str(tiny_data), Artifact.load(tiny_onnx).inputs)
    with get_backend("onnxruntime").runner(Artifact.load(tiny_onnx)) as r:
        ref = run_reference(r, data)
    with backend.runner(gpu_engine) as r:
        got = compare(ref, run_outputs(r, data, ref.output_names))
        batch = np.load(tiny_data)[:4]
        assert r.infer({"input": batch})[r.output_names[0]].shape[0] == 4  # the dynamic-batch profile
    assert abs(got["cosine_mean"] - acc["cosine_mean"]) < 0.005  # the engine computes the Q/DQ model


@pytest.mark.tensorrt
def test_engine_bench_has_trtexec_figures(gpu_engine):
    from edgekit.stages.bench import BenchOptions, bench_artifact

    block = bench_artifact(gpu_engine, None, BenchOptions(warmup=5, min_runs=20, min_seconds=0.2))
    dev = block["device_timing"]
    assert dev["gpu_compute_ms"]["p50"] > 0 and dev["h2d_ms"] > 0 and dev["throughput_qps"] > 0
    assert dev["transfers_included"] and dev["cuda_graph"] is False
    assert dev["gpu_compute_ms"]["p50"] <= dev["end_to_end_ms"]["p50"]


@pytest.mark.tensorrt
def test_cuda_graph_runner_matches(gpu_engine, tiny_data):
    from edgekit.backends.tensorrt.runner import TensorRtRunner

    x = {"input": np.load(tiny_data)[:1]}
    with TensorRtRunner(gpu_engine.path) as plain, TensorRtRunner(gpu_engine.path, cuda_graph=True) as graphed:
        want = plain.infer(x)[plain.output_names[0]]
        for _ in range(3):
            np.testing.assert_allclose(graphed.infer(x)[graphed.output_names[0]], want, rtol=1e-5, atol=1e-5)
        assert graphed.timing_report()["cuda_graph"] is True


@pytest.mark.tensorrt
def test_engine_from_other_tensorrt_is_refused(gpu_engine, tmp_path):
    import shutil

    copy = tmp_path / "old.engine"
    shutil.copyfile(gpu_engine.path, copy)
    side = json.loads(gpu_engine.sidecar_path.read_text())
    side["provenance"]["tensorrt"]["version"] = "9.0.0"
    (tmp_path / "old.engine.json").write_text(json.dumps(side))
    with pytest.raises(TargetUnavailableError, match="rebuild|TensorRT 9.0.0"):
        get_backend("tensorrt").runner(Artifact.load(copy))


@pytest.mark.tensorrt
def test_parser_errors_name_the_node(tmp_path):
    from edgekit.core.errors import BackendError

    node = helper.make_node("NoSuchOp", ["x"], ["y"], name="mystery_node", domain="edgekit.test")
    graph = helper.make_graph([node], "bad", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("edgekit.test", 1)])
    onnx.save(model, str(tmp_path / "bad.onnx"))
    with pytest.raises(BackendError, match="mystery_node"):
        get_backend("tensorrt").compile(Artifact.load(tmp_path / "bad.onnx"), None, tmp_path, CompileOptions())
    assert not list(tmp_path.glob("*.engine"))


@pytest.mark.tensorrt
def test_fp16_engine(tiny_onnx, tiny_data, tmp_path):
    art = get_backend("tensorrt").compile(Artifact.load(tiny_onnx), None, tmp_path, CompileOptions("fp16"))
    assert art.precision == "fp16" and (tmp_path / "tiny.fp16.onnx").exists()
    assert _accuracy_engine(tiny_onnx, art, tiny_data)["cosine_mean"] > 0.999


def _accuracy_engine(reference, artifact, data_path) -> dict:
    data = open_data(str(data_path), Artifact.load(reference).inputs)
    with get_backend("onnxruntime").runner(Artifact.load(reference)) as r:
        ref = run_reference(r, data)
    with get_backend("tensorrt").runner(artifact) as r:
        return compare(ref, run_outputs(r, data, ref.output_names))


def test_plan_enables_sparse_weights_for_2_4_models():
    plan = plan_build(DYNAMIC, "int8", "int8", BuildSettings(sparse_weights=True), TrtVersion(10, 8), A10)
    assert "SPARSE_WEIGHTS" in plan.builder_flags
    assert "SPARSE_WEIGHTS" not in plan_build(DYNAMIC, "int8", "int8", BuildSettings(), TrtVersion(10, 8), A10).builder_flags
