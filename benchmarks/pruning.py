"""Structured pruning, measured side by side in one run (issue: pruning targets).

1. A small CNN trained here on scikit-learn's digits (offline), images upsampled 8x8 -> 64x64 so
   convolutions dominate the run time. Pruned 50% per layer, BatchNorm re-estimated and distilled
   (label-free KL) on the training images. Targets: unpruned test accuracy >= 97% after < 2 min
   of training; pruned within 1.0 point; MACs <= 30%; ONNX Runtime and OpenVINO FP32 p50 >= 1.5x lower.
2. EfficientNet-Lite0 (ImageNet weights) pruned 30% (channels rounded to multiples of 8): MACs and
   latency ratios, top-1 agreement with the unpruned model on the shipped photos before/after
   distillation (distilled on calibration/photos/calib, measured on calibration/photos/val).

Latency: each pair of models is loaded once and timed in alternating rounds (unpruned, pruned,
unpruned, ...) so drift on a shared machine hits both alike; the median of round medians counts.
Run: python benchmarks/pruning.py [--skip-efficientnet] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edgekit.core.tensors import parse_input_spec
from edgekit.stages.bench import BenchOptions, bench_runner
from edgekit.stages.prune.recover import RecoveryOptions
from edgekit.stages.prune.run import PruneOptions, prune_model
from edgekit.stages.prune.structure import PruneSpec

DIGITS_SIZE = 64  # input side in pixels (digits are 8x8; upsampled so compute dominates)
ROUNDS = 3


def conv_bn(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class Residual(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.body = nn.Sequential(conv_bn(ch, ch), nn.Conv2d(ch, ch, 3, 1, 1, bias=False), nn.BatchNorm2d(ch))

    def forward(self, x):
        return torch.relu(x + self.body(x))


class DigitsCNN(nn.Module):
    """Two stride-2 convs down to 16x16, a residual block, stride 2 to 8x8, a residual block, pool,
    linear classifier: ~47M MACs at 64x64, mostly in 64/128-channel 3x3 convs (compute-bound)."""

    def __init__(self, width: int = 32):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            conv_bn(1, w, 2), conv_bn(w, 2 * w, 2),      # 64x64 -> 16x16
            Residual(2 * w),
            conv_bn(2 * w, 4 * w, 2), Residual(4 * w),   # 8x8
        )
        self.head = nn.Linear(4 * w, 10)

    def forward(self, x):
        return self.head(self.features(x).mean(dim=(2, 3)))


def digits_arrays(size: int):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = torch.from_numpy(digits.images.astype(np.float32) / 16.0)[:, None]
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    x = ((x - 0.5) / 0.5).numpy()
    return train_test_split(x, digits.target.astype(np.int64), test_size=0.2, random_state=0, stratify=digits.target)


def train(model, x, y, epochs: int, lr: float = 3e-3, batch: int = 64) -> tuple[float, float]:
    """Returns (wall seconds, CPU seconds of this process): on a shared machine the wall time
    includes waiting for the cores, CPU time / threads is what two free cores would take."""
    torch.manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * -(-len(x) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    start, cpu = time.perf_counter(), time.process_time()
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(xt))
        for i in range(0, len(xt), batch):
            idx = order[i:i + batch]
            loss = nn.functional.cross_entropy(model(xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    return time.perf_counter() - start, time.process_time() - cpu


def accuracy(model, x, y) -> float:
    with torch.no_grad():
        return float((model(torch.from_numpy(x)).argmax(1).numpy() == y).mean())


# ---------------------------------------------------------------- latency on the two CPU runtimes

class _OpenVinoF32Runner:
    """Used only while edgekit has no OpenVINO backend: FP32 forced (AMX CPUs run bf16 otherwise)."""

    def __init__(self, onnx_path: Path, threads: int):
        import openvino as ov

        core = ov.Core()
        self.compiled = core.compile_model(str(onnx_path), "CPU", {
            "INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads})
        self.request = self.compiled.create_infer_request()
        self.load_ms = 0.0
        self.effective_precision = None

    def infer(self, feed):
        self.request.infer(feed)
        return {"output": self.request.get_output_tensor(0).data}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.request = self.compiled = None


def open_runner(target: str, onnx_art, folder: Path, threads: int):
    """A runner through edgekit's backend for `target` (openvino falls back to a bare FP32 runner)."""
    from edgekit.backends.base import CompileOptions
    from edgekit.backends.registry import get_backend, load_profile
    from edgekit.core.errors import TargetUnavailableError

    profile = load_profile({"onnxruntime": "x86-onnxruntime-cpu", "openvino": "x86-openvino-cpu"}[target])
    try:
        backend = get_backend(target)
        backend.check_available()
    except TargetUnavailableError:
        if target != "openvino":
            raise
        return _OpenVinoF32Runner(onnx_art.path, threads), "openvino (bare runtime, f32)"
    art = backend.compile(onnx_art, profile, folder, CompileOptions("fp32", tuple(onnx_art.inputs),
                                                                    dict(profile.runtime.options)))
    runner = backend.runner(art, threads, profile)
    return runner, f"{target} (edgekit backend, runs {runner.effective_precision or 'f32'})"


