"""`edgekit sweep` on Ray against the same sweep in-process, side by side in one run (issue 18).

Model: a small CNN built here (conv-bn-relu stem, four stages of two convs 32-128 channels, 3x96x96 input, 10 classes;
random weights, fixed seed, BatchNorm statistics set on the data so its outputs depend on the input). Data: 64 smooth random images, each with its own colour cast and contrast (calibration), the first 32 validate.
Grid: 3 pruning ratios (0, 0.25, 0.5) x 2 precisions (fp32, int8) x 2 profiles (x86-onnxruntime-cpu,
x86-openvino-cpu): 12 points and 3 sources.

Fair side by side: each in-process sweep runs in a fresh process that first does what a Ray worker does before its
first job (imports, one tiny ONNX export: edgekit.pipeline.sweep.workers.warm, threads left alone), so its job times
hold no one-time start-up, and no caches of an earlier sweep either (the Ray side starts fresh workers every time);
the Ray side's warm-up is in its start. The load average is printed before each side.
The in-process jobs use every core each (ONNX Runtime, OpenVINO, torch threads), a Ray task one: the issue's ideal
(their sum / cores) asks Ray to halve work already partly parallel. So the builds are also timed once more in a
child process capped to one thread per library as a Ray worker is: that sum / cores is the one-CPU ideal.

Printed: the in-process sweep's wall time and the sum of its job build times (and their CPU time, against the
Ray workers': equal CPU with longer wall time means the cores were busy with other work); that sum divided by the cores
Ray used (the ideal parallel time); the Ray sweep's build wall time (first job submitted to last result) and
with the local cluster's start; their ratio to the ideal (goal <= 1.2); the CPU bound (the Ray jobs' CPU time /
cores: no schedule of that work on these cores is faster, and the ideal falls below it when an in-process job keeps
more than one core busy); whether both recommend the same point per profile.

Rounds: --rounds pairs (default 3), each an in-process sweep then a Ray one into fresh folders; each pair's ratio is
printed and the median pair in full (one quiet EPYC measured single pairs from 1.11 to 1.56).

Run: .venv/bin/python benchmarks/sweep.py [--work DIR] [--workers N] [--rounds 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

GRID = {"prune": "0,0.25,0.5", "precisions": "fp32,int8", "profiles": ["x86-onnxruntime-cpu", "x86-openvino-cpu"]}
INPUT = "input:1x3x96x96"
MODEL = f"{Path(__file__).resolve()}:small_cnn"


def small_cnn():
    """The benchmark's model (also loaded by the workers as benchmarks/sweep.py:small_cnn)."""
    import torch
    from torch import nn

    def block(c_in, c_out, stride):
        return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(),
                             nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())

    class SmallCNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU())
            self.stages = nn.Sequential(block(32, 32, 1), block(32, 64, 2), block(64, 96, 2), block(96, 128, 2))
            self.head = nn.Linear(128, 10)

        def forward(self, x):
            return self.head(self.stages(self.stem(x)).mean(dim=(2, 3)))

    torch.manual_seed(0)
    net = SmallCNN().train()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None  # one pass sets the exact statistics
    with torch.no_grad():  # BatchNorm statistics of the data: a random network whose outputs depend on its input
        net(torch.from_numpy(images()))
    return net.eval()


def images() -> np.ndarray:
    """64 smooth random images, 3x96x96, each with its own colour cast and contrast (so they differ after pooling)."""
    rng = np.random.default_rng(0)
    base = rng.standard_normal((64, 3, 12, 12)).astype(np.float32)
    out = np.kron(base, np.ones((1, 1, 8, 8), np.float32)) * rng.uniform(0.3, 2.0, (64, 1, 1, 1)).astype(np.float32)
    out += rng.standard_normal((64, 3, 1, 1)).astype(np.float32)
    return out + 0.1 * rng.standard_normal(out.shape).astype(np.float32)


def make_data(folder: Path) -> Path:
    path = folder / "images.npy"
    np.save(path, images())
    return path


