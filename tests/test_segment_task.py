"""The segment task end to end on a real trained segmentation net (tests/segmenter.py): validate, budgets in
mIoU points, --min-task-metric, and the task section of deploy's report."""

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper


@pytest.fixture(scope="module")
def segmenter(tmp_path_factory):
    from segmenter import build_segmenter

    return build_segmenter(tmp_path_factory.mktemp("segmenter"))


@pytest.fixture(scope="module")
def int8(segmenter, cli, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("int8")
    r = cli("quantize", segmenter.onnx, "--target", "onnxruntime", "--calib", segmenter.images,
            "--preprocess", segmenter.preprocess, "-o", out)
    assert r.exit_code == 0, r.output
    return next(out.glob("*.int8.onnx"))


@pytest.fixture(scope="module")
def swapped(segmenter, tmp_path_factory) -> Path:
    """The net with its circle and square score channels swapped: every output value is still a real
    logit, but those two classes are confused everywhere."""
    model = onnx.load(str(segmenter.onnx))
    out = model.graph.output[0]
    producer = next(n for n in model.graph.node if out.name in n.output)
    producer.output[list(producer.output).index(out.name)] = "true_logits"
    model.graph.initializer.append(numpy_helper.from_array(np.array([0, 2, 1, 3], np.int64), "swap"))
    model.graph.node.append(helper.make_node("Gather", ["true_logits", "swap"], [out.name], axis=1))
    path = tmp_path_factory.mktemp("swapped") / "swapped.onnx"
    onnx.save(model, str(path))
    return path


def validate(cli, segmenter, model, *extra):
    return cli("validate", model, "--reference", segmenter.onnx, "--data", segmenter.images, "--masks",
               segmenter.masks, "--preprocess", segmenter.preprocess, "--json", *extra)


def test_the_trained_net_segments_its_validation_images(cli, segmenter):
    r = validate(cli, segmenter, segmenter.onnx)
    assert r.exit_code == 0, r.output
    assert "task: segment (guessed: output" in r.stderr
    acc = json.loads(r.stdout)["accuracy"]
    m = acc["task_metrics"]
    assert acc["task"] == "segment" and acc["task_metric"]["name"] == "miou" and acc["top1_agreement"] is None
    assert m["reference_miou"] >= 0.45 and m["reference_pixel_accuracy"] >= 0.85  # measured 0.60 / 0.93
    assert m["miou_vs_fp32"] == 1.0 and m["pixel_agreement"] == 1.0 and m["classes"] == 4


def test_int8_keeps_the_masks_and_the_drop_is_in_miou_points(cli, segmenter, int8):
    acc = json.loads(validate(cli, segmenter, int8).stdout)["accuracy"]
    tm, m = acc["task_metric"], acc["task_metrics"]
    assert tm["drop"] == pytest.approx((tm["reference"] - tm["value"]) * 100, abs=1e-3)
    assert m["pixel_agreement"] > 0.97 and m["miou_vs_fp32"] > 0.8  # measured 0.993 / 0.93
    assert abs(tm["drop"]) < 3  # measured 0.2 points

    r = validate(cli, segmenter, int8, "--min-task-metric", round(tm["value"] + 0.05, 4))
    assert r.exit_code == 1 and json.loads(r.stdout)["violations"][0].startswith("miou ")
    r = validate(cli, segmenter, int8, "--min-task-metric", round(tm["value"] - 0.05, 4), "--min-output-cosine", 0.9)
    assert r.exit_code == 0, r.output


def test_confused_classes_fail_an_miou_budget_that_cosine_alone_would_miss(cli, segmenter, swapped):
    r = validate(cli, segmenter, swapped, "--accuracy-budget", 1)
    acc = json.loads(r.stdout)["accuracy"]
    assert r.exit_code == 1 and "(miou)" in json.loads(r.stdout)["violations"][0]
    assert acc["task_metrics"]["miou_vs_fp32"] < 0.9 and acc["task_metric"]["drop"] > 1
    assert acc["cosine_mean"] > 0.95  # measured 0.997: the whole-output cosine barely moves
    per_class = acc["task_metrics"]["per_class_iou_vs_fp32"]
    assert per_class["1"] < 0.5 and per_class["2"] < 0.5 and per_class["0"] > 0.8  # only the swapped pair


def test_deploy_reports_the_task_section(cli, segmenter, tmp_path):
    profile = tmp_path / "seg.toml"
    profile.write_text('name = "seg"\ntask = "segment"\n[hardware]\narch = "x86_64"\ngeneric = true\n'
                       '[runtime]\ntarget = "onnxruntime"\nprecision = "int8"\n[budgets]\nmin_task_metric = 0.3\n')
    out = tmp_path / "deploy"
    r = cli("deploy", segmenter.onnx, "--profile", profile, "--calib", segmenter.images, "--masks", segmenter.masks,
            "--preprocess", segmenter.preprocess, "--min-seconds", 0.2, "-o", out)
    assert r.exit_code == 0, r.output
    report = json.loads((out / "report.json").read_text())
    assert {row["accuracy"]["task"] for row in report["results"]} == {"segment"}
    md = (out / "report.md").read_text()
    section = md.split("## Task accuracy", 1)[1].split("##", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| seg ")]
    assert len(rows) == 2 and all("| segment (given) | miou |" in row for row in rows), section
    assert "pixel_agreement" in rows[1] and "Task accuracy" in (out / "report.html").read_text()
