"""What each registered target declares about itself: the capabilities the callers rely on instead of its name."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from edgekit.backends.base import Backend, QuantOptions, SensitivityTask
from edgekit.backends.registry import BACKENDS, get_backend, target_for_format
from edgekit.backends.tflite.backend import REFUSE_CONSTANT_OUTPUT
from edgekit.core.artifact import Artifact
from edgekit.core.data import open_data
from edgekit.core.errors import InvalidInputError, TargetUnavailableError
from edgekit.core.tensors import parse_input_spec
from edgekit.onnx.sensitivity import LayerError
from edgekit.stages.export import ExportOptions, export_onnx
from edgekit.stages.inspect import inspect_artifact


@pytest.fixture(scope="module")
def transformer_onnx(tmp_path_factory) -> Path:
    from test_smoothquant import TinyTransformer

    path = tmp_path_factory.mktemp("transformer") / "transformer.onnx"
    torch.manual_seed(0)
    export_onnx(TinyTransformer().eval(), path,
                ExportOptions(inputs=(parse_input_spec("x:1x8x64"),), dynamic_batch=False), source_name="t")
    return path


@pytest.fixture(scope="module")
def tiny_calib(tiny_onnx, tiny_data):
    return open_data(tiny_data, Artifact.load(tiny_onnx).inputs, limit=16)


def test_every_target_is_a_backend_whose_formats_lead_back_to_it():
    for name in BACKENDS:
        backend = get_backend(name)
        assert isinstance(backend, Backend) and backend.name == name
        assert target_for_format(backend.deploy_format) == name
    assert target_for_format("ort") == "onnxruntime"  # compile's ORT-format output runs on ONNX Runtime
    assert target_for_format("something-else") == "onnxruntime"


def test_declared_capabilities_are_what_deploy_and_quantize_rely_on():
    declared = {name: (b.prefers_pytorch, b.builds_on_device, b.has_cpu_fallback, b.supports_float_fallback)
                for name, b in ((n, get_backend(n)) for n in BACKENDS)}
    assert declared == {
        "onnxruntime": (False, False, False, True),
        "openvino": (False, False, False, True),
        "tflite": (True, False, False, True),  # converts the torch.export .pt2 (no ONNX round trip)
        "tensorrt": (False, True, True, True),  # engines are built on the device; the CPU checks the Q/DQ ONNX
    }


def test_tensorrt_quantizes_on_any_cpu_and_others_refuse_fp16_onnx_as_the_cli_did(tiny_onnx, tmp_path):
    get_backend("tensorrt").check_quantize_available()  # only ONNX Runtime needed, no TensorRT nor GPU
    fp16 = get_backend("tensorrt").fp16_onnx(Artifact.load(tiny_onnx), tmp_path)
    assert fp16.format == "onnx" and fp16.precision == "fp16"
    with pytest.raises(InvalidInputError) as e:
        get_backend("onnxruntime").fp16_onnx(Artifact.load(tiny_onnx), tmp_path)
    assert e.value.message == "--precision fp16 is a tensorrt step, not onnxruntime"
    assert e.value.hint == "edgekit compile MODEL --target onnxruntime --precision fp16"
    with pytest.raises(TargetUnavailableError):
        get_backend("openvino").cpu_fallback(Artifact.load(tiny_onnx), None, "fp32", QuantOptions(), tmp_path)
    assert get_backend("tensorrt").cpu_fallback(Artifact.load(tiny_onnx), None, "fp32", QuantOptions(),
                                                tmp_path).path == tiny_onnx  # fp32: built from the ONNX as it is


def test_calibration_variants_follow_the_target(tiny_onnx, transformer_onnx):
    def smoothed(name, path):
        return any(v.get("extra", {}).get("smooth_quant") for v in get_backend(name).calibration_variants(
            QuantOptions(), path))

    # ONNX Runtime smooths a transformer by default (edgekit.onnx.attention): no variant to offer
    assert not smoothed("onnxruntime", transformer_onnx) and smoothed("tensorrt", transformer_onnx)
    assert smoothed("openvino", transformer_onnx) and not smoothed("tflite", transformer_onnx)
    assert not smoothed("onnxruntime", tiny_onnx)  # a CNN has no LayerNorm -> MatMul to smooth
    ort = get_backend("onnxruntime").calibration_variants(QuantOptions(), tiny_onnx)
    assert ort[-1] == {"method": "entropy", "cost": 6}  # the slow one last, with what it costs
    # auto's ranges depend on the model; static min/max over all samples is the one other setting
    assert get_backend("tflite").calibration_variants(QuantOptions(), tiny_onnx) == [{"method": "minmax"}]


def test_only_tflite_builds_the_int8_it_refuses_for_the_search():
    quant = QuantOptions(extra={"bias_correction": True})
    assert get_backend("tflite").measurable_quant_options(quant).extra == {"bias_correction": True,
                                                                           REFUSE_CONSTANT_OUTPUT: False}
    assert all(get_backend(n).measurable_quant_options(quant) is None for n in BACKENDS if n != "tflite")


def test_runner_timings_default_to_none(tiny_onnx):
    with get_backend("onnxruntime").runner(Artifact.load(tiny_onnx)) as runner:
        runner.reset_timings()
        runner.infer({"input": np.zeros((1, 3, 32, 32), np.float32)})
        assert runner.timing_report(skip=0) is None and runner.load_ms > 0


def test_onnxruntime_ranks_layers_on_its_own_qdq_graph(tiny_onnx, tiny_calib, tmp_path):
    ort = get_backend("onnxruntime")
    reference = Artifact.load(tiny_onnx)
    int8 = ort.quantize(reference, tiny_calib, QuantOptions(max_samples=16), tmp_path / "int8")
    task = SensitivityTask(int8, QuantOptions(max_samples=16), reference, reference, tiny_calib, tiny_calib, 4,
                           tmp_path / "work")
    ranking = ort.layer_sensitivity(task)
    assert ranking.rows and all(isinstance(r, LayerError) for r in ranking.rows)
    assert {r.name for r in ranking.rows} <= ranking.names  # each ranked layer can be excluded by name
    assert not (tmp_path / "work" / "proxy").exists()  # its own Q/DQ ONNX: no proxy was built


def test_openvino_inspects_and_ranks_its_int8_ir(tiny_onnx, tiny_calib, tmp_path):
    pytest.importorskip("nncf")
    ov = get_backend("openvino")
    reference = Artifact.load(tiny_onnx)
    quant = QuantOptions(max_samples=16, extra={"device": "CPU"})
    ir = ov.quantize(reference, tiny_calib, quant, tmp_path / "ir8")
    rows = ov.inspect_layers(ir, tiny_onnx, tiny_calib, 4)
    assert rows and all(isinstance(r, LayerError) for r in rows)
    assert [r.name for r in inspect_artifact(ir, tiny_onnx, tiny_calib, 4)] == [r.name for r in rows]
    ranking = ov.layer_sensitivity(SensitivityTask(ir, quant, reference, reference, tiny_calib, tiny_calib, 4,
                                                   tmp_path / "work"))
    assert [r.name for r in ranking.rows] == [r.name for r in rows]  # on the IR itself, named by OpenVINO ops
    assert {n for r in rows for n in r.float_nodes} <= ranking.names


def test_inspect_quant_refuses_formats_no_target_reads(tmp_path):
    engine = Artifact(tmp_path / "model.engine", "tensorrt-engine", "int8", "tensorrt")
    with pytest.raises(InvalidInputError, match="inspect-quant does not read tensorrt-engine artifacts"):
        inspect_artifact(engine, tmp_path / "model.onnx", [], 4)