def run(work: Path, workers: int | None, rounds: int = 3) -> dict:
    """`rounds` pairs of sweeps (in-process, then Ray, each into a fresh folder): a shared machine's load moves one
    pair's ratio by a third (1.11 to 1.56 measured on one quiet EPYC), so the median pair is the figure."""
    data = make_data(work)
    pairs = [_pair(work / f"round-{i + 1}", data, workers) for i in range(rounds)]
    one_cpu = in_process_sweep(work / "one-cpu", data, threads=1)["run"]["build_sum_s"]
    median = statistics.median_low([p["ratio_build"] for p in pairs])
    result = dict(next(p for p in pairs if p["ratio_build"] == median))  # the median pair, whole
    cores = result["cores"]
    result["rounds"] = [{k: p[k] for k in ("ratio_build", "ratio_with_start", "load_1min_before")}
                        | {"cpu_bound_ratio": p["cpu_bound"]["ratio_build"]} for p in pairs]
    result["one_cpu"] = {"build_sum_s": one_cpu, "ideal_s": round(one_cpu / cores, 2),
                         "ratio_build": round(result["ray"]["build_wall_s"] / (one_cpu / cores), 3)}
    result["same_recommended"] = all(p["same_recommended"] for p in pairs)
    return result


def _pair(work: Path, data: Path, workers: int | None) -> dict:
    """One in-process sweep and one on Ray, side by side, and their ratios."""
    import os

    import edgekit

    load = {"in_process": os.getloadavg()[0]}
    local = in_process_sweep(work / "in-process", data)
    local_wall = local["wall_s"]
    load["ray"] = os.getloadavg()[0]
    t = time.perf_counter()
    ray = edgekit.sweep(MODEL, output=str(work / "ray"), workers=workers, **_sweep_options(data)).to_dict()
    ray_total = time.perf_counter() - t
    cores = ray["run"]["workers"]
    ideal = local["run"]["build_sum_s"] / cores
    same = {name: (local["profiles"][name]["recommended"] or {}).get("settings")
            == (ray["profiles"][name]["recommended"] or {}).get("settings") for name in local["profiles"]}
    return {
        "points": len(local["points"]), "jobs": local["run"]["jobs_built"], "cores": cores,
        "load_1min_before": load,
        "in_process": {"warm_s": local["warm_s"], "wall_s": round(local_wall, 2),
                       "build_wall_s": local["run"]["build_wall_s"],
                       "build_sum_s": local["run"]["build_sum_s"], "build_cpu_s": local["run"]["build_cpu_s"],
                       "bench_s": local["run"]["bench_s"]},
        "ray": {"wall_s": round(ray_total, 2), "start_s": ray["run"]["engine_start_s"],
                "build_wall_s": ray["run"]["build_wall_s"], "build_sum_s": ray["run"]["build_sum_s"],
                "build_cpu_s": ray["run"]["build_cpu_s"],
                "bench_s": ray["run"]["bench_s"]},
        "ideal_s": round(ideal, 2),
        "ratio_build": round(ray["run"]["build_wall_s"] / ideal, 3),
        # no schedule of the same jobs on these cores can take less wall time than their CPU time / cores
        "cpu_bound": {"s": round(ray["run"]["build_cpu_s"] / cores, 2),
                      "ratio_build": round(ray["run"]["build_wall_s"] / (ray["run"]["build_cpu_s"] / cores), 3),
                      "ideal_below_it": ideal < ray["run"]["build_cpu_s"] / cores},
        "ratio_with_start": round((ray["run"]["build_wall_s"] + ray["run"]["engine_start_s"]) / ideal, 3),
        "recommended": {name: {"in_process": local["profiles"][name]["recommended"]["settings"]
                               if local["profiles"][name]["recommended"] else None,
                               "ray": ray["profiles"][name]["recommended"]["settings"]
                               if ray["profiles"][name]["recommended"] else None} for name in local["profiles"]},
        "same_recommended": all(same.values()),
    }


def _sweep_options(data: Path, min_seconds: float = 0.5) -> dict:
    return dict(inputs=[INPUT], profiles=GRID["profiles"], prune=GRID["prune"], precisions=GRID["precisions"],
                calib=str(data), val_limit=32, min_seconds=min_seconds)


def in_process_sweep(out: Path, data: Path, threads: int | None = None) -> dict:
    """The sweep in-process, in a fresh process warmed first as a Ray worker is (imports, one tiny export; its
    libraries capped to `threads`, None: left at every core), so neither side has the other's warm caches: a
    user's in-process sweep is one process too. Returns sweep.json, with the warm-up's and the sweep's seconds."""
    import subprocess
    import sys

    args = [sys.executable, __file__, "--in-process-sweep", str(out), "--data", str(data)]
    out_text = subprocess.run(args + (["--threads", str(threads)] if threads else []), check=True,
                              capture_output=True, text=True).stdout
    return json.loads(out_text.strip().splitlines()[-1])


