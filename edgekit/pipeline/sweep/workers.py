"""What a Ray worker does once, before any sweep job: keep its libraries to the CPUs Ray gave it, and import them.

Measured on 2 cores: ONNX Runtime sizes a session's intra-op pool to the machine's cores whatever OMP_NUM_THREADS
or the CPU affinity say, and OpenVINO's CPU plugin to every core the process may use; so two one-CPU workers ran
four (spinning) threads on two cores. Many of those sessions are not ours to configure (onnxruntime.quantization's
calibrator, NNCF's engine), so each worker sets the libraries' defaults for its process; an explicit thread count
a caller passes still wins. Ray reuses a worker for many tasks (max_calls 0): imports are paid once per worker.
"""

from __future__ import annotations

import importlib
import os
import time

_CAPPED: dict = {}  # library -> thread count already set in this process

# what the sweep's jobs import lazily; a missing runtime is skipped (its points fail on their own)
WARM_MODULES = ("torch", "torch.export", "torch._dynamo", "torch.onnx._internal.exporter._core", "torch_pruning",
                "sympy", "onnx", "onnx_ir", "onnxscript", "onnxslim", "onnxruntime", "onnxruntime.quantization",
                "edgekit.pipeline.deploy", "edgekit.pipeline.deploy_builds", "edgekit.stages.prune.run",
                "edgekit.stages.export", "edgekit.stages.validate", "edgekit.remote.place",
                "edgekit.backends.onnxruntime", "edgekit.backends.openvino.backend")


def cap_threads(n: int = 1) -> None:
    """This process's numeric libraries to n threads each (OpenMP/BLAS, torch, ONNX Runtime, OpenVINO)."""
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[name] = str(n)
    for library, cap in (("torch", _cap_torch), ("onnxruntime", _cap_onnxruntime), ("openvino", _cap_openvino)):
        if _CAPPED.get(library) == n:
            continue
        try:
            cap(n)
        except ImportError:
            continue
        _CAPPED[library] = n


def _cap_torch(n: int) -> None:
    import torch

    torch.set_num_threads(n)


def _cap_onnxruntime(n: int) -> None:
    """Sessions whose options leave intra_op_num_threads at 0 (ORT: one per core) get n."""
    import onnxruntime as ort

    cls = ort.InferenceSession
    init = cls.__dict__.get("_edgekit_init") or cls.__init__

    def __init__(self, path_or_bytes, sess_options=None, *args, **kwargs):
        sess_options = sess_options if sess_options is not None else ort.SessionOptions()
        if sess_options.intra_op_num_threads == 0:
            sess_options.intra_op_num_threads = n
        init(self, path_or_bytes, sess_options, *args, **kwargs)

    cls._edgekit_init = init
    cls.__init__ = __init__


def _cap_openvino(n: int) -> None:
    """Every Core of this process compiles for the CPU with n threads unless the compile config says otherwise."""
    from edgekit.backends.openvino.runtime import import_openvino  # the backend's import: telemetry declined
    from edgekit.core.errors import TargetUnavailableError

    try:
        cls = import_openvino().Core
    except TargetUnavailableError:
        raise ImportError("openvino") from None
    init = cls.__dict__.get("_edgekit_init") or cls.__init__

    def __init__(self, *args, **kwargs):
        init(self, *args, **kwargs)
        try:
            self.set_property("CPU", {"INFERENCE_NUM_THREADS": n})
        except RuntimeError:  # no CPU plugin here: nothing to cap
            pass

    cls._edgekit_init = init
    cls.__init__ = __init__


def warm(threads: int | None = 1) -> dict:
    """A worker's first task: cap its threads (None: leave them) and import what the jobs need, so no point pays."""
    start = time.perf_counter()
    from edgekit.core.errors import TargetUnavailableError

    for name in WARM_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    try:
        from edgekit.backends.openvino.nncf import import_nncf

        import_nncf()  # NNCF through the backend, which declines OpenVINO's telemetry first
        importlib.import_module("nncf.openvino.quantization.quantize_model")
    except (ImportError, TargetUnavailableError):
        pass
    if threads:
        cap_threads(threads)  # after the imports: torch and the runtimes are there to be capped
    _export_once()
    return {"pid": os.getpid(), "seconds": round(time.perf_counter() - start, 3)}


def _export_once() -> None:
    """A 1-conv model through the ONNX export once: torch.export and the exporter set themselves up on their first
    call (about 2 s measured, as much as a whole export of the benchmark's CNN), in this process only."""
    import tempfile
    from pathlib import Path

    try:
        import torch

        from edgekit.pipeline.arguments import as_specs
        from edgekit.stages.export import ExportOptions, export_onnx

        model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU()).eval()
        with tempfile.TemporaryDirectory(prefix="edgekit-warm-") as tmp:
            export_onnx(model, Path(tmp) / "warm.onnx", ExportOptions(inputs=tuple(as_specs(["input:1x3x16x16"]))))
    except Exception:  # only a warm-up: the first real export then pays for it, as it would anyway
        pass
