"""Accuracy-aware int8 and inspect-quant on a tiny CNN with one deliberately sensitive layer.

conv2's output channel 0 is OUTLIER times larger than the others (conv3 scales it back down, so
the FP32 function is an ordinary CNN). Per-tensor int8 activations of conv2's output then have a
step far larger than the other channels: int8 destroys them, and with them the logits.
"""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
import torch
from torch import nn

from edgekit.core.artifact import Artifact
from edgekit.core.data import open_data
from edgekit.core.tensors import parse_input_spec
from edgekit.stages.export import ExportOptions, export_onnx
from edgekit.stages.validate import validate_artifact

OUTLIER = 2000.0
BUDGET = "5"  # points of top-1 disagreement on confident samples


class Planted(nn.Module):
    def __init__(self, outlier: float = OUTLIER):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1)
        self.conv3 = nn.Conv2d(16, 16, 1)
        self.conv4 = nn.Conv2d(16, 16, 3, padding=1, stride=2)
        self.fc = nn.Linear(16, 10)
        with torch.no_grad():
            for m in (self.conv1, self.conv2, self.conv3, self.conv4, self.fc):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / m.weight[0].numel()) ** 0.5)
                m.bias.zero_()
            self.conv2.weight[0] *= outlier
            self.conv2.bias[0] = outlier
            self.conv3.weight[:, 0] /= outlier
            self.fc.weight *= 4  # confident logits: agreement is measured on confident samples

    def forward(self, x):
        x = torch.relu(self.conv1(x))
        x = self.conv2(x)
        x = torch.relu(self.conv3(x))
        x = torch.relu(self.conv4(x))
        return self.fc(x.mean((2, 3)))


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("planted") / "planted.onnx"
    export_onnx(Planted().eval(), out, ExportOptions(inputs=(parse_input_spec("input:1x3x32x32"),)),
                source_name="planted")
    return out


def planted_node(model_path: Path) -> str:
    """The ONNX node of conv2 (the layer with the huge channel), found by its weight."""
    model = onnx.load(str(model_path))
    return next(n.name for n in model.graph.node if n.op_type == "Conv" and "conv2.weight" in n.input)


def _quantize(cli, planted, data, out, target, *extra):
    return cli("quantize", planted, "--target", target, "--calib", data, "-o", out, "--json", *extra)


def _search_record(out: Path) -> dict:
    sidecars = [p for p in out.glob("*.json")]
    assert len(sidecars) == 1, sidecars
    return json.loads(sidecars[0].read_text())["provenance"]["accuracy_search"]


# the TensorRT Q/DQ ONNX is checked on the CPU (the id avoids conftest's GPU-only "tensorrt" keyword)
@pytest.mark.parametrize("target", ["onnxruntime", "openvino", pytest.param("tensorrt", id="trt_qdq_cpu")])
def test_search_keeps_the_planted_layer_in_float_and_meets_the_budget(cli, planted, tiny_data, tmp_path, target):
    if target == "openvino":
        pytest.importorskip("nncf")
    if target == "tensorrt":
        pytest.importorskip("onnxruntime.quantization")
    default = _quantize(cli, planted, tiny_data, tmp_path / "default", target, "--val", tiny_data)
    assert default.exit_code == 0, default.output
    assert json.loads(default.stdout)["accuracy"]["top1_agreement"] < 0.5  # the plant really breaks int8

    out = tmp_path / "searched"
    result = _quantize(cli, planted, tiny_data, out, target, "--accuracy-budget", BUDGET, "--val", tiny_data)
    assert result.exit_code == 0, result.output
    record = _search_record(out)
    assert record["searched"] and record["met"]
    assert planted_node(planted) in record["float_layers"]
    assert len(record["float_layers"]) <= 4  # the planted tensor's producer and consumer, not the model
    steps = [s for s in record["steps"] if not s.get("skipped")]
    assert not steps[0]["met"] and steps[0]["float_layers"] == []  # the default int8 was tried first
    assert all({"float_layers", "latency_p50_ms", "top1_agreement"} <= set(s) for s in steps if not s.get("failed"))
    # the artifact in the output folder is the chosen one, and it really meets the budget
    assert not (out / ".accuracy-search").exists()
    art = Artifact.load(json.loads(result.stdout)["path"])
    assert art.path.parent == out
    acc = validate_artifact(art, planted, open_data(str(tiny_data), art.inputs))
    assert (1 - acc["top1_agreement_confident"]) * 100 <= float(BUDGET)
    assert acc["cosine_mean"] > 0.99


