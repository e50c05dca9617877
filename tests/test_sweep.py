"""edgekit sweep: a small real sweep (the tiny CNN, 2 pruning ratios x fp32/int8 x ONNX Runtime and OpenVINO
profiles) in-process and on a local Ray; resume; bad input."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import MODELS_FILE, TINY_INPUT

import edgekit

MODEL = f"{MODELS_FILE}:tiny_cnn"
# pruning half the channels costs the tiny CNN its logit cosine (about 0.87): below min_cosine; the fp32 file is
# over max_model_mb. Only unpruned int8 meets both: the recommended point, whatever the latencies.
TIGHT = """name = "tight-ort"
[hardware]
arch = "x86_64"
generic = true
[runtime]
target = "onnxruntime"
precision = "int8"
[budgets]
min_cosine = 0.95
max_model_mb = 0.02
"""


@pytest.fixture(scope="module")
def tight_profile(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("profiles") / "tight-ort.toml"
    path.write_text(TIGHT)
    return path


def run_sweep(out: Path, data: Path, profiles, **options):
    return edgekit.sweep(MODEL, inputs=[TINY_INPUT], profiles=[str(p) for p in profiles], prune="0,0.5",
                         precisions="fp32,int8", calib=str(data), val_limit=16, min_seconds=0.05, output=str(out),
                         **options)


@pytest.fixture(scope="module")
def in_process(tmp_path_factory, tiny_data, tight_profile):
    out = tmp_path_factory.mktemp("sweep") / "out"
    result = run_sweep(out, tiny_data, [tight_profile, "x86-onnxruntime-cpu", "x86-openvino-cpu"], in_process=True)
    return out, result


def test_in_process_sweep_points_front_and_files(in_process):
    out, result = in_process
    doc = json.loads((out / "sweep.json").read_text())
    assert doc == json.loads(json.dumps(result.to_dict()))
    assert doc["run"]["engine"] == "in-process"
    # 2 ratios x (onnxruntime fp32/int8 on 2 profiles + openvino fp32/int8): 12 rows, 8 builds + 2 sources
    assert len(doc["points"]) == 12 and doc["run"]["jobs_built"] == 10
    assert all(p["status"] == "ok" for p in doc["points"])
    tight = doc["profiles"]["tight-ort"]["recommended"]
    assert (tight["prune_ratio"], tight["precision"]) == (0.0, "int8")
    assert result.exit_code == 0  # every profile has a point within budget
    rows = {(p["profile"], p["prune_ratio"], p["precision"]): p for p in doc["points"]}
    # the pruned points are validated against the unpruned FP32 model: their cosine shows the pruning
    assert rows[("tight-ort", 0.5, "fp32")]["accuracy"]["cosine_mean"] < 0.95
    assert rows[("tight-ort", 0.0, "fp32")]["accuracy"]["cosine_mean"] > 0.9999
    assert not rows[("tight-ort", 0.5, "fp32")]["passed"]
    # one artifact per target: the two onnxruntime profiles share it, each is benchmarked on its own
    for ratio in (0.0, 0.5):
        a, b = rows[("tight-ort", ratio, "int8")], rows[("x86-onnxruntime-cpu", ratio, "int8")]
        assert a["artifact"]["path"] == b["artifact"]["path"] and (out / a["artifact"]["path"]).is_file()
    for name, block in doc["profiles"].items():
        pts = [p for p in doc["points"] if p["profile"] == name]
        speed = {p["key"]: (p["latency_ms"]["p50"], p["metric"]["value"]) for p in pts}

        def dominated(k):
            lat, acc = speed[k]
            return any(o != k and o_lat <= lat and o_acc >= acc and (o_lat, o_acc) != (lat, acc)
                       for o, (o_lat, o_acc) in speed.items())

        assert block["pareto"] == [p["key"] for p in pts if not dominated(p["key"])]
        passing = [p for p in pts if p["passed"]]
        assert [p["key"] for p in pts if p["recommended"]] == [min(passing, key=lambda p: speed[p["key"]])["key"]]
    html = (out / "sweep.html").read_text()
    assert html.count("<svg") == 3 and "<script" not in html and "http://" not in html.replace(
        'xmlns="http://www.w3.org/2000/svg"', "")
    assert "recommended: prune 0 int8 (minmax)" in (out / "sweep.md").read_text()


def test_resume_skips_finished_points(in_process, tiny_data, tight_profile):
    out, first = in_process
    artifact = out / first.to_dict()["profiles"]["tight-ort"]["recommended"]["artifact"]
    mtime = artifact.stat().st_mtime_ns
    again = edgekit.sweep(resume=str(out), in_process=True)
    run = again.to_dict()["run"]
    assert run["jobs_built"] == 0 and run["jobs_resumed"] == 10
    assert artifact.stat().st_mtime_ns == mtime
    assert again.to_dict()["profiles"]["tight-ort"]["recommended"]["key"] == \
        first.to_dict()["profiles"]["tight-ort"]["recommended"]["key"]
    # a point whose record is gone (interrupted before it was recorded) is the only one built again
    victim = next(p for p in first.to_dict()["points"] if p["precision"] == "fp32" and p["prune_ratio"] == 0.5
                  and p["target"] == "openvino")
    (out / "records" / f"point-{victim['key']}.json").unlink()
    third = edgekit.sweep(resume=str(out), in_process=True)
    assert third.to_dict()["run"]["jobs_built"] == 1 and third.to_dict()["run"]["jobs_resumed"] == 9


def test_sweep_on_local_ray_matches_in_process(in_process, tmp_path, tiny_data, tight_profile):
    pytest.importorskip("ray")
    out = tmp_path / "ray"
    before = set(Path("/tmp").glob("edgekit-ray-*"))
    result = run_sweep(out, tiny_data, [tight_profile, "x86-openvino-cpu"])
    assert set(Path("/tmp").glob("edgekit-ray-*")) <= before  # the local cluster's own temp dir is gone
    doc = result.to_dict()
    assert doc["run"]["engine"].startswith("local Ray") and doc["run"]["workers"] >= 1
    built = [p for p in doc["points"] if p["status"] == "ok"]
    assert len(built) == 8
    pids = {p["worker_pid"] for p in built} | {s["pid"] for s in doc["sources"].values()}
    assert os.getpid() not in pids  # every build ran in a Ray worker, not in this process
    reference = in_process[1].to_dict()["profiles"]["tight-ort"]["recommended"]
    assert doc["profiles"]["tight-ort"]["recommended"]["settings"] == reference["settings"]


@pytest.mark.parametrize("args, code, words", [
    (["--prune", ""], 2, "the grid is empty"),
    (["--precision", "fp8"], 2, "'fp8' is not one of"),
    (["--precision", "fp16"], 2, "the onnxruntime target cannot build fp16"),
    (["--ray", "127.0.0.1:9"], 3, "does not answer"),
])
def test_bad_input_is_one_line(cli, tmp_path, tiny_data, args, code, words):
    out = tmp_path / "out"
    r = cli("sweep", MODEL, "--input", TINY_INPUT, "--profile", "x86-onnxruntime-cpu", "--calib", tiny_data,
            "--min-seconds", "0.05", "--val-limit", "8", "-o", out, *args)
    assert r.exit_code == code, r.output
    errors = [line for line in r.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and words in errors[0] and "Traceback" not in r.output
    if code == 2:  # refused before any work
        assert not (out / "sources").exists() and not (out / "points").exists()
    # nothing half-built is recorded as done
    for record in (out / "records").glob("point-*.json") if (out / "records").exists() else ():
        assert (out / json.loads(record.read_text())["artifact"]["path"]).is_file()
    if (out / "points").exists():
        assert not [p for p in (out / "points").iterdir() if p.name.startswith(".")]


def test_sweep_table_of_edgekit_toml(cli, tmp_path, tiny_data):
    config = tmp_path / "edgekit.toml"
    config.write_text(f"""[model]
