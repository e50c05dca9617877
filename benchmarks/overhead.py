"""edgekit bench overhead: its reported median vs a bare `session.run` loop, same process, same model.

Rounds alternate (bare, edgekit, bare, edgekit, ...) so drift on a shared machine hits both alike.
Target: ratio within 5% (<= 1.05).  Run: python benchmarks/overhead.py [--model m.onnx]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def bare_median(session, feed, runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        session.run(None, feed)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", type=Path, help="ONNX model (default: EfficientNet-Lite0 exported here)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()

    import onnxruntime as ort

    from edgekit.core.artifact import Artifact
    from edgekit.onnx.session import ort_session
    from edgekit.stages.bench import BenchOptions, bench_artifact

    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or _export_demo(Path(tmp))
        art = Artifact.load(model)
        session = ort_session(model, ort.SessionOptions(), threads=args.threads)
        feed = {i.name: np.random.default_rng(0).standard_normal([d if isinstance(d, int) else 1 for d in i.shape])
                .astype(np.float32) for i in session.get_inputs()}
        options = BenchOptions(warmup=10, min_runs=100, min_seconds=1.0)
        for _ in range(20):
            session.run(None, feed)
        bare, ours = [], []
        for _ in range(args.rounds):
            bare.append(bare_median(session, feed, 150))
            ours.append(bench_artifact(art, args.threads, options, feed=feed)["p50"])
        b, e = statistics.median(bare), statistics.median(ours)
        print(f"model: {model.name}, threads {args.threads}, {args.rounds} alternating rounds")
        print(f"bare session.run median: {b:.3f} ms  (rounds: {', '.join(f'{x:.3f}' for x in bare)})")
        print(f"edgekit bench p50:       {e:.3f} ms  (rounds: {', '.join(f'{x:.3f}' for x in ours)})")
        print(f"ratio edgekit / bare:    {e / b:.3f}  (target <= 1.05)")


def _export_demo(tmp: Path) -> Path:
    from edgekit.core.tensors import parse_input_spec
    from edgekit.pipeline.demo import make_efficientnet_lite0
    from edgekit.stages.export import ExportOptions, export_onnx

    out = tmp / "efficientnet_lite0.onnx"
    export_onnx(make_efficientnet_lite0(), out, ExportOptions(inputs=(parse_input_spec("input:1x3x224x224"),)))
    return out


if __name__ == "__main__":
    main()
