"""TensorRT engine runner: name-based I/O and trtexec-style timing.

Each `infer` copies inputs host->device, enqueues the engine (`execute_async_v3`, or a CUDA
graph of it), copies outputs back, and records CUDA events between the three, so besides the
host wall-clock latency the runner knows, per call, the H2D time, the GPU compute time and the
D2H time: `timing_report()` summarises them the way trtexec does.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from edgekit.backends.base import Runner
from edgekit.backends.tensorrt.cuda import open_cuda
from edgekit.backends.tensorrt.engine import load_engine
from edgekit.core.errors import BackendError, InvalidInputError
from edgekit.core.latency import latency_stats
from edgekit.core.tensors import TensorSpec


class TensorRtRunner(Runner):
    def __init__(self, path: Path, version_compatible: bool = False, cuda_graph: bool = False):
        start = time.perf_counter()
        self.cuda = open_cuda()
        if cuda_graph and not self.cuda.supports_graphs:
            raise InvalidInputError("cuda_graph = true needs cuda-python", hint="pip install 'edgekit[tensorrt]'")
        self.trt, self.engine = load_engine(Path(path), version_compatible)
        self.context = self.engine.create_execution_context()
        trt = self.trt
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self._inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.output_names = [n for n in names if n not in self._inputs]
        self._dtypes = {n: np.dtype(trt.nptype(self.engine.get_tensor_dtype(n))) for n in names}
        self.input_specs = [
            TensorSpec(n, tuple(d if d >= 0 else None for d in self.engine.get_tensor_shape(n)), self._dtypes[n].name)
            for n in self._inputs
        ]
        self.stream = self.cuda.stream()
        self._events = [self.cuda.event() for _ in range(4)]
        self._buffers: dict = {}
        self._shapes: dict[str, tuple[int, ...]] = {}
        self.cuda_graph = cuda_graph
        self._graph = None
        self._samples: dict[str, list[float]] = {"h2d": [], "compute": [], "d2h": [], "total": []}
        self.load_ms = (time.perf_counter() - start) * 1e3

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        began = time.perf_counter()
        missing = [n for n in self._inputs if n not in feed]
        if missing:
            raise InvalidInputError(f"missing input '{missing[0]}'", hint="engine inputs: " + ", ".join(self._inputs))
        arrays = {n: np.asarray(feed[n], dtype=self._dtypes[n], order="C") for n in self._inputs}  # a scalar stays 0-d
        self._bind(arrays)
        cuda, ev, stream = self.cuda, self._events, self.stream
        cuda.record(ev[0], stream)
        for n in self._inputs:
            self._buffers[n].upload(stream)
        cuda.record(ev[1], stream)
        self._enqueue()
        cuda.record(ev[2], stream)
        for n in self.output_names:
            self._buffers[n].download(stream)
        cuda.record(ev[3], stream)
        cuda.sync(stream)
        outputs = {}
        for n in self.output_names:
            shape, dtype = self._shapes[n], self._dtypes[n]
            size = int(np.prod(shape)) * dtype.itemsize
            outputs[n] = self._buffers[n].host[:size].view(dtype).reshape(shape).astype(np.float32, copy=True)
        for key, (a, b) in (("h2d", (0, 1)), ("compute", (1, 2)), ("d2h", (2, 3))):
            self._samples[key].append(cuda.elapsed_ms(ev[a], ev[b]))
        self._samples["total"].append((time.perf_counter() - began) * 1e3)
        return outputs

    def _bind(self, arrays: dict[str, np.ndarray]) -> None:
        """Set input shapes and tensor addresses; (re)allocate buffers only when a shape changes."""
        changed = False
        for n, a in arrays.items():
            if self._shapes.get(n) != a.shape:
                if not self.context.set_input_shape(n, a.shape):
                    spec = next(s for s in self.input_specs if s.name == n)
                    raise InvalidInputError(f"input '{n}' shape {a.shape} is outside the engine's profile ({spec.display_shape()})",
                                            hint="rebuild with a wider range: shapes = { NAME = \"MIN,OPT,MAX\" }")
                self._shapes[n] = a.shape
                changed = True
        if changed or not self._buffers:
            if self._graph is not None:  # a captured graph has the old addresses baked in
                self.cuda.close(None, [], self._graph)
                self._graph = None
            for n in self.output_names:
                shape = tuple(self.context.get_tensor_shape(n))
                if any(d < 0 for d in shape):
                    raise BackendError(f"output '{n}' has a data-dependent shape {shape}, which this runner does not support")
                self._shapes[n] = shape
            for n in [*self._inputs, *self.output_names]:
                need = int(np.prod(self._shapes[n])) * self._dtypes[n].itemsize
                buf = self._buffers.get(n)
                if buf is None or buf.nbytes < need:
                    if buf is not None:
                        buf.free()
                    self._buffers[n] = self.cuda.buffer(need)
                if not self.context.set_tensor_address(n, self._buffers[n].ptr):
                    raise BackendError(f"TensorRT refused the device address of '{n}'")
        for n, a in arrays.items():
            self._buffers[n].host[: a.nbytes] = a.reshape(-1).view(np.uint8)

    def _enqueue(self) -> None:
        handle = self.cuda.handle(self.stream)

        def run():
            if not self.context.execute_async_v3(handle):
                raise BackendError("TensorRT execute_async_v3 failed")

        if not self.cuda_graph:
            run()
            return
        if self._graph is None:
            run()  # the first enqueue after a shape change does lazy allocations a graph cannot hold
            self.cuda.sync(self.stream)
            self._graph = self.cuda.capture(self.stream, run)
        self.cuda.launch(self._graph, self.stream)

    def reset_timings(self) -> None:
        for values in self._samples.values():
            values.clear()

    def timing_report(self, skip: int = 0) -> dict:
        """trtexec-style figures over the calls so far (minus the first `skip`, the warm-up)."""
        s = {k: v[skip:] for k, v in self._samples.items()}
        if not s["total"]:
            return {}
        total_s = sum(s["total"]) / 1e3
        compute = latency_stats(s["compute"])
        return {
            "gpu_compute_ms": {k: compute[k] for k in ("p50", "p90", "p99", "mean", "min", "max", "cv")},
            "h2d_ms": round(float(np.mean(s["h2d"])), 4), "d2h_ms": round(float(np.mean(s["d2h"])), 4),
            "end_to_end_ms": latency_stats(s["total"]),
            "throughput_qps": round(len(s["total"]) / total_s, 2) if total_s else None,
            "cuda_graph": self.cuda_graph, "transfers_included": True,
            "note": "end-to-end = host wall clock of one infer: H2D + enqueue/compute + D2H + sync",
        }

    def close(self) -> None:
        for buf in self._buffers.values():
            buf.free()
        self._buffers = {}
        if getattr(self, "stream", None) is not None:
            self.cuda.close(self.stream, self._events, self._graph)
            self.stream = None
        self.context = self.engine = None
