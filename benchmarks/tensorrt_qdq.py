"""TensorRT-placed Q/DQ int8 ONNX against plain `quantize_static` defaults, side by side in one run (issue 5).

EfficientNet-Lite0 (ImageNet weights, exported by edgekit), the shipped photos (80 calibration crops,
120 validation crops). Every Q/DQ model is evaluated the same way: ONNX Runtime on the CPU with graph
optimizations off, i.e. the Q/DQ arithmetic as written, which is what TensorRT's int8 kernels implement
("QDQ simulated on CPU"; no GPU here). Per variant: Q/DQ node counts, which ops read a DequantizeLinear,
top-1 agreement with FP32 (all crops, and the confident ones: FP32 top-1 probability >= 0.3), mean and
minimum logit cosine, SQNR. Goal for edgekit's TensorRT placement: confident agreement >= 0.97 and mean
cosine >= 0.985.

Variants:
  plain        quantize_static(model, out, reader) with every default (ORT's own, not a TensorRT placement)
  trt-ort      edgekit `quantize --target tensorrt` with quantizer = "onnxruntime"
  trt-ort+dw   the same, depthwise convs quantized too (quantize_depthwise = true): why they are excluded
  trt-modelopt edgekit with quantizer = "modelopt" (when nvidia-modelopt is installed)
  modelopt-default  ModelOpt's own placement, depthwise convs quantized (its default; when installed)

Run: /work/venv/bin/python benchmarks/tensorrt_qdq.py [--only trt-ort,plain] [--work DIR] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import onnx

GOAL_CONFIDENT, GOAL_COSINE = 0.97, 0.985
VARIANTS = ("plain", "trt-ort", "trt-ort+dw", "trt-modelopt", "modelopt-default")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", help="comma-separated variants: " + ", ".join(VARIANTS))
    ap.add_argument("--work", type=Path, help="keep the models here (default: a temporary folder)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    chosen = args.only.split(",") if args.only else list(VARIANTS)
    with tempfile.TemporaryDirectory(prefix="edgekit-trt-bench-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        results = run(work, chosen)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print_table(results)
    return 0


def run(work: Path, chosen: list[str]) -> list[dict]:
    from edgekit.backends.tensorrt.modelopt import modelopt_installed
    from edgekit.core.tensors import parse_input_spec
    from edgekit.pipeline.demo import calibration_dir, make_efficientnet_lite0
    from edgekit.stages.export import ExportOptions, export_onnx

    spec = parse_input_spec("input:1x3x224x224")
    reference = export_onnx(make_efficientnet_lite0(), work / "efficientnet_lite0.onnx",
                            ExportOptions(inputs=(spec,)), source_name="efficientnet-lite0")
    photos = calibration_dir() / "photos"
    ref = reference_outputs(reference, photos / "val")
    results = []
    for name in chosen:
        if name not in VARIANTS:
            raise SystemExit(f"unknown variant {name}; one of {', '.join(VARIANTS)}")
        if "modelopt" in name and not modelopt_installed():
            results.append({"variant": name, "skipped": "nvidia-modelopt is not installed"})
            continue
        start = time.perf_counter()
        path, quantizer = quantize(name, reference, photos / "calib", work / name)
        seconds = time.perf_counter() - start
        results.append({"variant": name, "quantizer": quantizer, "quantize_seconds": round(seconds, 1),
                        **qdq_counts(path), **evaluate(path, reference, photos / "val", ref)})
    return results


def quantize(name: str, reference, calib_dir: Path, out: Path) -> tuple[Path, str]:
    from edgekit.backends.base import QuantOptions
    from edgekit.backends.registry import get_backend
    from edgekit.core.data import open_data

    calib = open_data(str(calib_dir), reference.inputs)
    if name == "plain":
        from onnxruntime.quantization import quantize_static

        from edgekit.backends.onnxruntime import CalibrationReader

        out.mkdir(parents=True, exist_ok=True)
        path = out / "plain.onnx"
        quantize_static(str(reference.path), str(path), CalibrationReader(calib, 300))
        return path, "onnxruntime quantize_static defaults"
    extra = {"trt-ort": {"quantizer": "onnxruntime"},
             "trt-ort+dw": {"quantizer": "onnxruntime", "quantize_depthwise": True},
             "trt-modelopt": {"quantizer": "modelopt"},
             "modelopt-default": {"quantizer": "modelopt", "quantize_depthwise": True}}[name]
    art = get_backend("tensorrt").quantize(reference, calib, QuantOptions(extra=extra), out)
    return art.path, art.provenance["quantizer"]


def qdq_counts(path: Path) -> dict:
    from edgekit.backends.tensorrt.qdq import summarize_qdq

    s = summarize_qdq(onnx.load(str(path)))
    return {"quantize_nodes": s.quantize_nodes, "dequantize_nodes": s.dequantize_nodes,
            "ops_with_dq_inputs": s.ops_with_dq_inputs, "symmetric": s.symmetric,
            "per_channel_weights": len(s.per_channel_weights)}


def reference_outputs(reference, val_dir: Path):
    from edgekit.backends.registry import get_backend
    from edgekit.core.data import open_data
    from edgekit.stages.validate import run_reference

    with get_backend("onnxruntime").runner(reference, threads=2) as runner:
        return run_reference(runner, open_data(str(val_dir), reference.inputs), "FP32 reference")


def evaluate(path: Path, reference, val_dir: Path, ref) -> dict:
    from edgekit.backends.tensorrt.backend import CpuSimulationRunner
    from edgekit.core.data import open_data
    from edgekit.stages.validate import compare, run_outputs

    with CpuSimulationRunner(path, 2, "int8") as runner:  # the Q/DQ arithmetic as written
        acc = compare(ref, run_outputs(runner, open_data(str(val_dir), reference.inputs), ref.output_names))
    return {k: acc[k] for k in ("samples", "top1_agreement", "top1_agreement_confident", "confident_samples",
                                "cosine_mean", "cosine_min", "sqnr_db")}


def print_table(results: list[dict]) -> None:
    print(f"{'variant':17} {'Q':>4} {'DQ':>4}  {'agree':>6} {'conf':>6} {'(n)':>4}  {'cos mean':>8} {'cos min':>7} "
          f"{'SQNR dB':>7}  {'s':>5}  goal")
    for r in results:
        if "skipped" in r:
            print(f"{r['variant']:17} skipped: {r['skipped']}")
            continue
        met = r["top1_agreement_confident"] >= GOAL_CONFIDENT and r["cosine_mean"] >= GOAL_COSINE
        print(f"{r['variant']:17} {r['quantize_nodes']:4d} {r['dequantize_nodes']:4d}  {r['top1_agreement']:6.3f} "
              f"{r['top1_agreement_confident']:6.3f} {r['confident_samples']:4d}  {r['cosine_mean']:8.4f} "
              f"{r['cosine_min']:7.4f} {r['sqnr_db']:7.2f}  {r['quantize_seconds']:5.1f}  {'met' if met else 'MISSED'}")
    print()
    for r in results:
        if "skipped" not in r:
            ops = ", ".join(f"{k} {v}" for k, v in r["ops_with_dq_inputs"].items())
            print(f"{r['variant']:17} ops reading a DQ: {ops}; symmetric zero points: {r['symmetric']}; "
                  f"per-channel weights: {r['per_channel_weights']}; by {r['quantizer']}")
    plain = next((r for r in results if r["variant"] == "plain" and "skipped" not in r), None)
    if plain:
        for r in results:
            if r is not plain and "skipped" not in r:
                print(f"{r['variant']:17} vs plain: confident agreement {r['top1_agreement_confident'] - plain['top1_agreement_confident']:+.3f}, "
                      f"cosine {r['cosine_mean'] - plain['cosine_mean']:+.4f}")
    print(f"goal: confident-crop agreement >= {GOAL_CONFIDENT}, mean cosine >= {GOAL_COSINE} "
          "(QDQ simulated on CPU: ONNX Runtime, graph optimizations off)")


if __name__ == "__main__":
    sys.exit(main())
