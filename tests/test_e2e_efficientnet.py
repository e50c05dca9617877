"""End to end on the real demo model: EfficientNet-Lite0 (ImageNet weights) with the shipped photos."""

import json

import pytest

pytest.importorskip("efficientnet_lite_pytorch")


@pytest.mark.slow
def test_deploy_efficientnet_lite0_onnxruntime(cli, tmp_path):
    from edgekit.pipeline.demo import DEMO_INPUT, DEMO_MODEL, calibration_dir

    photos = calibration_dir() / "photos"
    r = cli("deploy", DEMO_MODEL, "--input", DEMO_INPUT, "--profile", "x86-onnxruntime-cpu",
            "--calib", photos / "calib", "--val", photos / "val", "--min-seconds", 0.5, "-o", tmp_path, "--json")
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["model"]["params"] > 4_000_000 and report["model"]["macs"] > 300_000_000
    rows = {row["precision"]: row for row in report["results"]}
    fp32, int8 = rows["fp32"], rows["int8"]
    assert fp32["accuracy"]["samples"] == 120 and fp32["accuracy"]["top1_agreement"] == 1.0
    assert int8["status"] == "ok" and int8["passed"]
    # real photos: the confident crops survive int8 (DESIGN.md measured 0.93 for ORT defaults)
    assert int8["accuracy"]["confident_samples"] >= 30
    assert int8["accuracy"]["top1_agreement_confident"] >= 0.85
    assert int8["accuracy"]["cosine_mean"] >= 0.96
    assert int8["artifact"]["size_bytes"] < 0.4 * fp32["artifact"]["size_bytes"]
    assert int8["speedup_vs_fp32"] is not None
