"""On-device runs over SSH vs local runs, side by side in one run (loopback sshd, a separate device venv).

Prints, for EfficientNet-Lite0 FP32 on ONNX Runtime with 2 threads:
- the median latency measured through `--device` over the median measured locally (interleaved, 3 rounds each):
  the runner times inference the same way, so this should be ~1.0 on the same machine;
- whether outputs are bit-exact (bench feed and the 120 validation crops) and the accuracy blocks identical;
- the fixed cost of a device run (connections, copying, Python + runtime start-up), wall time minus timed work.

    python benchmarks/remote.py          (needs /usr/sbin/sshd and edgekit[demo]; ~2 minutes)
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from importlib import metadata
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from sshd import Sshd, keygen  # noqa: E402

from edgekit.backends.onnxruntime import OnnxRuntimeRunner  # noqa: E402
from edgekit.core.artifact import Artifact  # noqa: E402
from edgekit.core.data import open_data  # noqa: E402
from edgekit.remote.bench import bench_feed, bench_on_device, validate_on_device  # noqa: E402
from edgekit.remote.jobs import RemoteOptions  # noqa: E402
from edgekit.remote.ssh import SshSettings, parse_device_url  # noqa: E402
from edgekit.stages.bench import BenchOptions, bench_artifact  # noqa: E402
from edgekit.stages.validate import compare, run_outputs, run_reference  # noqa: E402

THREADS, ROUNDS = 2, 3
OPTIONS = BenchOptions(warmup=10, min_runs=50, min_seconds=3.0)


def device_venv(root: Path) -> Path:
    subprocess.run([sys.executable, "-m", "venv", str(root)], check=True)
    python = root / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                    f"numpy=={np.__version__}", f"onnxruntime=={metadata.version('onnxruntime')}"], check=True)
    return python


def main() -> None:
    from edgekit.core.tensors import parse_input_spec
    from edgekit.pipeline.demo import make_efficientnet_lite0
    from edgekit.stages.export import ExportOptions, export_onnx

    with tempfile.TemporaryDirectory(prefix="edgekit-bench-remote-") as tmp:
        tmp = Path(tmp)
        spec = parse_input_spec("input:1x3x224x224")
        onnx = export_onnx(make_efficientnet_lite0(), tmp / "efficientnet-lite0.onnx", ExportOptions(inputs=(spec,)),
                           source_name="efficientnet-lite0").path
        art = Artifact.load(onnx)
        onnx_size = art.size_bytes()
        keygen(tmp / "client")
        server = Sshd(tmp / "sshd", tmp / "client").start()
        try:
            python = device_venv(tmp / "device-venv")
            device = replace(parse_device_url(f"{server.url}?python={python}"), identity_file=str(tmp / "client"),
                             ssh_options=server.ssh_options)
            remote = RemoteOptions(ssh=SshSettings(), show_progress=False)
            local_p50, remote_p50, overhead = [], [], []
            for _ in range(ROUNDS):  # interleaved: the shared machine's load hits both sides alike
                local_p50.append(bench_artifact(art, THREADS, OPTIONS)["p50"])
                start = time.perf_counter()
                got = bench_on_device(art, device, THREADS, OPTIONS, None, remote)
                wall = time.perf_counter() - start
                lat = got["latency_ms"]
                remote_p50.append(lat["p50"])
                timed = (lat["load_ms"] + lat["first_ms"] + lat["mean"] * (lat["runs"] + OPTIONS.warmup)) / 1e3
                overhead.append(wall - timed)
            with OnnxRuntimeRunner(onnx, THREADS) as runner:
                local_out = runner.infer(bench_feed(art))
            bench_exact = all(np.array_equal(got["outputs"][k], v) for k, v in local_out.items())

            data = open_data(ROOT / "calibration" / "photos" / "val", art.inputs)
            with OnnxRuntimeRunner(onnx, THREADS) as runner:
                ref = run_reference(runner, data)
                local_acc = compare(ref, run_outputs(runner, data, ref.output_names))
            start = time.perf_counter()
            remote_acc = validate_on_device(art, ref, data, device, THREADS, remote)["accuracy"]
            validate_wall = time.perf_counter() - start
        finally:
            server.stop()

    m_local, m_remote = statistics.median(local_p50), statistics.median(remote_p50)
    size_mb = onnx_size / 1e6
    print(f"EfficientNet-Lite0 FP32, onnxruntime {metadata.version('onnxruntime')}, {THREADS} threads, "
          f"loopback sshd, {ROUNDS} interleaved rounds")
    print(f"  local p50 per round   : {', '.join(f'{v:.2f}' for v in local_p50)} ms (median {m_local:.2f})")
    print(f"  --device p50 per round: {', '.join(f'{v:.2f}' for v in remote_p50)} ms (median {m_remote:.2f})")
    print(f"  ratio device/local p50: {m_remote / m_local:.3f}")
    print(f"  bench outputs bit-exact: {bench_exact}")
    print(f"  validation on {len(data)} crops: accuracy blocks identical: {remote_acc == local_acc} "
          f"(cosine_min {remote_acc['cosine_min']}), wall {validate_wall:.1f} s")
    print(f"  fixed cost of a device bench (2 ssh connections, copying {size_mb:.1f} MB, start-up): "
          f"median {statistics.median(overhead):.2f} s")


if __name__ == "__main__":
    main()
