"""Accuracy-aware int8 on the tflite target: the planted layer of tests/test_accuracy_aware.py is found on the
.tflite itself, kept in float through ai-edge-quantizer's per-op recipe, and the budget is met and reported.

Two changes to the planted model for this target, both on the module reused from test_accuracy_aware:
- its FP32 logits are centred (fc bias = minus their mean on the data): as built, it predicts one class for
  every tiny sample, so an int8 that collapses still "agrees" (ai-edge-quantizer's bias correction keeps
  that class) and no agreement budget can be missed;
- a milder outlier (300): from about 600 up, ai-edge-quantizer's int8 gives one output for every sample and
  edgekit refuses it before any search can start.
The searches calibrate with min/max over all samples (STATIC): what they test is the layer search, and the
default's mean of per-sample ranges clips these smooth random images, whose brightness varies more between
samples than within one (with it, the planted conv in float still left a 10.5-point drop, 5.3 at 6 layers).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert")
pytest.importorskip("litert_torch")
pytest.importorskip("ai_edge_quantizer")

import torch  # noqa: E402
from test_accuracy_aware import BUDGET, Planted  # noqa: E402

from edgekit.backends.base import QuantOptions  # noqa: E402
from edgekit.backends.registry import get_backend  # noqa: E402
from edgekit.backends.tflite import flatbuffer as fb  # noqa: E402
from edgekit.core.artifact import Artifact  # noqa: E402
from edgekit.core.data import open_data  # noqa: E402
from edgekit.core.tensors import parse_input_spec  # noqa: E402
from edgekit.stages.export import ExportOptions, export_onnx, save_pt2  # noqa: E402

INPUT = parse_input_spec("input:1x3x32x32")
OUTLIER = 300.0
PLANTED_CONV = 1  # conv2: the second CONV_2D of the graph
STATIC = ("--method", "minmax")

needs_onnx2tf = pytest.mark.skipif(
    any(__import__("importlib").util.find_spec(m) is None for m in ("onnx2tf", "tensorflow", "tf_keras")),
    reason="needs the tflite-onnx extra (onnx2tf + TensorFlow)",
)


def centred_planted(data: Path) -> torch.nn.Module:
    model = Planted(outlier=OUTLIER).eval()
    with torch.no_grad():
        model.fc.bias -= model(torch.from_numpy(np.load(data))).mean(0)
    return model


@pytest.fixture(scope="module")
def planted_pt2(tiny_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("planted-tflite") / "planted.pt2"
    return save_pt2(centred_planted(tiny_data), out, [INPUT]).path


def conv_outputs(tflite: Path) -> list[str]:
    """Output tensor names of the CONV_2D ops, in graph order (what the tflite target's --exclude matches)."""
    obj = fb.read(tflite.read_bytes())
    sg, types = obj.subgraphs[0], fb.op_type_names(obj)
    return [fb.tensor_name(sg.tensors[o.outputs[0]]) for o in sg.operators if types[o.opcodeIndex] == "CONV_2D"]


def check_search(record: dict, int8: Artifact) -> dict:
    """The search ranked the planted conv first, kept it (and little else) in float, and met the budget."""
    planted = conv_outputs(int8.path)[PLANTED_CONV]
    ranking = next(s["ranking"] for s in record["steps"] if s.get("ranking") is not None)
    assert ranking[0]["name"] == planted and ranking[0]["op"] == "CONV_2D"
    assert ranking[0]["sqnr_lost_db"] > 10 + ranking[1]["sqnr_lost_db"]  # by far the worst
    assert record["searched"] and record["met"], record["message"]
    assert planted in record["float_layers"] and len(record["float_layers"]) <= 4
    default = record["steps"][0]
    assert default["step"] == "default int8" and not default["met"] and default["accuracy_drop"] > 50
    chosen = record["steps"][record["chosen_step"]]
    assert chosen["met"] and chosen["accuracy_drop"] <= float(BUDGET) and chosen["cosine_mean"] > 0.99
    # the file itself computes those ops in float, and says so in its sidecar
    assert int8.provenance["float_ops"].get("CONV_2D", 0) >= 1 and planted in int8.provenance["excluded"]
    assert Artifact.load(int8.path).provenance["accuracy_search"] == record
    return chosen


def test_deploy_to_a_tflite_profile_keeps_the_planted_conv_in_float(cli, planted_pt2, tiny_data, tmp_path):
    result = cli("deploy", planted_pt2, "--input", "input:1x3x32x32", "--profile", "raspberry-pi-5",
                 "--calib", tiny_data, "--precision", "int8", "--accuracy-budget", BUDGET, "--min-seconds", "0.1",
                 "-o", tmp_path, "--json", *STATIC)
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout)["results"][0]
    assert row["target"] == "tflite" and row["passed"], row["violations"]
    int8 = Artifact.load(tmp_path / row["artifact"]["path"])
    assert int8.provenance["converter"].startswith("litert-torch")  # from the .pt2, named by module
    record = row["artifact"]["provenance"]["accuracy_search"]
    check_search(record, int8)
    assert "Conv2d_conv2;" in record["float_layers"][0]
    # deploy measured the kept artifact on its own: it really is within the budget
    assert (1 - row["accuracy"]["top1_agreement_confident"]) * 100 <= float(BUDGET)
    assert not (tmp_path / "tflite-int8" / ".accuracy-search").exists()
    md = (tmp_path / "report.md").read_text()
    assert "## Accuracy search: raspberry-pi-5 int8" in md and record["float_layers"][0] in md
    assert f"{len(record['float_layers'])} float layers kept" in md


