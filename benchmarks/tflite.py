"""TFLite target on EfficientNet-Lite0: edgekit's paths against the libraries' own defaults, in one run.

    python benchmarks/tflite.py [--threads 2] [--rounds 15] [--skip-pt2e] [--skip-onnx2tf]

Paths (all .tflite, all run by LiteRT with XNNPACK, timed interleaved round by round):
- litert-torch FP32                           edgekit compile of the .pt2
- onnx2tf FP32                                edgekit compile of reference.onnx (TensorFlow needed)
- ai-edge-quantizer static_wi8_ai8 defaults   by hand: the recipe's own calibration (moving average), int8 I/O
- PT2E through litert-torch                   by hand: PT2EQuantizer per-channel, HistogramObserver defaults
- edgekit int8 (PyTorch input)                edgekit quantize of the .pt2 (min/max, float I/O, bias correction)
- edgekit int8 (ONNX input)                   edgekit quantize of reference.onnx through onnx2tf
Accuracy is against the ONNX Runtime FP32 reference on calibration/photos/val (120 crops; "confident"
= FP32 top-1 probability >= 0.3), calibration on calibration/photos/calib (80 crops).
Targets (issue 4): edgekit int8 latency / ai-edge-quantizer defaults <= 1.05; confident top-1 agreement >= 0.95.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edgekit.backends.base import CompileOptions, QuantOptions  # noqa: E402
from edgekit.backends.registry import get_backend  # noqa: E402
from edgekit.backends.tflite.runner import Binding, IoMap, TfliteRunner  # noqa: E402
from edgekit.core.artifact import Artifact  # noqa: E402
from edgekit.core.data import open_data  # noqa: E402
from edgekit.core.tensors import parse_input_spec  # noqa: E402
from edgekit.pipeline.demo import DEMO_INPUT, make_efficientnet_lite0  # noqa: E402
from edgekit.stages.export import ExportOptions, export_onnx, save_pt2  # noqa: E402
from edgekit.stages.validate import compare, run_outputs, run_reference  # noqa: E402

PHOTOS = ROOT / "calibration" / "photos"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=15, help="interleaved timing rounds of 20 runs each")
    ap.add_argument("--skip-pt2e", action="store_true", help="skip the PT2E path (its histogram calibration is slow)")
    ap.add_argument("--skip-onnx2tf", action="store_true", help="skip the ONNX-input paths (need TensorFlow)")
    args = ap.parse_args()
    spec = parse_input_spec(DEMO_INPUT)
    with tempfile.TemporaryDirectory(prefix="edgekit-bench-tflite-") as tmp:
        out = Path(tmp)
        model = make_efficientnet_lite0()
        pt2 = save_pt2(model, out / "model.pt2", [spec])
        onnx = export_onnx(model, out / "reference.onnx", ExportOptions(inputs=(spec,)), source_name="lite0")
        calib = open_data(PHOTOS / "calib", [spec])
        val = open_data(PHOTOS / "val", [spec])
        ort = get_backend("onnxruntime")
        with ort.runner(onnx) as r:
            ref = run_reference(r, val, "FP32 reference")
        tfl = get_backend("tflite")
        paths: dict[str, tuple[Path, Artifact]] = {}

        def timed(name, fn):
            t0 = time.perf_counter()
            result = fn()
            print(f"  built {name} in {time.perf_counter() - t0:.1f} s", flush=True)
            return result

        fp32 = timed("litert-torch fp32", lambda: tfl.compile(pt2, None, out / "fp32", CompileOptions("fp32")))
        paths["litert-torch FP32"] = (fp32.path, fp32)
        if not args.skip_onnx2tf:
            o_fp32 = timed("onnx2tf fp32", lambda: tfl.compile(onnx, None, out / "onnx-fp32", CompileOptions("fp32")))
            paths["onnx2tf FP32"] = (o_fp32.path, o_fp32)
        aeq = timed("ai-edge-quantizer defaults", lambda: aeq_defaults(fp32.path, calib, out / "aeq-default.tflite"))
        paths["ai-edge-quantizer static_wi8_ai8 defaults"] = (aeq, fp32)
        if not args.skip_pt2e:
            pt2e = timed("PT2E", lambda: pt2e_defaults(pt2.path, calib, out / "pt2e.tflite"))
            paths["PT2E via litert-torch (per-channel)"] = (pt2e, fp32)
        int8 = timed("edgekit int8 (pt2)", lambda: tfl.quantize(pt2, calib, QuantOptions(), out / "int8"))
        paths["edgekit int8 (PyTorch input)"] = (int8.path, int8)
        if not args.skip_onnx2tf:
            o_int8 = timed("edgekit int8 (onnx)", lambda: tfl.quantize(onnx, calib, QuantOptions(), out / "onnx-int8"))
            paths["edgekit int8 (ONNX input, onnx2tf)"] = (o_int8.path, o_int8)

        runners = {name: open_runner(path, art, args.threads) for name, (path, art) in paths.items()}
        accuracy = {name: compare(ref, run_outputs(r, val, ref.output_names, name)) for name, r in runners.items()}
        latency = interleaved_latency(runners, next(iter(val)).feed, args.rounds)
        report(accuracy, latency, {n: Path(p).stat().st_size for n, (p, _) in paths.items()}, args)


def open_runner(path: Path, artifact: Artifact | None, threads: int) -> TfliteRunner:
    """edgekit's runner for every file, so all paths pay the same I/O (de)quantization and layout costs."""
    io = IoMap.from_dict(artifact.provenance.get("io")) if artifact and artifact.path == path else None
    specs = list(artifact.inputs) if artifact else []
    if io is None:  # a file made by hand: same input/output order as the fp32 model it came from
        io = IoMap((Binding("input"),), (Binding("output"),))
    return TfliteRunner(path, specs, io, threads)


