"""Task accuracy side by side in one run (issue 14): a detector's int8 in mAP, and what task metrics cost.

Detector: tests/detector.py's YOLOv8-layout net (1x(4+C)xN output, sigmoid scores concatenated with pixel
boxes), trained here for about a minute on shapes drawn over the shipped photos, exported as its users
export (torch.onnx, and a torch.export .pt2 for TFLite, which converts from PyTorch as deploy does).
64 calibration and 48 validation scenes, letterboxed to 160, YOLO labels beside the validation images.

Per CPU target (onnxruntime, openvino, tflite), four models side by side: FP32, the library default int8
(each quantizer as its docs show it, benchmarks/library_defaults.py), edgekit's default int8, and
edgekit's int8 searched against a 1-point mAP@0.5 budget (`quantize --task detect --accuracy-budget 1`).
Each: mAP@0.5 against the FP32 model's own detections (pseudo ground truth) and against the labels, and
p50 latency (2 threads; models loaded once, timed in alternating rounds, median of per-round ratios).

Validation overhead: benchmarks/validate_overhead.py on the edgekit int8 of the first target (in process and
as the `edgekit validate` command a user runs; the real YOLOv8s there too when run on its own).

Goals: default int8 mAP@0.5 vs FP32 >= 0.95; the searched int8 meets 1 point at <= 1.10x the library
default's latency; int8 faster than FP32 on each target; task metrics add < 10% to validate.

Run: .venv/bin/python benchmarks/tasks.py [--targets onnxruntime,openvino,tflite] [--rounds 7] [--work DIR] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # the test detector

from library_defaults import library_default_int8  # noqa: E402  (this script's folder)
from validate_overhead import GOAL as OVERHEAD_GOAL  # noqa: E402
from validate_overhead import measure as measure_overhead  # noqa: E402
from validate_overhead import print_row as print_overhead  # noqa: E402

from edgekit import api  # noqa: E402
from edgekit.backends.registry import get_backend  # noqa: E402
from edgekit.core.artifact import Artifact  # noqa: E402
from edgekit.core.data import open_data, parse_preprocess  # noqa: E402
from edgekit.core.tensors import parse_input_spec  # noqa: E402
from edgekit.stages.bench import BenchOptions, bench_runner  # noqa: E402
from edgekit.stages.export import save_pt2  # noqa: E402

THREADS = 2
GOALS = {"map50_vs_fp32": 0.95, "search_latency_vs_library": 1.10, "int8_vs_fp32": 1.0, "validate_overhead": OVERHEAD_GOAL}
SETTINGS = ("fp32", "library", "default", "search")


def build(work: Path, steps: int) -> dict:
    import detector

    onnx_path = work / "detector.onnx"
    with contextlib.redirect_stdout(sys.stderr):  # seeded and single-threaded: the same detector on every run
        model, seconds = detector.trained_onnx(detector.train, steps, onnx_path, detector.SIZE, "tiny_yolo")
        spec = parse_input_spec(f"images:1x3x{detector.SIZE}x{detector.SIZE}")
        pt2 = save_pt2(model, work / "detector.pt2", (spec,), dynamic_batch=False)
    calib = detector.write_validation_set(work / "calib", count=64, seed=7)
    val = detector.write_validation_set(work / "val", count=48, seed=1234)
    return {"onnx": onnx_path, "pt2": pt2.path, "calib": calib, "val": val, "train_s": round(seconds, 1),
            "preprocess": f"raw,letterbox={detector.SIZE}"}


def quiet(fn, *args, **kwargs):
    with contextlib.redirect_stdout(sys.stderr):
        return fn(*args, **kwargs)


def models_for(target: str, det: dict, work: Path, search_time: float) -> tuple[dict, dict]:
    """The four artifacts of one target, and the seconds each int8 took to build."""
    ref = Artifact.load(det["onnx"])
    source = det["pt2"] if target == "tflite" else det["onnx"]
    common = {"target": target, "calib": str(det["calib"]), "preprocess": det["preprocess"], "reference": str(det["onnx"])}
    arts, seconds = {}, {}
    arts["fp32"] = ref if target == "onnxruntime" else quiet(
        api.compile, source, target=target, precision="fp32", output=str(work / "fp32")).artifact
    specs = ref.inputs
    calib = open_data(str(det["calib"]), specs, parse_preprocess(det["preprocess"]))
    t0 = time.perf_counter()
    arts["library"] = quiet(library_default_int8, target, ref, Artifact.load(source), calib, work / "library")
    seconds["library"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    arts["default"] = quiet(api.quantize, source, output=str(work / "default"), **common).artifact
    seconds["default"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    arts["search"] = quiet(api.quantize, source, output=str(work / "search"), accuracy_budget=1.0, task="detect",
                           val=str(det["val"]), search_time=search_time, **common).artifact
    seconds["search"] = time.perf_counter() - t0
    return arts, seconds


def accuracy(art: Artifact, det: dict) -> dict:
    res = quiet(api.validate, art, reference=str(det["onnx"]), data=str(det["val"]), preprocess=det["preprocess"],
                task="detect", threads=THREADS)
    m = res.accuracy["task_metrics"]
    return {"map50_vs_fp32": m["map50_vs_fp32"], "map50": m.get("map50"), "recall_vs_fp32": m["recall_vs_fp32"],
            "drop_points": res.accuracy["task_metric"]["drop"]}


def latencies(target: str, arts: dict, feed: dict, rounds: int) -> dict:
    backend = get_backend(target)
    opts = BenchOptions(warmup=5, min_runs=30, min_seconds=0.5)
    runners = {name: backend.runner(art, THREADS).__enter__() for name, art in arts.items()}
    try:
        p50 = {name: [] for name in runners}
        for _ in range(rounds):  # alternating, so a busy neighbour slows every model alike
            for name, runner in runners.items():
                p50[name].append(bench_runner(runner, feed, opts)[0]["p50"])
    finally:
        for r in runners.values():
            r.close()

    def ratio(a: str, b: str) -> float:
        return round(statistics.median(x / y for x, y in zip(p50[a], p50[b])), 3)

    return {"p50_ms": {k: round(statistics.median(v), 3) for k, v in p50.items()},
            "vs_fp32": {k: ratio(k, "fp32") for k in p50},
            "search_vs_library": ratio("search", "library"), "search_vs_default": ratio("search", "default")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--targets", default="onnxruntime,openvino,tflite")
    ap.add_argument("--steps", type=int, default=200, help="detector training steps (the tests' 200)")
    ap.add_argument("--search-time", type=float, default=240.0)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--work", type=Path)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="edgekit-tasks-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    det = build(work, args.steps)
    feed = next(iter(open_data(str(det["val"]), Artifact.load(det["onnx"]).inputs,
                               parse_preprocess(det["preprocess"])))).feed
    rows, overhead = [], None
    for target in args.targets.split(","):
        folder = work / target
        try:
            arts, seconds = models_for(target, det, folder, args.search_time)
        except Exception as e:  # one target's failure is a row, the others still run
            rows.append({"target": target, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"})
            continue
        row = {"target": target, "build_s": {k: round(v, 1) for k, v in seconds.items()},
               "accuracy": {k: accuracy(a, det) for k, a in arts.items()},
               "float_layers": (arts["search"].provenance.get("accuracy_search") or {}).get("float_layers", []),
               "latency": latencies(target, arts, feed, args.rounds)}
        rows.append(row)
        if overhead is None:
            overhead = measure_overhead("test detector", arts["default"].path, det["onnx"], det["val"], det["preprocess"],
                                        det["val"].parent / "labels", args.rounds)
        if not args.json:
            print_row(row)
    result = {"goals": GOALS, "detector_train_s": det["train_s"], "rows": rows, "validate_overhead": overhead}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_summary(result)
    return 0


def print_row(row: dict) -> None:
    print(f"\n{row['target']}  (int8 build s: " + ", ".join(f"{k} {v}" for k, v in row["build_s"].items()) + ")")
    print(f"  {'model':8s} {'mAP50 vs FP32':>13s} {'mAP50 (labels)':>14s} {'recall vs FP32':>14s} "
          f"{'p50 ms':>8s} {'vs FP32':>8s}")
    lat = row["latency"]
    for name in SETTINGS:
        a = row["accuracy"][name]
        print(f"  {name:8s} {a['map50_vs_fp32']:13.3f} {a['map50'] or 0:14.3f} {a['recall_vs_fp32']:14.3f} "
              f"{lat['p50_ms'][name]:8.3f} {lat['vs_fp32'][name]:7.2f}x")
    print(f"  search: {len(row['float_layers'])} layers in float; latency vs library default "
          f"{lat['search_vs_library']:.2f}x, vs edgekit default {lat['search_vs_default']:.2f}x")


def print_summary(result: dict) -> None:
    print("\nGoals")
    for row in result["rows"]:
        if "error" in row:
            print(f"  {row['target']:12s} FAILED: {row['error']}")
            continue
        acc, lat = row["accuracy"], row["latency"]
        checks = [
            (f"default int8 mAP50 vs FP32 {acc['default']['map50_vs_fp32']:.3f}", acc["default"]["map50_vs_fp32"] >= GOALS["map50_vs_fp32"]),
            (f"search drop {acc['search']['drop_points']:.2f} points", acc["search"]["drop_points"] <= 1.0),
            (f"search latency {lat['search_vs_library']:.2f}x library default", lat["search_vs_library"] <= GOALS["search_latency_vs_library"]),
            (f"int8 {lat['vs_fp32']['default']:.2f}x FP32 time", lat["vs_fp32"]["default"] < GOALS["int8_vs_fp32"]),
        ]
        print(f"  {row['target']:12s} " + "; ".join(f"{text} {'ok' if ok else 'MISSED'}" for text, ok in checks))
    if result["validate_overhead"]:
        print(f"  task metrics' cost in validate (goal: the command under {OVERHEAD_GOAL}x):")
        print_overhead(result["validate_overhead"])

if __name__ == "__main__":
    sys.exit(main())
