"""ONNX Runtime calibration: the method `auto` picks, and strides, so memory follows the stride, not the data."""

from __future__ import annotations

import onnx
import pytest
from onnx import numpy_helper

import edgekit
from edgekit.onnx import calibration_memory
from edgekit.onnx.calibration_memory import activation_bytes, calibration_stride


def test_stride_divides_the_samples_and_fits_the_budget():
    assert calibration_stride(80, 424_000_000, budget=2 << 30) == 2  # YOLOv8s at 640 px: 424 MB a sample
    assert calibration_stride(80, 100_000_000, budget=2 << 30) == 10
    assert calibration_stride(81, 100_000_000, budget=2 << 30) == 9
    assert calibration_stride(64, 1_000, budget=2 << 30) is None  # all at once fits
    assert calibration_stride(83, 100_000_000, budget=2 << 30) == 1  # a prime count: one at a time
    assert calibration_stride(1, 10**12) is None


def test_activation_bytes_from_inferred_shapes(tiny_onnx, tmp_path):
    from edgekit.backends.onnxruntime import preprocess_for_quantization

    prepared = preprocess_for_quantization(tiny_onnx, tmp_path / "prepared.onnx")
    per_sample = activation_bytes(prepared)
    # the tiny CNN's first conv alone writes 8 channels x 32 x 32 float32
    assert per_sample is not None and per_sample >= 8 * 32 * 32 * 4


def _scales(path) -> dict:
    model = onnx.load(str(path))
    return {i.name: numpy_helper.to_array(i).tolist() for i in model.graph.initializer if i.name.endswith("_scale")}


@pytest.mark.parametrize("method", ["minmax", "percentile"])
def test_strided_calibration_runs_and_minmax_ranges_are_unchanged(method, tiny_onnx, tiny_data, tmp_path, monkeypatch):
    whole = edgekit.quantize(str(tiny_onnx), target="onnxruntime", calib=str(tiny_data), method=method,
                             output=str(tmp_path / "whole"))
    seen = []  # a budget of one byte forces strides of one sample
    real = calibration_memory.calibration_stride
    monkeypatch.setattr("edgekit.backends.onnxruntime.calibration_stride",
                        lambda n, b, budget=1: seen.append(real(n, b, budget)) or seen[-1])
    strided = edgekit.quantize(str(tiny_onnx), target="onnxruntime", calib=str(tiny_data), method=method,
                               output=str(tmp_path / "strided"))
    assert seen == [1]
    a, b = _scales(whole.artifact.path), _scales(strided.artifact.path)
    assert a.keys() == b.keys() and len(a) > 4
    if method == "minmax":  # min/max merge exactly, stride by stride
        assert a == b


def test_auto_method_is_percentile_for_a_cnn_and_the_search_tries_minmax(tiny_onnx, tiny_data, tmp_path):
    from edgekit.backends.base import QuantOptions
    from edgekit.backends.registry import get_backend

    auto = edgekit.quantize(str(tiny_onnx), target="onnxruntime", calib=str(tiny_data), output=str(tmp_path / "a"))
    assert auto.artifact.provenance["calibration"] == "percentile"
    assert auto.artifact.provenance["calibration_choice"] == "auto: percentile"
    given = edgekit.quantize(str(tiny_onnx), target="onnxruntime", calib=str(tiny_data), method="minmax",
                             output=str(tmp_path / "m"))
    assert given.artifact.provenance["calibration"] == "minmax" and "calibration_choice" not in given.artifact.provenance
    methods = [v.get("method") for v in get_backend("onnxruntime").calibration_variants(QuantOptions(), tiny_onnx)]
    assert "minmax" in methods and "percentile" not in methods  # the search tries what auto did not pick
