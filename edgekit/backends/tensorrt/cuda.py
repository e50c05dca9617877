"""The few CUDA runtime calls the TensorRT runner needs, from cuda-python or (fallback) torch.

Device buffers, pinned host buffers, a stream, timing events and CUDA graphs. cuda-python is
what the `tensorrt` extra installs; a CUDA build of torch also works (no CUDA graphs then).
"""

from __future__ import annotations

import ctypes

import numpy as np

from edgekit.backends.tensorrt.plan import DeviceFacts
from edgekit.core.errors import BackendError, InvalidInputError, TargetUnavailableError


def open_cuda():
    """cuda-python when installed, else torch with CUDA; TargetUnavailableError when neither sees a GPU."""
    try:
        return CudaPython()
    except ImportError:
        pass
    try:
        return TorchCuda()
    except ImportError:
        pass
    raise TargetUnavailableError("TensorRT needs cuda-python (or a CUDA build of torch) for device memory",
                                 hint="pip install 'edgekit[tensorrt]'")


def _cudart():
    try:
        from cuda.bindings import runtime  # cuda-python >= 12.6
    except ImportError:
        from cuda import cudart as runtime  # older cuda-python
    return runtime


class CudaPython:
    supports_graphs = True

    def __init__(self):
        self.rt = _cudart()
        count = self.checked(self.rt.cudaGetDeviceCount, what="cudaGetDeviceCount", unavailable=True)
        if count < 1:
            raise TargetUnavailableError("no CUDA device is visible", hint="check the driver (nvidia-smi) and CUDA_VISIBLE_DEVICES")

    def checked(self, fn, *args, what: str = "", unavailable: bool = False):
        """fn(*args) of the CUDA runtime, its error code turned into an exception, its value returned."""
        err, *rest = fn(*args)
        if int(err) != 0:
            cls = TargetUnavailableError if unavailable else BackendError
            raise cls(f"CUDA {what or fn.__name__} failed: {err}", hint="check the NVIDIA driver and the GPU (nvidia-smi)")
        return rest[0] if len(rest) == 1 else tuple(rest)

    def facts(self) -> DeviceFacts:
        import platform

        props = self.checked(self.rt.cudaGetDeviceProperties, 0)
        name = props.name.decode(errors="replace").rstrip("\x00") if isinstance(props.name, bytes) else str(props.name)
        return DeviceFacts(name=name, compute_capability=f"{props.major}.{props.minor}",
                           cuda_runtime=_cuda_version(self.checked(self.rt.cudaRuntimeGetVersion)),
                           cuda_driver=_cuda_version(self.checked(self.rt.cudaDriverGetVersion)),
                           arch=platform.machine(), integrated=bool(props.integrated))

    def buffer(self, nbytes: int) -> "PythonBuffer":
        return PythonBuffer(self, nbytes)

    def stream(self):
        return self.checked(self.rt.cudaStreamCreate)

    def handle(self, stream) -> int:
        return int(stream)

    def sync(self, stream) -> None:
        self.checked(self.rt.cudaStreamSynchronize, stream)

    def event(self):
        return self.checked(self.rt.cudaEventCreate)

    def record(self, event, stream) -> None:
        self.checked(self.rt.cudaEventRecord, event, stream)

    def elapsed_ms(self, start, end) -> float:
        return float(self.checked(self.rt.cudaEventElapsedTime, start, end))

    def capture(self, stream, enqueue) -> object:
        """A CUDA graph of what `enqueue()` puts on the stream (TensorRT's enqueue, here)."""
        rt = self.rt
        self.checked(rt.cudaStreamBeginCapture, stream, rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal)
        try:
            enqueue()
        finally:
            graph = self.checked(rt.cudaStreamEndCapture, stream)
        return self.checked(rt.cudaGraphInstantiate, graph, 0)

    def launch(self, graph, stream) -> None:
        self.checked(self.rt.cudaGraphLaunch, graph, stream)

    def close(self, stream, events, graph) -> None:
        for ev in events:
            self.rt.cudaEventDestroy(ev)
        if graph is not None:
            self.rt.cudaGraphExecDestroy(graph)
        if stream is not None:
            self.rt.cudaStreamDestroy(stream)