def test_a_met_budget_does_no_search(cli, tiny_onnx, tiny_data, tmp_path):
    out = tmp_path / "q"  # the conftest TinyCNN quantizes well: int8 of it meets a loose budget as it is
    result = _quantize(cli, tiny_onnx, tiny_data, out, "onnxruntime", "--accuracy-budget", "50")
    assert result.exit_code == 0, result.output
    record = _search_record(out)
    assert record["searched"] is False and record["met"] is True
    assert len(record["steps"]) == 1 and record["float_layers"] == []
    assert not (out / ".accuracy-search").exists()


def test_an_unreachable_budget_exits_1_and_keeps_the_best_artifact(cli, planted, tiny_data, tmp_path):
    out = tmp_path / "q"
    # the planted tensor needs two float nodes; one is all the search may use
    result = cli("quantize", planted, "--target", "onnxruntime", "--calib", tiny_data, "-o", out,
                 "--accuracy-budget", "0", "--max-float-layers", "1")
    assert result.exit_code == 1, result.output
    assert "accuracy budget not met" in result.output
    record = _search_record(out)
    assert record["searched"] and not record["met"]
    assert len([s for s in record["steps"] if not s.get("skipped")]) >= 2  # calibration settings were tried
    kept = out / "planted.int8.onnx"
    assert kept.exists() and Artifact.load(kept).precision == "int8"
    chosen = record["steps"][record["chosen_step"]]
    best = max(s["cosine_mean"] for s in record["steps"] if s.get("cosine_mean") is not None)
    assert chosen["cosine_mean"] == best


def test_search_time_bound_stops_after_the_default(cli, planted, tiny_data, tmp_path):
    out = tmp_path / "q"
    result = cli("quantize", planted, "--calib", tiny_data, "-o", out, "--accuracy-budget", "5",
                 "--search-time", "0")
    assert result.exit_code == 1
    assert "time limit" in result.output
    assert len(_search_record(out)["steps"]) == 1


def test_the_search_takes_the_same_steps_however_little_time_seems_left(cli, planted, tiny_data, tmp_path,
                                                                        monkeypatch):
    """A loaded machine makes every build slower; the steps (and so the verdict) must not change with it."""
    import time

    from edgekit.stages.search import run as search_run
    from edgekit.stages.search import search as search_main

    class LoadedMachine:  # every build and measurement seems to take 100 s; the safety net's clock stays real
        monotonic = staticmethod(time.monotonic)

        def __init__(self):
            self.now = 0.0

        def perf_counter(self):
            self.now += 100.0
            return self.now

    def search(out):
        result = cli("quantize", planted, "--target", "onnxruntime", "--calib", tiny_data, "-o", out,
                     "--accuracy-budget", "0", "--max-float-layers", "1")
        assert result.exit_code == 1, result.output
        record = _search_record(out)
        return record, [(s["step"], tuple(s["float_layers"])) for s in record["steps"]]

    quiet, steps = search(tmp_path / "quiet")
    for module in (search_run, search_main):
        monkeypatch.setattr(module, "time", LoadedMachine())
    busy, busy_steps = search(tmp_path / "busy")
    assert busy_steps == steps
    assert any("entropy" in name for name, _ in steps)  # the slow calibration is in the sequence
    assert any(name.startswith("gain check") for name, _ in steps)
    assert quiet["ended_by"] == busy["ended_by"] == "steps" and quiet["chosen_step"] == busy["chosen_step"]


