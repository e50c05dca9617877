"""NVIDIA ModelOpt's ONNX int8 quantizer (`modelopt.onnx.quantization.quantize`), in a child process.

Why a child process: ModelOpt replaces methods of onnxruntime.quantization's calibrators and edits
its QDQ operator registry in place when it runs. In our process that would silently change every
later ONNX Runtime quantization (the onnxruntime target of the same `deploy`, say). The child takes
a JSON job and the calibration arrays as an .npz, and writes the quantized ONNX where it is told.

Calibration runs on the CPU execution provider: the model is quantized where it is built, and the
file it writes is the same one TensorRT reads on the GPU machine.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from edgekit.core.errors import BackendError, InvalidInputError, TargetUnavailableError
from edgekit.core.hostinfo import package_version
from edgekit.core.progress import progress_iter, status

# modules the ONNX quantizer imports beyond the base package (its `[onnx]` extra, minus the
# onnxruntime-gpu/onnx pins that would replace the onnxruntime and onnx everyone else uses)
NEEDED_MODULES = ("modelopt", "onnx_graphsurgeon", "lief", "polygraphy")
IMPORT_FAILED = 3  # child exit code: ModelOpt is installed but does not import


def modelopt_installed() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in NEEDED_MODULES)


def modelopt_version() -> str | None:
    return package_version("nvidia-modelopt")


def modelopt_method(method: str) -> str:
    """ModelOpt calibrates int8 with max (= symmetric minmax) or entropy; it has no percentile."""
    if method == "minmax":
        return "max"
    if method == "entropy":
        return "entropy"
    raise InvalidInputError(f"ModelOpt has no '{method}' calibration for int8",
                            hint="use --method minmax or entropy, or quantizer = \"onnxruntime\"")


def save_calibration(calib, max_samples: int, path: Path) -> int:
    """Stack up to max_samples calibration samples per input into an .npz; returns the count."""
    total = min(len(calib), max_samples)
    stacked: dict[str, list[np.ndarray]] = {}
    count = 0
    for sample in progress_iter(iter(calib), total=total, description="collecting calibration data"):
        if count >= total:
            break
        for name, value in sample.feed.items():
            stacked.setdefault(name, []).append(value)
        count += 1
    if not count:
        raise InvalidInputError("the calibration data has no samples")
    np.savez(path, **{k: np.concatenate(v) for k, v in stacked.items()})
    return count


def quantize_with_modelopt(prepared: Path, out: Path, calib_npz: Path, method: str, high_precision: str,
                           nodes_to_exclude: list[str]) -> None:
    job = {
        "onnx": str(prepared), "output": str(out), "calibration": str(calib_npz),
        "method": modelopt_method(method), "high_precision": high_precision,
        # ModelOpt reads these as regular expressions matched at the start of the name
        "nodes_to_exclude": [re.escape(n) + "$" for n in nodes_to_exclude],
    }
    with tempfile.TemporaryDirectory(prefix="edgekit-modelopt-") as tmp:
        job_path = Path(tmp) / "job.json"
        job_path.write_text(json.dumps(job))
        with status("ModelOpt int8 quantization (CPU calibration)"):
            proc = subprocess.run([sys.executable, "-m", __name__, str(job_path)], capture_output=True, text=True)
    if proc.returncode == IMPORT_FAILED:
        raise TargetUnavailableError(f"nvidia-modelopt does not import: {_last_line(proc.stderr)}",
                                     hint="pip install 'edgekit[modelopt]', or set quantizer = \"onnxruntime\"")
    if proc.returncode != 0 or not out.exists():
        raise BackendError(f"ModelOpt int8 quantization failed: {_last_line(proc.stderr)}",
                           hint="retry with quantizer = \"onnxruntime\" in the profile's [runtime.options]")


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if "Error" in line or "error" in line]
    return (errors or lines or ["no output"])[-1][:500]


def main(argv: list[str]) -> int:
    job = json.loads(Path(argv[0]).read_text())
    try:
        from modelopt.onnx.quantization import quantize
    except Exception as e:  # ImportError, or a broken optional dependency of ModelOpt
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        return IMPORT_FAILED
    with np.load(job["calibration"]) as data:
        calibration = {k: data[k] for k in data.files}
    quantize(
        onnx_path=job["onnx"], quantize_mode="int8", calibration_data=calibration,
        calibration_method=job["method"], calibration_eps=["cpu"], high_precision_dtype=job["high_precision"],
        nodes_to_exclude=job["nodes_to_exclude"], output_path=job["output"], log_level="WARNING",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
