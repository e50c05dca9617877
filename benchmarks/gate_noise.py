"""How well `edgekit check` separates run-to-run noise from a real slowdown, on this machine, now.

Deploys the same model N times (real runs, short benchmarks), then compares every ordered pair of
runs the way `check` does, side by side with the naive rule "fail when the median grew > 10%":
- false failures: unchanged reruns that would fail the build (should be 0);
- detections: the same pairs with the current run made 20% slower (its samples x1.2, the
  machine-speed probe untouched, i.e. the model got slower, not the machine) (should be ~100%).

    python benchmarks/gate_noise.py [--runs 8] [--min-seconds 0.3] [--demo]

--demo uses EfficientNet-Lite0 (edgekit[demo]) instead of a small CNN built here.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from edgekit.pipeline.deploy import DeployOptions, deploy
from edgekit.report.gate import GateOptions, compare_latency
from edgekit.stages.bench import BenchOptions

SLOWDOWN = 1.2
LIMIT = 0.10


def small_model(root: Path) -> tuple[str, tuple, str]:
    import torch
    from torch import nn

    from edgekit.core.tensors import parse_input_spec
    from edgekit.stages.export import ExportOptions, export_onnx

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10)).eval()
    spec = parse_input_spec("input:1x3x64x64")
    path = root / "small.onnx"
    export_onnx(net, path, ExportOptions(inputs=(spec,)), source_name="small")
    data = root / "data.npy"
    np.save(data, np.random.default_rng(0).standard_normal((16, 3, 64, 64)).astype(np.float32))
    return str(path), (), str(data)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=8)
    ap.add_argument("--min-seconds", type=float, default=0.3)
    ap.add_argument("--demo", action="store_true")
    ap.add_argument("--threads", type=int, help="Inference threads (default: the runtime's, all cores).")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="gate-noise-"))
    profile = "x86-onnxruntime-cpu"
    if args.threads:
        profile = str(root / "profile.toml")
        Path(profile).write_text(f'name = "x86-onnxruntime-cpu-{args.threads}t"\n[hardware]\ngeneric = true\n'
                                 f'[runtime]\ntarget = "onnxruntime"\nprecision = "int8"\nthreads = {args.threads}\n')
    if args.demo:
        from edgekit.core.tensors import parse_input_spec
        from edgekit.pipeline.demo import DEMO_INPUT, DEMO_MODEL, calibration_dir

        photos = calibration_dir() / "photos"
        model, inputs, calib, val = DEMO_MODEL, (parse_input_spec(DEMO_INPUT),), str(photos / "calib"), str(photos / "val")
    else:
        model, inputs, calib = small_model(root)
        val = calib
    reports = []
    started = time.time()
    for i in range(args.runs):
        opts = DeployOptions(profiles=(profile,), out_dir=root / f"run{i}", calib=calib, val=val,
                             inputs=inputs, bench=BenchOptions(min_seconds=args.min_seconds, min_runs=20))
        reports.append(deploy(model, opts).report)
        rows = ", ".join(f"{r['precision']} p50 {r['latency_ms']['p50']:.3f} ms" for r in reports[-1]["results"])
        print(f"run {i}: {rows}  (load average {os.getloadavg()[0]:.1f})", flush=True)
    options = GateOptions(max_latency_increase=LIMIT)
    tally = {k: 0 for k in ("pairs", "naive_false", "edgekit_false", "edgekit_warn", "naive_caught", "edgekit_caught")}
    raw_ratios = []
    for i, j in itertools.permutations(range(len(reports)), 2):
        for base, cur in zip(reports[i]["results"], reports[j]["results"]):
            b, c = base["latency_ms"], cur["latency_ms"]
            tally["pairs"] += 1
            raw = c["p50"] / b["p50"]
            raw_ratios.append(raw)
            tally["naive_false"] += raw > 1 + LIMIT
            verdict = compare_latency(b, c, options).verdict
            tally["edgekit_false"] += verdict == "fail"
            tally["edgekit_warn"] += verdict == "warn"
            slow = copy.deepcopy(c)
            slow["samples"] = [s * SLOWDOWN for s in slow["samples"]]
            tally["naive_caught"] += raw * SLOWDOWN > 1 + LIMIT
            tally["edgekit_caught"] += compare_latency(b, slow, options).verdict == "fail"
    n = tally["pairs"]
    print(f"\n{args.runs} unchanged deploys of {'EfficientNet-Lite0' if args.demo else 'a small CNN'} "
          f"({time.time() - started:.0f} s, threads {args.threads or 'default'}); {n} ordered pairs of rows; "
          f"limit +{LIMIT:.0%}")
    print(f"run-to-run p50 ratio: min {min(raw_ratios):.3f}, max {max(raw_ratios):.3f}")
    print(f"{'':34s}{'naive p50 rule':>16s}{'edgekit check':>16s}")
    print(f"{'unchanged reruns failed':34s}{tally['naive_false'] / n:>16.1%}{tally['edgekit_false'] / n:>16.1%}"
          f"   (edgekit warned on {tally['edgekit_warn'] / n:.1%})")
    print(f"{'20% slowdowns caught':34s}{tally['naive_caught'] / n:>16.1%}{tally['edgekit_caught'] / n:>16.1%}")


if __name__ == "__main__":
    main()