def test_negative_budget_is_invalid_input(cli, planted, tiny_data, tmp_path):
    result = cli("quantize", planted, "--calib", tiny_data, "-o", tmp_path, "--accuracy-budget", "-1")
    assert result.exit_code == 2
    assert "accuracy-budget" in result.output


@pytest.mark.parametrize("target", ["onnxruntime", "openvino"])
def test_inspect_quant_ranks_the_planted_layer_first(cli, planted, tiny_data, tmp_path, target):
    if target == "openvino":
        pytest.importorskip("nncf")
    assert _quantize(cli, planted, tiny_data, tmp_path, target).exit_code == 0
    artifact = next(p for p in tmp_path.iterdir() if p.suffix in (".onnx", ".xml"))
    result = cli("inspect-quant", artifact, "--reference", planted, "--data", tiny_data, "--json")
    assert result.exit_code == 0, result.output
    layers = json.loads(result.stdout)["layers"]
    assert layers[0]["name"] == planted_node(planted)
    assert layers[0]["sqnr_lost_db"] > 10 > layers[1]["sqnr_lost_db"]
    # the plain table prints the same ranking, worst first
    table = cli("inspect-quant", artifact, "--reference", planted, "--data", tiny_data)
    assert table.exit_code == 0
    assert table.output.index(planted_node(planted)) < table.output.index(layers[1]["name"])


def test_inspect_quant_refuses_a_float_model(cli, planted, tiny_data):
    result = cli("inspect-quant", planted, "--reference", planted, "--data", tiny_data)
    assert result.exit_code == 2
    assert "QuantizeLinear" in result.output


def test_deploy_with_budget_reports_float_layers(cli, planted, tiny_data, tmp_path):
    out = tmp_path / "deploy"
    result = cli("deploy", planted, "--profile", "x86-onnxruntime-cpu", "--calib", tiny_data,
                 "--precision", "int8", "--accuracy-budget", BUDGET, "--min-seconds", "0.1", "-o", out, "--json")
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout)["results"][0]
    assert row["passed"], row["violations"]
    search = row["artifact"]["provenance"]["accuracy_search"]
    assert search["met"] and planted_node(planted) in search["float_layers"]
    assert not (out / "onnxruntime-int8" / ".accuracy-search").exists()


@pytest.mark.slow  # litert-torch conversion: about a minute on two busy cores
def test_inspect_quant_ranks_the_planted_op_first_in_a_tflite(cli, tiny_data, tmp_path):
    pytest.importorskip("ai_edge_quantizer")
    pytest.importorskip("litert_torch")
    from edgekit.stages.export import save_pt2

    # a milder outlier: ai-edge-quantizer refuses the 2000x model outright (constant int8 output)
    pt2 = save_pt2(Planted(outlier=500.0).eval(), tmp_path / "planted.pt2", [parse_input_spec("input:1x3x32x32")])
    assert cli("compile", pt2.path, "--target", "tflite", "--input", "input:1x3x32x32", "-o",
               tmp_path / "float").exit_code == 0
    assert cli("quantize", pt2.path, "--target", "tflite", "--calib", tiny_data, "-o", tmp_path / "int8").exit_code == 0
    float_tfl = next((tmp_path / "float").glob("*.tflite"))
    int8_tfl = next((tmp_path / "int8").glob("*.tflite"))
    result = cli("inspect-quant", int8_tfl, "--reference", float_tfl, "--data", tiny_data, "--json")
    assert result.exit_code == 0, result.output
    layers = json.loads(result.stdout)["layers"]
    assert layers[0]["op"] == "CONV_2D" and "conv2;" in layers[0]["name"]  # litert-torch names ops by module
    assert layers[0]["sqnr_lost_db"] > 10 > layers[1]["sqnr_lost_db"]
    # the ONNX is not what a .tflite is compared with
    wrong = cli("inspect-quant", int8_tfl, "--reference", tmp_path / "planted.pt2", "--data", tiny_data)
    assert wrong.exit_code == 2