def latency_pair(unpruned, pruned, spec, threads: int, tmp: Path) -> dict[str, tuple[float, float, str]]:
    """target -> (unpruned p50 ms, pruned p50 ms, how), alternating rounds."""
    from edgekit.core.tensors import random_feed
    from edgekit.stages.export import ExportOptions, export_onnx

    arts = []
    for name, model in (("unpruned", unpruned), ("pruned", pruned)):
        arts.append(export_onnx(model, tmp / f"{name}.onnx", ExportOptions(inputs=(spec,))))
    feed = random_feed([spec])
    options = BenchOptions(warmup=20, min_runs=50, min_seconds=1.5)
    out = {}
    for target in ("onnxruntime", "openvino"):
        runners = [open_runner(target, a, tmp / f"{target}-{i}", threads) for i, a in enumerate(arts)]
        medians = ([], [])
        for _ in range(ROUNDS):
            for i, (runner, _) in enumerate(runners):
                medians[i].append(bench_runner(runner, feed, options)[0]["p50"])
        for runner, _ in runners:
            runner.__exit__(None, None, None)
        out[target] = (statistics.median(medians[0]), statistics.median(medians[1]), runners[0][1])
    return out


def print_batchnorm(report: dict) -> None:
    bn = report["recovery"]["batchnorm"]
    print(f"  BatchNorm re-estimation on {bn['samples']} samples: distillation loss {bn['loss_before']:.4f} -> "
          f"{bn['loss_after']:.4f} ({'kept' if bn['kept'] else 'reverted to the original statistics'})")


def print_latency(lat: dict, target_speedup: float | None) -> list[bool]:
    oks = []
    for target, (before, after, how) in lat.items():
        speedup = before / after
        verdict = ""
        if target_speedup:
            oks.append(speedup >= target_speedup)
            verdict = f"  [{'ok' if oks[-1] else 'MISSED'}: target >= {target_speedup}x]"
        print(f"  {target:12s} FP32 p50  {before:8.3f} ms -> {after:8.3f} ms   speedup {speedup:.2f}x"
              f"   via {how}{verdict}")
    return oks


# ---------------------------------------------------------------- the two experiments