source = "{MODEL}"
inputs = ["{TINY_INPUT}"]
[data]
calib = "{tiny_data}"
val_limit = 8
[sweep]
profiles = ["x86-onnxruntime-cpu"]
prune = [0]
precisions = ["fp32", "int8"]
min_seconds = 0.05
output = "out"
""")
    r = cli("sweep", "-c", config, "--precision", "fp32", "--in-process", "--json")
    assert r.exit_code == 0, r.output
    doc = json.loads((tmp_path / "out" / "sweep.json").read_text())  # output relative to the file
    assert [p["precision"] for p in doc["points"]] == ["fp32"]  # the command line wins over [sweep]
    assert doc["grid"]["prune"] == [0.0]
    config.write_text(config.read_text() + "colour = 3\n")
    r = cli("sweep", "-c", config)
    assert r.exit_code == 2 and "unknown key 'sweep.colour'" in r.output


def test_pruned_point_distils_and_int8_searches(tmp_path, tiny_data):
    strict = tmp_path / "strict.toml"
    strict.write_text(TIGHT.replace("min_cosine = 0.95\nmax_model_mb = 0.02", "min_cosine = 0.99"))
    result = edgekit.sweep(MODEL, inputs=[TINY_INPUT], profiles=[str(strict)], prune=[0.5], precisions=["int8"],
                           calib=str(tiny_data), val_limit=16, distill=str(tiny_data), search=True, min_seconds=0.05,
                           output=str(tmp_path / "out"), in_process=True)
    doc = result.to_dict()
    pruned = next(s for s in doc["sources"].values() if s["ratio"] == 0.5)
    assert pruned["pruning"]["accuracy_stage"] == "distilled"
    (point,) = doc["points"]
    assert "accuracy_search" in point["artifact"]["provenance"]  # int8 missed min_cosine: the search ran
    assert not point["passed"] and result.exit_code == 1  # pruning's own loss is beyond what int8 can win back


def test_without_ray_the_sweep_runs_in_process_and_says_so(monkeypatch, cli, tmp_path, tiny_data):
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as it does without the sweep extra
    r = cli("sweep", MODEL, "--input", TINY_INPUT, "--profile", "x86-onnxruntime-cpu", "--precision", "fp32",
            "--calib", tiny_data, "--val-limit", "8", "--min-seconds", "0.05", "-o", tmp_path / "out")
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "out" / "sweep.json").read_text())["run"]["engine"] == "in-process"
    assert "Ray is not installed" in r.output and "edgekit[sweep]" in r.output


def test_a_ray_worker_keeps_onnxruntime_and_openvino_to_its_cpu(tmp_path):
    """Both size their pools to the machine's cores by default (four threads on two cores for two workers)."""
    import subprocess
    import sys

    pytest.importorskip("onnxruntime")
    code = """
import os, onnx
from onnx import TensorProto, helper
from edgekit.pipeline.sweep.workers import cap_threads
cap_threads(1)
path = os.path.join(os.environ["OUT"], "relu.onnx")
x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
import onnxruntime as ort
so = ort.SessionOptions()
ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
explicit = ort.SessionOptions(); explicit.intra_op_num_threads = 2
ort.InferenceSession(path, explicit, providers=["CPUExecutionProvider"])
print("ort", so.intra_op_num_threads, explicit.intra_op_num_threads)
try:
    from edgekit.backends.openvino.runtime import import_openvino
    ov = import_openvino()
except Exception:
    print("ov none")
else:
    print("ov", ov.Core().compile_model(path, "CPU").get_property("INFERENCE_NUM_THREADS"))
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={**os.environ, "OUT": str(tmp_path)})
    assert r.returncode == 0, r.stderr
    lines = r.stdout.split("\n")
    assert "ort 1 2" in lines  # unset -> the worker's one CPU; a caller's explicit count wins
    assert "ov 1" in lines or "ov none" in lines