def _in_process_child(out: Path, data: Path, threads: int | None) -> None:
    import edgekit
    from edgekit.pipeline.sweep.workers import warm

    warm_s = warm(threads=threads)["seconds"]
    t = time.perf_counter()
    doc = edgekit.sweep(MODEL, output=str(out), in_process=True,
                        **_sweep_options(data, min_seconds=0.05 if threads else 0.5)).to_dict()
    print(json.dumps({**doc, "warm_s": warm_s, "wall_s": round(time.perf_counter() - t, 2)}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path)
    ap.add_argument("--workers", type=int)
    ap.add_argument("--rounds", type=int, default=3, help="pairs of sweeps (in-process, Ray); the median is printed")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--in-process-sweep", type=Path, help=argparse.SUPPRESS)  # the child of in_process_sweep
    ap.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.in_process_sweep:
        return _in_process_child(args.in_process_sweep, args.data, args.threads)
    work = args.work or Path(tempfile.mkdtemp(prefix="edgekit-sweep-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    result = run(work, args.workers, args.rounds)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    ip, r = result["in_process"], result["ray"]
    print(f"grid: 3 pruning x 2 precisions x 2 profiles = {result['points']} points, {result['jobs']} jobs")
    for i, pair in enumerate(result["rounds"], 1):
        print(f"round {i}: ratio Ray builds / ideal {pair['ratio_build']:.2f}, / CPU bound "
              f"{pair['cpu_bound_ratio']:.2f} (load before {pair['load_1min_before']['in_process']:.2f}, "
              f"{pair['load_1min_before']['ray']:.2f})")
    print(f"the median of the {len(result['rounds'])} rounds, in full:")
    print(f"load average (1 min) before: in-process {result['load_1min_before']['in_process']:.2f}, "
          f"Ray {result['load_1min_before']['ray']:.2f}")
    print(f"in-process: warm-up {ip['warm_s']:.1f} s (not timed), wall {ip['wall_s']:.1f} s, "
          f"builds {ip['build_wall_s']:.1f} s (sum of job times {ip['build_sum_s']:.1f} s), "
          f"benchmarks {ip['bench_s']:.1f} s")
    print(f"ideal on {result['cores']} cores: {ip['build_sum_s']:.1f} / {result['cores']} = {result['ideal_s']:.1f} s")
    print(f"Ray: builds {r['build_wall_s']:.1f} s (+ {r['start_s']:.1f} s starting the local cluster and warming its "
          f"workers), benchmarks {r['bench_s']:.1f} s, wall {r['wall_s']:.1f} s")
    print(f"CPU time of the build jobs: in-process {ip['build_cpu_s']:.1f} s, Ray workers {r['build_cpu_s']:.1f} s "
          f"(their wall times: {ip['build_sum_s']:.1f} s, {r['build_sum_s']:.1f} s)")
    print(f"ratio Ray builds / ideal: {result['ratio_build']:.2f} (with the start: {result['ratio_with_start']:.2f}); "
          "goal <= 1.2")
    one = result["one_cpu"]
    print(f"one-CPU ideal (the in-process builds again, one thread per library as in a Ray worker): "
          f"{one['build_sum_s']:.1f} / {result['cores']} = {one['ideal_s']:.1f} s; ratio Ray builds / it: "
          f"{one['ratio_build']:.2f}")
    bound = result["cpu_bound"]
    print(f"CPU bound (the Ray jobs' CPU time / {result['cores']} cores, what no schedule beats): {bound['s']:.1f} s; "
          f"ratio Ray builds / it: {bound['ratio_build']:.2f}"
          + ("; the ideal above is below this bound: the in-process jobs ran on more than one core each"
             if bound["ideal_below_it"] else ""))
    for name, rec in result["recommended"].items():
        print(f"recommended on {name}: in-process {rec['in_process']}, Ray {rec['ray']}")
    print(f"same recommended point: {result['same_recommended']}")
    print(f"outputs: {work}")


if __name__ == "__main__":
    main()
