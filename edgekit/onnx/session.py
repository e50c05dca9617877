"""ONNX Runtime sessions on the CPU: the graph tools' and the reference's way to run an ONNX model."""

from __future__ import annotations

from pathlib import Path

from edgekit.core.errors import BackendError, InvalidInputError, first_line


def ort_session(path: Path, so=None, threads: int | None = None):
    import onnxruntime as ort

    so = so or ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    except Exception as e:
        msg = first_line(e)
        if "INVALID_PROTOBUF" in msg or "Protobuf parsing failed" in msg or "NO_SUCHFILE" in msg:
            raise InvalidInputError(f"{path} is not a readable ONNX model: {msg}") from e
        raise BackendError(f"onnxruntime could not load {path.name}: {msg}") from e