class PythonBuffer:
    """nbytes on the device plus a pinned host mirror (pinned memory makes the async copies async)."""

    def __init__(self, cuda: CudaPython, nbytes: int):
        self.cuda, self.nbytes = cuda, max(nbytes, 1)
        self.ptr = int(cuda.checked(cuda.rt.cudaMalloc, self.nbytes))
        self._host_ptr = int(cuda.checked(cuda.rt.cudaMallocHost, self.nbytes))
        raw = (ctypes.c_uint8 * self.nbytes).from_address(self._host_ptr)
        self.host = np.ctypeslib.as_array(raw)

    def upload(self, stream) -> None:
        rt = self.cuda.rt
        self.cuda.checked(rt.cudaMemcpyAsync, self.ptr, self._host_ptr, self.nbytes,
                        rt.cudaMemcpyKind.cudaMemcpyHostToDevice, stream)

    def download(self, stream) -> None:
        rt = self.cuda.rt
        self.cuda.checked(rt.cudaMemcpyAsync, self._host_ptr, self.ptr, self.nbytes,
                        rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream)

    def free(self) -> None:
        self.cuda.rt.cudaFree(self.ptr)
        self.cuda.rt.cudaFreeHost(self._host_ptr)


class TorchCuda:
    supports_graphs = False  # a TensorRT enqueue inside torch.cuda.graph is not worth the risk here

    def __init__(self):
        import torch

        if not torch.cuda.is_available():
            raise TargetUnavailableError("no CUDA device is visible to torch",
                                         hint="pip install 'edgekit[tensorrt]' for cuda-python, or use a CUDA build of torch")
        self.torch = torch

    def facts(self) -> DeviceFacts:
        import platform

        t = self.torch
        major, minor = t.cuda.get_device_capability(0)
        props = t.cuda.get_device_properties(0)
        return DeviceFacts(name=t.cuda.get_device_name(0), compute_capability=f"{major}.{minor}",
                           cuda_runtime=t.version.cuda, cuda_driver=None, arch=platform.machine(),
                           integrated=bool(getattr(props, "is_integrated", False)))

    def buffer(self, nbytes: int) -> "TorchBuffer":
        return TorchBuffer(self.torch, nbytes)

    def stream(self):
        return self.torch.cuda.Stream()

    def handle(self, stream) -> int:
        return int(stream.cuda_stream)

    def sync(self, stream) -> None:
        stream.synchronize()

    def event(self):
        return self.torch.cuda.Event(enable_timing=True)

    def record(self, event, stream) -> None:
        event.record(stream)

    def elapsed_ms(self, start, end) -> float:
        return float(start.elapsed_time(end))

    def capture(self, stream, enqueue):
        raise InvalidInputError("CUDA graphs need cuda-python", hint="pip install 'edgekit[tensorrt]'")

    def launch(self, graph, stream) -> None:
        raise AssertionError("unreachable: capture() refused")

    def close(self, stream, events, graph) -> None:
        pass


class TorchBuffer:
    def __init__(self, torch, nbytes: int):
        self.torch, self.nbytes = torch, max(nbytes, 1)
        self._device = torch.empty(self.nbytes, dtype=torch.uint8, device="cuda")
        self._host = torch.empty(self.nbytes, dtype=torch.uint8, pin_memory=True)
        self.ptr = self._device.data_ptr()
        self.host = self._host.numpy()

    def upload(self, stream) -> None:
        with self.torch.cuda.stream(stream):
            self._device.copy_(self._host, non_blocking=True)

    def download(self, stream) -> None:
        with self.torch.cuda.stream(stream):
            self._host.copy_(self._device, non_blocking=True)

    def free(self) -> None:
        self._device = self._host = None


def _cuda_version(v: int) -> str:
    return f"{v // 1000}.{(v % 1000) // 10}"
