"""quantize / compile / validate / bench / deploy on tiny real models, through the CLI."""

import json

import numpy as np
import onnx
import pytest

from edgekit.core.artifact import Artifact

FAST_BENCH = ("--min-seconds", "0.2")


@pytest.mark.parametrize("method", ["minmax", "entropy", "percentile"])
def test_quantize_methods_write_qdq_int8(cli, tiny_onnx, tiny_data, tmp_path, method):
    r = cli("quantize", tiny_onnx, "--calib", tiny_data, "--method", method, "--max-samples", 16, "-o", tmp_path, "--json")
    assert r.exit_code == 0, r.output
    art = Artifact.load(tmp_path / "tiny.int8.onnx")
    ops = {n.op_type for n in onnx.load(str(art.path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    assert art.provenance["calibration"] == method and art.provenance["calibration_samples"] == 16
    assert art.size_bytes() < tiny_onnx.stat().st_size


def test_quantize_exclude_keeps_op_in_float(cli, tiny_onnx, tiny_data, tmp_path):
    r = cli("quantize", tiny_onnx, "--calib", tiny_data, "--exclude", "Gemm", "-o", tmp_path)
    assert r.exit_code == 0, r.output
    model = onnx.load(str(tmp_path / "tiny.int8.onnx"))
    producers = {o: n for n in model.graph.node for o in n.output}
    gemm = next(n for n in model.graph.node if n.op_type == "Gemm")
    assert all(producers.get(i) is None or producers[i].op_type != "DequantizeLinear" for i in gemm.input)


def test_compile_onnxruntime_onnx_and_ort_format(cli, tiny_onnx, tmp_path):
    r = cli("compile", tiny_onnx, "--target", "onnxruntime", "-o", tmp_path, "--json")
    assert r.exit_code == 0, r.output
    r2 = cli("compile", tiny_onnx, "--ort-format", "-o", tmp_path, "--json")
    assert r2.exit_code == 0, r2.output
    ort_path = json.loads(r2.stdout)["path"]
    assert ort_path.endswith(".ort")
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    import onnxruntime as ort

    ref = ort.InferenceSession(str(tiny_onnx)).run(None, {"input": x})[0]
    for path in (json.loads(r.stdout)["path"], ort_path):
        got = ort.InferenceSession(path).run(None, {"input": x})[0]
        np.testing.assert_allclose(got, ref, atol=1e-5)


def test_validate_reports_agreement_and_task_metric(cli, tiny_onnx, tiny_data, tmp_path):
    cli("quantize", tiny_onnx, "--calib", tiny_data, "-o", tmp_path)
    x = np.load(tiny_data)
    import onnxruntime as ort

    labels = ort.InferenceSession(str(tiny_onnx)).run(None, {"input": x})[0].argmax(1)
    np.savez(tmp_path / "val.npz", input=x, labels=labels)
    r = cli("validate", tmp_path / "tiny.int8.onnx", "--reference", tiny_onnx, "--data", tmp_path / "val.npz", "--json")
    assert r.exit_code == 0, r.output
    acc = json.loads(r.stdout)["accuracy"]
    assert acc["samples"] == 64 and 0.5 < acc["top1_agreement"] <= 1.0
    assert acc["cosine_mean"] > 0.95 and acc["sqnr_db"] > 10
    assert acc["task_metric"]["reference"] == 1.0  # labels are the FP32 predictions
    assert acc["task_metric"]["drop"] == pytest.approx((1 - acc["task_metric"]["value"]) * 100, abs=1e-3)
    r = cli("validate", tmp_path / "tiny.int8.onnx", "--reference", tiny_onnx, "--data", tiny_data,
            "--min-agreement", 1.01)
    assert r.exit_code == 1 and "top-1 agreement" in r.stdout


def test_validate_reference_against_itself_is_exact(cli, tiny_onnx, tiny_data):
    r = cli("validate", tiny_onnx, "--reference", tiny_onnx, "--data", tiny_data, "--json")
    acc = json.loads(r.stdout)["accuracy"]
    assert acc["top1_agreement"] == 1.0 and acc["max_abs_err"] == 0.0 and acc["cosine_min"] == pytest.approx(1.0)


def test_bench_reports_statistics(cli, tiny_onnx):
    r = cli("bench", tiny_onnx, "--threads", 1, "--min-runs", 30, "--min-seconds", 0.2, "--json")
    assert r.exit_code == 0, r.output
    lat = json.loads(r.stdout)["latency_ms"]
    assert lat["runs"] >= 30 and lat["threads"] == 1
    assert lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p95"] <= lat["p99"] <= lat["max"]
    assert lat["first_ms"] > 0 and lat["load_ms"] > 0 and lat["peak_rss_mb"] > 0
    r = cli("bench", tiny_onnx, "--profile", "raspberry-pi-5", "--min-seconds", 0.1, "--json")
    out = json.loads(r.stdout)
    assert out["latency_ms"]["where"] == "host (standing in for raspberry-pi-5)" and out["latency_ms"]["threads"] == 4
    assert out["environment"]["runtimes"]["onnxruntime"]


def test_deploy_onnx_writes_reports_and_rows(cli, tiny_onnx, tiny_data, tmp_path):
    out = tmp_path / "out"
    r = cli("deploy", tiny_onnx, "--profile", "x86-onnxruntime-cpu", "--calib", tiny_data, "-o", out,
            *FAST_BENCH, "--json")
    assert r.exit_code in (0, 1), r.output
    report = json.loads((out / "report.json").read_text())
    assert report["schema"] == "edgekit.report/1"
    assert {"cpu", "cores", "os", "python", "runtimes"} <= set(report["environment"])
    rows = {row["precision"]: row for row in report["results"]}
    assert set(rows) == {"fp32", "int8"}
    fp32, int8 = rows["fp32"], rows["int8"]
    assert fp32["accuracy"]["top1_agreement"] == 1.0 and fp32["speedup_vs_fp32"] == 1.0
    assert int8["artifact"]["size_bytes"] < fp32["artifact"]["size_bytes"]
    for key in ("p50", "p90", "p95", "p99", "mean", "std", "min", "max", "cv", "runs", "warmup", "first_ms",
                "threads", "where"):
        assert key in int8["latency_ms"]
    assert (out / "reference.onnx").exists() and (out / "report.md").exists() and (out / "report.html").exists()
    assert "x86-onnxruntime-cpu" in (out / "report.md").read_text()


def test_deploy_pytorch_model_and_budget_violation(cli, tiny_data, tmp_path):
    from conftest import MODELS_FILE, TINY_INPUT

    profile = tmp_path / "strict.toml"
    profile.write_text('name = "strict"\n[hardware]\ngeneric = true\narch = "host"\n'
                       '[runtime]\ntarget = "onnxruntime"\nprecision = "int8"\nthreads = 1\n'
                       '[budgets]\nmax_model_mb = 0.001\n')
    out = tmp_path / "out"
    r = cli("deploy", f"{MODELS_FILE}:tiny_cnn", "--input", TINY_INPUT, "--profile", profile, "--calib", tiny_data,
            "-o", out, *FAST_BENCH)
    assert r.exit_code == 1, r.output
    assert "max_model_mb" in r.stdout
    assert (out / "model.pt2").exists() and (out / "reference.onnx").exists()
    report = json.loads((out / "report.json").read_text())
    assert all(not row["passed"] for row in report["results"])


def test_deploy_two_input_model(cli, two_input_onnx, two_input_data, tmp_path):
    r = cli("deploy", two_input_onnx, "--profile", "x86-onnxruntime-cpu", "--calib", two_input_data,
            "-o", tmp_path, *FAST_BENCH, "--json")
    assert r.exit_code in (0, 1), r.output
    rows = json.loads(r.stdout)["results"]
    assert all(row["status"] == "ok" and row["accuracy"]["cosine_mean"] > 0.9 for row in rows)


def test_profiles_and_doctor_commands(cli):
    r = cli("profiles", "list", "--json")
    assert {"raspberry-pi-5", "jetson-orin-nano"} <= {p["name"] for p in json.loads(r.stdout)}
    r = cli("profiles", "show", "jetson-orin-nano")
    assert "sm_87" in r.stdout
    r = cli("doctor", "--json")
    info = json.loads(r.stdout)
    assert info["targets"]["onnxruntime"]["available"] is True
    assert info["environment"]["cores"] >= 1
