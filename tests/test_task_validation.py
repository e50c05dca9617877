"""Task-aware validate / deploy / budgets / gate on a real trained detector (tests/detector.py), no mocks."""

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

FAST = ("--min-seconds", "0.2")


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    from detector import build_detector

    return build_detector(tmp_path_factory.mktemp("detector"))


@pytest.fixture(scope="module")
def int8(detector, cli, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("int8")
    r = cli("quantize", detector.onnx, "--target", "onnxruntime", "--calib", detector.images,
            "--preprocess", detector.preprocess, "-o", out)
    assert r.exit_code == 0, r.output
    return next(out.glob("*.int8.onnx"))


@pytest.fixture(scope="module")
def lossy_int8(detector, cli, tmp_path_factory) -> Path:
    """The int8 with the head's final Concat in int8 too (mixed_range_float = false): one scale for boxes
    (0..160 px) and scores (0..1) rounds the scores away; the default keeps that Concat float and loses ~1 point."""
    out = tmp_path_factory.mktemp("lossy")
    profile = out / "lossy.toml"
    profile.write_text('name = "lossy"\n[hardware]\narch = "x86_64"\n[runtime]\ntarget = "onnxruntime"\n'
                       'precision = "int8"\n[runtime.options]\nmixed_range_float = false\n')
    r = cli("quantize", detector.onnx, "--profile", profile, "--calib", detector.images,
            "--preprocess", detector.preprocess, "-o", out)
    assert r.exit_code == 0, r.output
    return next(out.glob("*.int8.onnx"))


@pytest.fixture(scope="module")
def flat_scores(detector, tmp_path_factory) -> Path:
    """The detector with its class scores replaced by a constant: boxes intact, every detection meaningless."""
    model = onnx.load(str(detector.onnx))
    graph = model.graph
    out = graph.output[0]
    dims = [d.dim_value for d in out.type.tensor_type.shape.dim]  # 1 x (4 + C) x N
    producer = next(n for n in graph.node if out.name in n.output)
    producer.output[list(producer.output).index(out.name)] = "raw_head"
    scores = np.full((1, dims[1] - 4, dims[2]), 0.3, np.float32)
    graph.initializer.extend([numpy_helper.from_array(np.array([0], np.int64), "sl_start"),
                              numpy_helper.from_array(np.array([4], np.int64), "sl_end"),
                              numpy_helper.from_array(np.array([1], np.int64), "sl_axis"),
                              numpy_helper.from_array(scores, "flat_scores")])
    graph.node.extend([helper.make_node("Slice", ["raw_head", "sl_start", "sl_end", "sl_axis"], ["boxes_only"]),
                       helper.make_node("Concat", ["boxes_only", "flat_scores"], [out.name], axis=1)])
    path = tmp_path_factory.mktemp("flat") / "flat.onnx"
    onnx.save(model, str(path))
    return path


def validate(cli, detector, model, *extra):
    return cli("validate", model, "--reference", detector.onnx, "--data", detector.images,
               "--preprocess", detector.preprocess, *extra)


def test_validate_guesses_detect_and_reports_map_fp32_and_int8(cli, detector, int8):
    r = validate(cli, detector, detector.onnx, "--json")
    assert r.exit_code == 0, r.output
    assert "task: detect (guessed: output 'output'" in r.stderr and "YOLOv8" in r.stderr
    fp32 = json.loads(r.stdout)["accuracy"]
    assert fp32["task"] == "detect" and fp32["task_source"] == "guessed"
    assert fp32["top1_agreement"] is None and fp32["top5_agreement"] is None  # never a made-up top-1
    assert fp32["task_metric"]["name"] == "map50" and fp32["task_metric"]["drop"] == 0.0
    assert fp32["task_metrics"]["reference_map50"] >= 0.5 and fp32["task_metrics"]["map50_vs_fp32"] == 1.0
    assert fp32["outputs"]["output"]["cosine_mean"] == 1.0

    r = validate(cli, detector, int8, "--task", "detect", "--json")
    assert r.exit_code == 0, r.output
    acc = json.loads(r.stdout)["accuracy"]
    assert acc["task"] == "detect" and acc["task_source"] == "given"
    tm, m = acc["task_metric"], acc["task_metrics"]
    assert tm["reference"] == fp32["task_metric"]["value"] and 0 < tm["value"] <= 1
    assert tm["drop"] == pytest.approx((tm["reference"] - tm["value"]) * 100, abs=1e-3)
    assert 0 < m["map50_vs_fp32"] <= 1 and m["map"] <= m["map50"] and m["ground_truth"] is True
    assert set(acc["outputs"]) == {"output"} and acc["outputs"]["output"]["cosine_mean"] > 0.99
    text = validate(cli, detector, int8)
    assert text.exit_code == 0 and "map50" in text.stdout and "map50_vs_fp32" in text.stdout


def test_a_detect_budget_in_map_points_fails_the_validate_and_deploy_rows(cli, detector, lossy_int8, tmp_path):
    acc = json.loads(validate(cli, detector, lossy_int8, "--json").stdout)["accuracy"]
    drop = acc["task_metric"]["drop"]
    assert drop > 5  # with its final Concat in int8 the detector loses mAP points
    r = validate(cli, detector, lossy_int8, "--accuracy-budget", 0.1, "--json")
    assert r.exit_code == 1 and "(map50)" in json.loads(r.stdout)["violations"][0]

    profile = tmp_path / "det.toml"
    profile.write_text('name = "det"\ntask = "detect"\n[hardware]\narch = "x86_64"\ngeneric = true\n'
                       '[runtime]\ntarget = "onnxruntime"\nprecision = "int8"\n'
                       '[runtime.options]\nmixed_range_float = false\n'
                       f'[budgets]\nmin_task_metric = {acc["task_metric"]["reference"] - 0.001:.4f}\n'
                       'min_output_cosine = 0.9\n')
    out = tmp_path / "deploy"
    r = cli("deploy", detector.onnx, "--profile", profile, "--calib", detector.images, "--preprocess",
            detector.preprocess, "--search-time", 5, *FAST, "-o", out, "--json")
    assert r.exit_code == 1, r.output
    report = json.loads((out / "report.json").read_text())
    rows = {row["precision"]: row for row in report["results"]}
    for row in rows.values():
        a = row["accuracy"]
        assert a["task"] == "detect" and a["task_source"] == "given" and a["top1_agreement"] is None
        assert a["task_metric"]["name"] == "map50" and "map50_vs_fp32" in a["task_metrics"]
        assert a["outputs"]["output"]["cosine_mean"] > 0.9
    assert rows["fp32"]["passed"] and not rows["int8"]["passed"]
    assert any("min_task_metric" in v for v in rows["int8"]["violations"])
    assert json.loads(r.stdout)["results"][1]["accuracy"]["task"] == "detect"


@pytest.mark.parametrize("task, message", [
    ("nonsense", "unknown task 'nonsense'"),
    ("no_such_module_xyz:score", "no_such_module_xyz"),
])
def test_bad_tasks_exit_2_with_one_line_before_any_work(cli, detector, tmp_path, task, message):
    out = tmp_path / "deploy"
    r = cli("deploy", detector.onnx, "--profile", "x86-onnxruntime-cpu", "--calib", detector.images,
            "--preprocess", detector.preprocess, "--task", task, "-o", out)
    assert r.exit_code == 2 and message in r.stderr, r.output
    assert not out.exists()
    r = validate(cli, detector, detector.onnx, "--task", task)
    assert r.exit_code == 2 and message in r.stderr


def test_a_raising_callable_and_detect_on_a_classifier_exit_2(cli, detector, tiny_onnx, tiny_data, tmp_path):
    (tmp_path / "mymetric.py").write_text("def score(fp32, candidate):\n    raise ValueError('no boxes here')\n")
    r = validate(cli, detector, detector.onnx, "--task", f"{tmp_path / 'mymetric.py'}:score")
    assert r.exit_code == 2 and "raised ValueError: no boxes here" in r.stderr, r.output
    r = cli("validate", tiny_onnx, "--reference", tiny_onnx, "--data", tiny_data, "--task", "detect")
    assert r.exit_code == 2 and "error:" in r.stderr and len(r.stderr.splitlines()) <= 2, r.output


def test_the_gate_fails_when_the_detector_loses_map_and_notes_missing_metrics(cli, detector, flat_scores, tmp_path):
    def run(model, out):
        r = cli("deploy", model, "--profile", "x86-onnxruntime-cpu", "--precision", "fp32", "--calib",
                detector.images, "--preprocess", detector.preprocess, *FAST, "-o", out)
        assert r.exit_code == 0, r.output
        return out / "report.json"

    good = run(detector.onnx, tmp_path / "good")
    baseline = tmp_path / "baseline.json"
    assert cli("baseline", "update", good, "-o", baseline).exit_code == 0
    flat = run(flat_scores, tmp_path / "flat")
    r = cli("check", flat, "--baseline", baseline, "--max-latency-increase", "1000%", "--json")
    assert r.exit_code == 1, r.output
    checks = {c["metric"]: c for c in json.loads(r.stdout)["checks"]}
    assert checks["map50"]["verdict"] == "fail" and checks["map50"]["current"] < checks["map50"]["baseline"]
    assert checks["cosine output"]["verdict"] == "pass"  # FP32 against itself: the loss shows in mAP only

    from edgekit.report.gate import check_report

    worse = json.loads(good.read_text())  # an output whose cosine fell by more than the tolerance fails
    worse["results"][0]["accuracy"]["outputs"]["output"]["cosine_mean"] -= 0.01
    result = check_report(worse, json.loads(baseline.read_text()))
    assert [c.metric for c in result.failures] == ["cosine output"]

    old = json.loads(baseline.read_text())  # a baseline from before task metrics: notes, not failures
    for row in old["results"]:
        row["accuracy"] = {k: v for k, v in row["accuracy"].items() if k not in ("task_metric", "outputs")}
    baseline.write_text(json.dumps(old))
    r = cli("check", good, "--baseline", baseline, "--max-latency-increase", "1000%", "--json")
    checks = {c["metric"]: c for c in json.loads(r.stdout)["checks"]}
    assert checks["map50"]["verdict"] == "skip" and checks["map50"]["message"] == "not in the baseline"
    assert checks["cosine output"]["verdict"] == "skip"
    assert r.exit_code == 0, r.output


def test_task_and_task_budgets_are_profile_and_config_keys(tmp_path):
    from edgekit.core.errors import InvalidInputError
    from edgekit.core.profiles import parse_profile
    from edgekit.pipeline.config import config_fields, load_config

    prof = parse_profile('task = "detect"\n[budgets]\nmin_task_metric = 0.5\nmin_output_cosine = 0.99\n', "p.toml")
    assert prof.task == "detect" and prof.budgets.min_task_metric == 0.5
    assert prof.budgets.min_output_cosine == 0.99 and 0.5 in prof.budgets.accuracy_keys()
    with pytest.raises(InvalidInputError, match="task"):
        parse_profile("task = 3\n", "p.toml")
    (tmp_path / "edgekit.toml").write_text('[model]\nsource = "m.onnx"\ntask = "detect"\n[data]\nmasks = "masks"\n')
    fields = config_fields(load_config(tmp_path / "edgekit.toml"))
    assert fields["task"] == "detect" and fields["masks"] == str(tmp_path / "masks")


def test_the_api_takes_task(detector, int8):
    from edgekit import api

    res = api.validate(int8, reference=detector.onnx, data=detector.images, preprocess=detector.preprocess,
                       task="detect", limit=12)
    assert res.accuracy["task"] == "detect" and res.accuracy["task_metric"]["name"] == "map50"
    assert res.accuracy["samples"] == 12 and res.accuracy["task_source"] == "given"