def test_the_profile_budgets_start_the_search_without_a_flag(cli, planted, tiny_onnx, tiny_data, tmp_path):
    profile = tmp_path / "budgeted.toml"
    profile.write_text('name = "budgeted"\n[runtime]\ntarget = "onnxruntime"\n[budgets]\nmin_cosine = 0.99\n')
    out = tmp_path / "deploy"
    result = cli("deploy", planted, "--profile", profile, "--calib", tiny_data, "--precision", "int8",
                 "--min-seconds", "0.1", "-o", out, "--json")
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout)["results"][0]
    search = row["artifact"]["provenance"]["accuracy_search"]
    assert search["searched"] and search["met"] and planted_node(planted) in search["float_layers"]
    assert any("min_cosine" in v for v in search["steps"][0]["violations"])  # the default int8 missed it
    assert row["passed"] and row["accuracy"]["cosine_mean"] >= 0.99
    # quantize with the same profile searches too, and a profile budget already met does no search
    q = cli("quantize", planted, "--profile", profile, "--calib", tiny_data, "-o", tmp_path / "q", "--json")
    assert q.exit_code == 0 and _search_record(tmp_path / "q")["met"]
    profile.write_text(profile.read_text().replace("min_cosine = 0.99", "min_cosine = 0.5"))
    q = cli("quantize", tiny_onnx, "--profile", profile, "--calib", tiny_data, "-o", tmp_path / "q0", "--json")
    record = _search_record(tmp_path / "q0")
    assert q.exit_code == 0 and not record["searched"] and len(record["steps"]) == 1


def test_search_variants_follow_the_model_and_the_target(planted, tmp_path):
    from test_smoothquant import TinyTransformer

    from edgekit.backends.base import QuantOptions
    from edgekit.backends.openvino.backend import FUSED_ATTENTION as OPENVINO_ATTENTION
    from edgekit.backends.registry import get_backend

    def calibration_variants(target, quant, reference):
        return get_backend(target).calibration_variants(quant, reference)

    transformer = tmp_path / "transformer.onnx"
    torch.manual_seed(0)
    export_onnx(TinyTransformer().eval(), transformer,
                ExportOptions(inputs=(parse_input_spec("x:1x8x64"),), dynamic_batch=False), source_name="t")
    cnn = calibration_variants("onnxruntime", QuantOptions(), planted)
    # a CNN's auto ranges are percentile (backends/onnxruntime.resolved_method): the search tries min/max;
    # nothing to smooth in a CNN
    assert [v for v in cnn if "cost" not in v] == [{"method": "minmax"}]
    assert cnn[-1]["method"] == "entropy"  # the slow one last
    assert calibration_variants("onnxruntime", QuantOptions(per_channel=False), planted)[0] == {"per_channel": True}
    ort = calibration_variants("onnxruntime", QuantOptions(), transformer)
    # a transformer is smoothed and keeps its MLP down-projections in float by default (edgekit.onnx.attention):
    # the search tries ranges, and the down-projections in float only when the profile turned that off
    assert ort[0] == {"method": "percentile"} and {"extra": {"smooth_quant": 0.5}} not in ort
    assert not [v for v in ort if "exclude" in v]
    int8_downs = calibration_variants("onnxruntime", QuantOptions(extra={"float_down_projections": False}), transformer)
    assert [len(v["exclude"]) for v in int8_downs if "exclude" in v] == [2]  # fc2 of both blocks
    ov = calibration_variants("openvino", QuantOptions(), transformer)
    assert {"exclude": (OPENVINO_ATTENTION,), "extra": {"smooth_quant": 0.5}} in ov
    assert {"extra": {"smooth_quant": 0.5}} not in ov  # already the transformer default there too
    assert calibration_variants("tflite", QuantOptions(extra={"bias_correction": False}), planted) == [
        {"method": "minmax"}, {"extra": {"bias_correction": True}}]
    assert calibration_variants("tflite", QuantOptions(method="minmax"), planted) == []