def aeq_defaults(float_tflite: Path, calib, out: Path) -> Path:
    """The issue's baseline: ai-edge-quantizer static_wi8_ai8 exactly as its docs show it."""
    from ai_edge_quantizer import quantizer, recipe

    q = quantizer.Quantizer(str(float_tflite), recipe.static_wi8_ai8())
    data = [{"input": s.feed["input"]} for s in calib]
    result = q.calibrate({"serving_default": data})
    q.quantize(result, enable_progress_report=False).export_model(str(out), overwrite=True)
    return out


def pt2e_defaults(pt2_path: Path, calib, out: Path) -> Path:
    """PT2E static int8 through litert-torch, per-channel weights, as in litert-torch's own tests."""
    import litert_torch
    import torch
    from litert_torch.quantize import pt2e_quantizer
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e import quantize_pt2e

    example = (torch.from_numpy(next(iter(calib)).feed["input"]),)
    module = torch.export.export(torch.export.load(str(pt2_path)).module(), example).module()
    quantizer = pt2e_quantizer.PT2EQuantizer().set_global(
        pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=True))
    module = quantize_pt2e.prepare_pt2e(module, quantizer)
    with torch.no_grad():
        for sample in calib:
            module(torch.from_numpy(sample.feed["input"]))
    module = quantize_pt2e.convert_pt2e(module, fold_quantize=False)
    edge = litert_torch.convert(module, example, quant_config=QuantConfig(pt2e_quantizer=quantizer))
    out.write_bytes(edge.model_content())
    return out


def interleaved_latency(runners: dict, feed: dict, rounds: int, per_round: int = 20) -> dict[str, float]:
    """Median ms per path; paths alternate every round so load from other work hits them alike."""
    samples = {name: [] for name in runners}
    for r in runners.values():
        for _ in range(10):
            r.infer(feed)
    for _ in range(rounds):
        for name, r in runners.items():
            for _ in range(per_round):
                t0 = time.perf_counter()
                r.infer(feed)
                samples[name].append((time.perf_counter() - t0) * 1e3)
    return {name: float(np.median(s)) for name, s in samples.items()}


def report(accuracy: dict, latency: dict, sizes: dict, args) -> None:
    print(f"\nEfficientNet-Lite0, LiteRT XNNPACK, {args.threads} threads, batch 1; accuracy vs ONNX Runtime FP32 "
          f"on {next(iter(accuracy.values()))['samples']} crops "
          f"({next(iter(accuracy.values())).get('confident_samples')} confident)\n")
    head = (f"{'path':44s} {'median ms':>9s} {'MB':>6s} {'top-1 all':>9s} {'top-1 conf':>10s} {'cosine':>7s} "
            f"{'SQNR dB':>8s}")
    print(head)
    print("-" * len(head))
    for name, acc in accuracy.items():
        print(f"{name:44s} {latency[name]:9.2f} {sizes[name] / 1e6:6.2f} {acc['top1_agreement']:9.3f} "
              f"{acc['top1_agreement_confident']:10.3f} {acc['cosine_mean']:7.4f} {acc['sqnr_db']:8.2f}")
    edge, base, fp32 = "edgekit int8 (PyTorch input)", "ai-edge-quantizer static_wi8_ai8 defaults", "litert-torch FP32"
    ratio = latency[edge] / latency[base]
    conf = accuracy[edge]["top1_agreement_confident"]
    print()
    print(f"edgekit int8 / ai-edge-quantizer defaults latency: {ratio:.3f}  "
          f"(target <= 1.05: {'met' if ratio <= 1.05 else 'MISSED'})")
    print(f"edgekit int8 confident top-1 agreement: {conf:.3f}  "
          f"(target >= 0.95: {'met' if conf >= 0.95 else 'MISSED'}); "
          f"defaults: {accuracy[base]['top1_agreement_confident']:.3f}")
    print(f"int8 vs FP32 speedup (litert-torch): {latency[fp32] / latency[edge]:.2f}x")
    if "onnx2tf FP32" in latency:
        print(f"onnx2tf FP32 / litert-torch FP32 latency: {latency['onnx2tf FP32'] / latency[fp32]:.2f}x; "
              f"edgekit int8 ONNX input / PyTorch input: "
              f"{latency['edgekit int8 (ONNX input, onnx2tf)'] / latency[edge]:.2f}x")
    if "PT2E via litert-torch (per-channel)" in accuracy:
        p = accuracy["PT2E via litert-torch (per-channel)"]
        print(f"PT2E confident agreement {p['top1_agreement_confident']:.3f} (cosine {p['cosine_mean']:.4f}) vs "
              f"ai-edge-quantizer defaults {accuracy[base]['top1_agreement_confident']:.3f} "
              f"(cosine {accuracy[base]['cosine_mean']:.4f}): edgekit builds on ai-edge-quantizer")


if __name__ == "__main__":
    main()
