"""ONNX -> float .tflite with onnx2tf, run in a child process inside a private temporary folder.

onnx2tf downloads sample images from the internet for any model whose inputs look like images,
unless `calibration_image_sample_data_20x128x128x3_float32.npy` is in its working directory.
The child therefore runs in a fresh folder holding that file, made from the user's own
calibration data, and an audit hook refuses every outbound connection as a second guard.
A child process also keeps TensorFlow (large, chatty, global state) out of edgekit's process.

Run as `python -m edgekit.backends.tflite.onnx2tf request.json` (the child side).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

SAMPLE_FILE = "calibration_image_sample_data_20x128x128x3_float32.npy"
INSTALL_HINT = "pip install 'edgekit[tflite-onnx]'  (onnx2tf + TensorFlow)"
RESULT_FILE = "result.json"
LOG_FILE = "onnx2tf.log"


def check_onnx2tf() -> None:
    import importlib.util

    from edgekit.core.errors import TargetUnavailableError

    needed = ("onnx2tf", "tensorflow", "tf_keras", "onnx_graphsurgeon")
    missing = [m for m in needed if importlib.util.find_spec(m) is None]
    if missing:
        raise TargetUnavailableError(f"converting ONNX to .tflite needs {', '.join(missing)}", hint=INSTALL_HINT)


def onnx2tf_version() -> str:
    from edgekit.core.hostinfo import package_version

    return f"onnx2tf {package_version('onnx2tf')} (tensorflow {package_version('tensorflow')})"


def convert_onnx(onnx_path: Path, shapes: dict[str, tuple[int, ...]], sample_images: np.ndarray) -> bytes:
    """The float32 .tflite bytes; `sample_images` (N, H, W, C) float32 replaces onnx2tf's download."""
    from edgekit.core.errors import BackendError

    check_onnx2tf()
    with tempfile.TemporaryDirectory(prefix="edgekit-onnx2tf-") as tmp:
        work = Path(tmp)
        np.save(work / SAMPLE_FILE, np.ascontiguousarray(sample_images, dtype=np.float32))
        request = {
            "onnx": str(simplified(Path(onnx_path), work, shapes)), "out": "out",
            "shapes": [f"{name}:{','.join(map(str, dims))}" for name, dims in shapes.items()],
        }
        (work / "request.json").write_text(json.dumps(request))
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": "-1", "PYTHONWARNINGS": "ignore"}
        with open(work / LOG_FILE, "wb") as log:
            proc = subprocess.run([sys.executable, "-m", __name__, "request.json"], cwd=work, env=env,
                                  stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        from edgekit.core.runlog import keep  # here: the child process (this module) imports no edgekit

        keep("onnx2tf", (work / LOG_FILE).read_text(errors="replace"))
        result = _read_json(work / RESULT_FILE)
        if proc.returncode != 0 or not result.get("ok"):
            raise BackendError(failure_message(result, onnx_path, work / LOG_FILE),
                               hint="export from PyTorch and convert the .pt2 with litert-torch, "
                                    "or replace the op in the ONNX graph")
        produced = sorted((work / "out").glob("*_float32.tflite"))
        if not produced:
            raise BackendError("onnx2tf finished without writing a float32 .tflite")
        return produced[0].read_bytes()


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def failure_message(result: dict, onnx_path: Path, log_path: Path) -> str:
    """'onnx2tf cannot convert op LpPool (node pool_1)': the op type and node name from the ONNX graph."""
    op_type, node = result.get("op_type"), result.get("node")
    nodes = _onnx_nodes(onnx_path)
    if node and not op_type:
        op_type = next((t for n, t in nodes if n == node or _sanitized(n) == node), None)
    if op_type and not node:
        node = next((n for n, t in nodes if t == op_type), None)
    detail = result.get("error") or _last_error_line(log_path) or "the converter exited without a result"
    if op_type:
        return f"onnx2tf cannot convert op {op_type} (node '{node}'): {detail}"
    return f"onnx2tf failed: {detail}"


def _onnx_nodes(onnx_path: Path) -> list[tuple[str, str]]:
    try:
        import onnx

        model = onnx.load(str(onnx_path), load_external_data=False)
        return [(n.name, n.op_type) for n in model.graph.node]
    except Exception:
        return []


def _sanitized(name: str) -> str:
    return name.replace(":", "__").lstrip("/")


def _last_error_line(log_path: Path) -> str | None:
    try:
        lines = log_path.read_text(errors="replace").splitlines()
    except OSError:
        return None
    errors = [ln for ln in lines if "ERROR" in ln or "Error" in ln]
    return errors[-1].strip()[:400] if errors else None


def simplified(onnx_path: Path, work: Path, shapes: dict[str, tuple[int, ...]]) -> Path:
    """onnxslim's graph at the conversion's static shapes (batch included), in the private folder: onnx2tf
    reads shape arithmetic and symbolic dims poorly. The original when onnxslim cannot."""
    import onnx

    from edgekit.onnx.normalize import slimmed

    try:
        model = onnx.load(str(onnx_path))
        for vi in model.graph.input:
            if vi.name in shapes and len(shapes[vi.name]) == len(vi.type.tensor_type.shape.dim):
                for dim, size in zip(vi.type.tensor_type.shape.dim, shapes[vi.name]):
                    dim.Clear()
                    dim.dim_value = int(size)
        del model.graph.value_info[:]  # symbolic shapes of the dynamic export: inferred again at the static one
        slim = slimmed(model)
        onnx.save(model if slim is None else slim, str(work / "simplified.onnx"))
        return work / "simplified.onnx"
    except Exception:  # a model onnxslim cannot read goes to onnx2tf as it is
        return onnx_path.resolve()


def root_cause(text: str) -> str:
    """The line of a TensorFlow error that says what went wrong: its traces begin with 'in user code:'
    and File lines, and the cause comes last."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    causes = [ln for ln in lines if not ln.startswith(("File ", "in user code", "Traceback", "Call arguments"))
              and not ln.startswith("•") and not ln.endswith(":")]
    return (causes or lines or [""])[-1]


# ---- child side -------------------------------------------------------------------------------

def refuse_network(event: str, args) -> None:
    if event == "socket.connect" and isinstance(args[1], tuple):
        raise ConnectionRefusedError(f"edgekit: onnx2tf tried to reach {args[1][0]}; conversion runs offline")
    if event == "socket.getaddrinfo":
        raise ConnectionRefusedError(f"edgekit: onnx2tf tried to resolve {args[0]}; conversion runs offline")


def _child(request_path: str) -> int:
    request = json.loads(Path(request_path).read_text())
    sys.addaudithook(refuse_network)
    result: dict = {"ok": False}
    try:
        import onnx2tf

        # onnxsim is an executable edgekit does not install; the graph was simplified with onnxslim already
        onnx2tf.convert(input_onnx_file_path=request["onnx"], output_folder_path=request["out"],
                        overwrite_input_shape=request["shapes"], non_verbose=True, not_use_onnxsim=True,
                        # Erf (GELU) has no TFLite builtin: a polynomial of builtins instead of a Flex op
                        replace_to_pseudo_operators=["erf"])  # onnx2tf matches lower-case names
        result = {"ok": True}
    except ModuleNotFoundError as e:  # onnx2tf has one module per ONNX op: a missing one = unsupported op
        prefix = "onnx2tf.ops."
        op = e.name[len(prefix):] if e.name and e.name.startswith(prefix) else None
        result = {"ok": False, "op_type": op, "node": getattr(e, "onnx_op_name", None),
                  "error": "not implemented in onnx2tf" if op else str(e)}
    except BaseException as e:  # onnx2tf also ends with sys.exit(1) on some errors
        cause, kind = root_cause(str(e))[:400], type(e).__name__
        result = {"ok": False, "node": getattr(e, "onnx_op_name", None),
                  "error": cause if cause.startswith(kind) else f"{kind}: {cause}" if cause else kind}
    Path(RESULT_FILE).write_text(json.dumps(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1]))