@needs_onnx2tf
def test_quantize_onnx_to_tflite_with_a_budget(cli, tiny_data, tmp_path):
    # `quantize --accuracy-budget` measures against an FP32 ONNX, so the tflite comes from it (onnx2tf)
    onnx = export_onnx(centred_planted(tiny_data), tmp_path / "planted.onnx", ExportOptions(inputs=(INPUT,)),
                       source_name="planted").path
    out = tmp_path / "q"
    result = cli("quantize", onnx, "--target", "tflite", "--calib", tiny_data, "--accuracy-budget", BUDGET,
                 "-o", out, "--json", *STATIC)
    assert result.exit_code == 0, result.output
    int8 = Artifact.load(json.loads(result.stdout)["path"])
    assert int8.path.parent == out and int8.format == "tflite"
    check_search(int8.provenance["accuracy_search"], int8)


def test_exclude_by_op_output_name_keeps_that_op_in_float(planted_pt2, tiny_data, tmp_path):
    """ai-edge-quantizer matches recipe regexes in "<output>;": a name given to --exclude must reach it."""
    backend = get_backend("tflite")
    source, data = Artifact.load(planted_pt2), open_data(str(tiny_data), [INPUT])
    plain = backend.quantize(source, data, QuantOptions(), tmp_path / "plain")
    assert plain.provenance["float_ops"] == {}
    name = conv_outputs(plain.path)[PLANTED_CONV]
    kept = backend.quantize(source, data, QuantOptions(exclude=(name,)), tmp_path / "kept")
    assert kept.provenance["excluded"] == [name] and kept.provenance["float_ops"] == {"CONV_2D": 1}
    obj = fb.read(kept.path.read_bytes())
    sg = obj.subgraphs[0]
    out = next(sg.tensors[o.outputs[0]] for o in sg.operators if fb.tensor_name(sg.tensors[o.outputs[0]]) == name)
    assert out.type == 0  # FLOAT32 in the TFLite schema


def test_quantize_pt2_to_tflite_with_a_budget_measures_against_the_reference(cli, tiny_data, tmp_path):
    model = centred_planted(tiny_data)
    pt2 = save_pt2(model, tmp_path / "planted.pt2", [INPUT]).path
    onnx = export_onnx(model, tmp_path / "planted.onnx", ExportOptions(inputs=(INPUT,)), source_name="planted").path
    out = tmp_path / "q"
    missing = cli("quantize", pt2, "--target", "tflite", "--calib", tiny_data, "--accuracy-budget", BUDGET,
                  "-o", out)
    assert missing.exit_code == 2 and "--reference" in missing.output and not out.exists()
    result = cli("quantize", pt2, "--target", "tflite", "--calib", tiny_data, "--accuracy-budget", BUDGET,
                 "--reference", onnx, "-o", out, "--json", *STATIC)
    assert result.exit_code == 0, result.output
    int8 = Artifact.load(json.loads(result.stdout)["path"])
    assert int8.provenance["converter"].startswith("litert-torch")  # converted from the .pt2, not the ONNX
    check_search(int8.provenance["accuracy_search"], int8)


def test_a_default_int8_tflite_refuses_is_searched_not_fatal(cli, tiny_data, tmp_path):
    """At outlier 1000 ai-edge-quantizer's int8 gives one output for every sample; `quantize` alone refuses
    it, while the search measures it, keeps the planted conv in float and meets the budget."""
    model = Planted(outlier=1000.0).eval()
    with torch.no_grad():
        model.fc.bias -= model(torch.from_numpy(np.load(tiny_data))).mean(0)
    pt2 = save_pt2(model, tmp_path / "planted.pt2", [INPUT]).path
    plain = cli("quantize", pt2, "--target", "tflite", "--calib", tiny_data, "-o", tmp_path / "plain", *STATIC)
    assert plain.exit_code == 1 and "one and the same output" in plain.output
    result = cli("deploy", pt2, "--input", "input:1x3x32x32", "--profile", "raspberry-pi-5", "--calib", tiny_data,
                 "--precision", "int8", "--accuracy-budget", BUDGET, "--min-seconds", "0.1", "-o", tmp_path / "d",
                 "--json", *STATIC)
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)["results"][0]["artifact"]["provenance"]["accuracy_search"]
    assert any("same for every input" in v for v in record["steps"][0]["violations"])
    assert record["met"] and any("Conv2d_conv2;" in n for n in record["float_layers"])