def digits_experiment(threads: int, tmp: Path) -> bool:
    print(f"== digits CNN, input 1x1x{DIGITS_SIZE}x{DIGITS_SIZE} (8x8 digits upsampled), 50% channels ==")
    x_train, x_test, y_train, y_test = digits_arrays(DIGITS_SIZE)
    torch.manual_seed(0)
    model = DigitsCNN()
    seconds, cpu = train(model, x_train, y_train, epochs=3)
    base_acc = accuracy(model, x_test, y_test)
    print(f"  trained {len(x_train)} images, 3 epochs: {seconds:.1f} s wall, {cpu:.1f} CPU-s on {threads} threads "
          f"(load average {os.getloadavg()[0]:.1f}); test accuracy {base_acc:.4f} "
          f"[{'ok' if base_acc >= 0.97 and seconds < 120 else 'MISSED'}: >= 0.97 in < 120 s wall]")
    train_npz, test_npz = tmp / "digits-train.npz", tmp / "digits-test.npz"
    np.savez(train_npz, input=x_train)  # no labels: recovery is label-free
    np.savez(test_npz, input=x_test, labels=y_test)
    spec = parse_input_spec(f"input:1x1x{DIGITS_SIZE}x{DIGITS_SIZE}")
    options = PruneOptions(spec=PruneSpec(ratio=0.5), inputs=(spec,), distill=str(train_npz), val=str(test_npz),
                           recovery=RecoveryOptions(epochs=3, lr=5e-3, batch_size=64, max_samples=2000))
    start = time.perf_counter()
    result = prune_model(model, options, source="DigitsCNN")
    r = result.report
    print(f"  pruned + BN re-estimated + distilled ({r['recovery']['distillation']['epochs']} epochs) in "
          f"{time.perf_counter() - start:.1f} s; distillation loss {r['recovery']['distillation']['loss_before']:.4f}"
          f" -> {r['recovery']['distillation']['loss_after']:.4f}")
    print_batchnorm(r)
    macs_ok = r["macs"]["ratio"] <= 0.30
    print(f"  MACs   {r['macs']['before']:,} -> {r['macs']['after']:,}  ratio {r['macs']['ratio']:.3f}"
          f"  [{'ok' if macs_ok else 'MISSED'}: <= 0.30]")
    print(f"  params {r['params']['before']:,} -> {r['params']['after']:,}  ratio {r['params']['ratio']:.3f}")
    for stage in ("pruned", "batchnorm", "distilled"):
        acc = r["accuracy"][stage]
        print(f"  test accuracy after {stage:10s} {acc['task_metric']['value']:.4f}   "
              f"(unpruned {acc['task_metric']['reference']:.4f}, agreement {acc['top1_agreement']:.4f})")
    final = r["accuracy"]["distilled"]["task_metric"]
    acc_ok = final["drop"] <= 1.0
    print(f"  accuracy drop {final['drop']:.2f} points  [{'ok' if acc_ok else 'MISSED'}: <= 1.0]")
    lat_ok = print_latency(latency_pair(model, result.model, spec, threads, tmp), 1.5)
    return base_acc >= 0.97 and seconds < 120 and macs_ok and acc_ok and all(lat_ok)


def efficientnet_experiment(threads: int, tmp: Path, epochs: int) -> None:
    from edgekit.pipeline.demo import calibration_dir, make_efficientnet_lite0

    print("== EfficientNet-Lite0, input 1x3x224x224, 30% channels (multiples of 8) ==")
    photos = calibration_dir() / "photos"
    spec = parse_input_spec("input:1x3x224x224")
    options = PruneOptions(spec=PruneSpec(ratio=0.3, round_to=8), inputs=(spec,), distill=str(photos / "calib"),
                           val=str(photos / "val"), recovery=RecoveryOptions(epochs=epochs, lr=5e-4, batch_size=16))
    model = make_efficientnet_lite0()
    start = time.perf_counter()
    result = prune_model(model, options, source="efficientnet-lite0")
    r = result.report
    d = r["recovery"]["distillation"]
    print(f"  pruned + BN re-estimated + distilled ({d['epochs']} epochs on {d['samples']} photos) in "
          f"{time.perf_counter() - start:.1f} s; distillation loss {d['loss_before']:.4f} -> {d['loss_after']:.4f}")
    print_batchnorm(r)
    print(f"  MACs   {r['macs']['before']:,} -> {r['macs']['after']:,}  ratio {r['macs']['ratio']:.3f}")
    print(f"  params {r['params']['before']:,} -> {r['params']['after']:,}  ratio {r['params']['ratio']:.3f}")
    acc = r["accuracy"]
    print(f"  agreement with unpruned on {acc['samples']} val photos (top-1 all / confident / mean cosine):")
    for stage in ("pruned", "batchnorm", "distilled"):
        a = acc[stage]
        print(f"    {stage:10s} {a['top1_agreement']:.3f} / {a['top1_agreement_confident']:.3f}"
              f" ({a['confident_samples']} confident) / {a['cosine_mean']:.4f}")
    print_latency(latency_pair(model.eval(), result.model, spec, threads, tmp), None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-efficientnet", action="store_true")
    ap.add_argument("--effnet-epochs", type=int, default=6)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edgekit-prune-bench-") as tmp:
        ok = digits_experiment(args.threads, Path(tmp))
        print(f"digits targets: {'ALL MET' if ok else 'NOT ALL MET'}")
        if not args.skip_efficientnet:
            efficientnet_experiment(args.threads, Path(tmp), args.effnet_epochs)
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
