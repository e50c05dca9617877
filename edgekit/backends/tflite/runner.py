"""Running a .tflite on LiteRT (ai-edge-litert, or tflite-runtime where only that is installed).

The caller always sees the model's ONNX layout: NCHW arrays go in and come out even when the
.tflite is NHWC inside, and int8/uint8 model inputs/outputs are (de)quantized here with the
tensor's own scale and zero point. How each ONNX tensor maps onto the .tflite (signature name,
axis permutation) travels in the artifact sidecar as `provenance["io"]`.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekit.backends.base import Runner
from edgekit.core.errors import BackendError, InvalidInputError, TargetUnavailableError, first_line
from edgekit.core.tensors import TensorSpec

SIGNATURE_KEY = "serving_default"
# ONNX channels-first -> TFLite channels-last, by rank (what onnx2tf does to every such tensor)
CHANNELS_LAST = {3: (0, 2, 1), 4: (0, 2, 3, 1), 5: (0, 2, 3, 4, 1)}
INSTALL_HINT = "pip install 'edgekit[tflite]'  (or tflite-runtime on a device that only runs models)"


@dataclass(frozen=True)
class Binding:
    """One model input/output: its ONNX-side name (= the .tflite signature name) and layout change."""

    name: str
    perm: tuple[int, ...] | None = None  # ONNX axes -> .tflite axes; None = same layout

    def to_dict(self) -> dict:
        return {"name": self.name, "perm": list(self.perm) if self.perm else None}

    @classmethod
    def from_dict(cls, d: dict) -> "Binding":
        return cls(d["name"], tuple(d["perm"]) if d.get("perm") else None)


@dataclass(frozen=True)
class IoMap:
    inputs: tuple[Binding, ...]
    outputs: tuple[Binding, ...]

    def to_dict(self) -> dict:
        return {"inputs": [b.to_dict() for b in self.inputs], "outputs": [b.to_dict() for b in self.outputs]}

    @classmethod
    def from_dict(cls, d: dict | None) -> "IoMap | None":
        if not d:
            return None
        return cls(tuple(Binding.from_dict(b) for b in d["inputs"]), tuple(Binding.from_dict(b) for b in d["outputs"]))


def interpreter_class():
    """ai-edge-litert's Interpreter, else tflite-runtime's (many Raspberry Pi images ship only that)."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter
        except ImportError as e:
            raise TargetUnavailableError("no TFLite runtime is installed (ai-edge-litert or tflite-runtime)",
                                         hint=INSTALL_HINT) from e
    return Interpreter


class NativeLog:
    """What C++ code printed to fd 2 while silenced; its error lines explain failures Python reports vaguely."""

    text = ""

    def errors(self) -> str:
        lines = [ln.strip() for ln in self.text.splitlines() if "ERROR" in ln or "error:" in ln]
        return " | ".join(lines[-2:])[:400]


@contextlib.contextmanager
def quiet_native_logs(log: NativeLog | None = None):
    """Send C++ log lines (fd 2) to a temporary file; Python's stderr keeps the terminal for progress."""
    try:
        saved = os.dup(2)
    except OSError:  # no real fd 2 (embedded interpreters)
        yield
        return
    sys.stderr.flush()
    old_stderr = sys.stderr
    with tempfile.TemporaryFile() as sink, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        os.dup2(sink.fileno(), 2)
        sys.stderr = os.fdopen(os.dup(saved), "w", buffering=1, closefd=True)
        try:
            yield
        finally:
            # not closed: a logging handler created meanwhile may hold it; it is freed with its last user
            sys.stderr.flush()
            sys.stderr = old_stderr
            os.dup2(saved, 2)
            os.close(saved)
            if log is not None:
                sink.seek(0)
                log.text = sink.read().decode(errors="replace")


def load_interpreter(model: Path | bytes, threads: int | None = None, preserve_all_tensors: bool = False):
    Interpreter = interpreter_class()
    kwargs = {"num_threads": threads} if threads else {}
    if preserve_all_tensors:
        kwargs["experimental_preserve_all_tensors"] = True
    log = NativeLog()
    try:
        with quiet_native_logs(log):  # "Created TensorFlow Lite XNNPACK delegate" on every load
            if isinstance(model, (bytes, bytearray)):
                interp = Interpreter(model_content=bytes(model), **kwargs)
            else:
                interp = Interpreter(model_path=str(model), **kwargs)
            interp.allocate_tensors()
    except ValueError as e:  # the runtime's message for a file that is not a flatbuffer model
        where = model if isinstance(model, Path) else "the model"
        raise InvalidInputError(f"{where} is not a readable .tflite model: {first_line(e, 400)}") from e
    except RuntimeError as e:
        raise BackendError(f"LiteRT could not prepare the model: {log.errors() or first_line(e, 400)}",
                           hint="an op may be missing from this runtime build; check `edgekit doctor`") from e
    return interp


@dataclass
class _Port:
    """A bound tensor of the interpreter."""

    name: str
    index: int
    dtype: np.dtype
    shape: tuple[int, ...]
    perm: tuple[int, ...] | None
    scale: float
    zero_point: int

    @property
    def quantized(self) -> bool:
        return self.scale != 0.0 and np.issubdtype(self.dtype, np.integer)


def _port(name: str, detail: dict, perm) -> _Port:
    scale, zp = detail.get("quantization", (0.0, 0))
    return _Port(name, detail["index"], np.dtype(detail["dtype"]), tuple(int(d) for d in detail["shape"]), perm,
                 float(scale), int(zp))


def signature_details(interp) -> tuple[dict, dict] | None:
    try:
        if SIGNATURE_KEY not in interp.get_signature_list():
            keys = list(interp.get_signature_list())
            if len(keys) != 1:
                return None
            runner = interp.get_signature_runner(keys[0])
        else:
            runner = interp.get_signature_runner(SIGNATURE_KEY)
        return runner.get_input_details(), runner.get_output_details()
    except (ValueError, AttributeError):  # no signature, or an old tflite-runtime
        return None


def signature_inputs(model: bytes) -> dict[str, dict]:
    """name -> tensor details of the model's `serving_default` inputs."""
    details = signature_details(load_interpreter(model))
    if details is None:
        raise InvalidInputError("the .tflite has no signature naming its inputs")
    return details[0]


def bind(interp, specs: list[TensorSpec], io: IoMap | None) -> tuple[list[_Port], list[_Port]]:
    """Match the artifact's ONNX-layout inputs/outputs to interpreter tensors."""
    sig = signature_details(interp)
    in_details = sig[0] if sig else {d["name"]: d for d in interp.get_input_details()}
    out_details = sig[1] if sig else {d["name"]: d for d in interp.get_output_details()}
    in_names = [b.name for b in io.inputs] if io else [s.name for s in specs] or list(in_details)
    in_perms = {b.name: b.perm for b in io.inputs} if io else {}
    spec_by_name = {s.name: s for s in specs}
    inputs = []
    for pos, name in enumerate(in_names):
        detail = _pick(in_details, name, pos, "input")
        perm = in_perms[name] if name in in_perms else _guess_perm(name, spec_by_name.get(name), detail)
        inputs.append(_port(name, detail, perm))
    out_names = [b.name for b in io.outputs] if io else list(out_details)
    out_perms = {b.name: b.perm for b in io.outputs} if io else {}
    outputs = [_port(n, _pick(out_details, n, pos, "output"), out_perms.get(n)) for pos, n in enumerate(out_names)]
    return inputs, outputs


def _pick(details: dict, name: str, position: int, what: str) -> dict:
    if name in details:
        return details[name]
    ordered = list(details.values())
    if position < len(ordered):  # a file renamed elsewhere: fall back to the model's own order
        return ordered[position]
    raise InvalidInputError(f"the .tflite has no {what} '{name}'", hint=f"its {what}s: {', '.join(details)}")


def _guess_perm(name: str, spec: TensorSpec | None, detail: dict):
    """Layout of a .tflite without edgekit's sidecar: same shape, or the channels-last version of it."""
    if spec is None:
        return None
    shape = tuple(int(d) for d in detail["shape"])
    if spec.accepts(shape):
        return None
    perm = CHANNELS_LAST.get(len(spec.shape))
    if perm and spec.accepts(tuple(shape[perm.index(i)] for i in range(len(perm)))):
        return perm
    raise InvalidInputError(
        f"input '{name}': cannot map the shape {spec.display_shape()} onto the .tflite input "
        f"{'x'.join(map(str, shape))} (neither the same layout nor its channels-last version)",
        hint=f"give the shape the .tflite expects: --input {name}:{'x'.join(map(str, shape))}",
    )


def to_model_layout(x: np.ndarray, perm) -> np.ndarray:
    return np.ascontiguousarray(x.transpose(perm)) if perm else x


def scalar_as(x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A scalar into the 1-element tensor onnx2tf makes of a scalar input (silero-vad's sample rate)."""
    return x.reshape(shape) if x.ndim == 0 and int(np.prod(shape)) == 1 else x


def to_onnx_layout(y: np.ndarray, perm) -> np.ndarray:
    return np.ascontiguousarray(y.transpose(np.argsort(perm))) if perm else y


def quantize_array(x: np.ndarray, port: _Port) -> np.ndarray:
    info = np.iinfo(port.dtype)
    return np.clip(np.round(x / port.scale) + port.zero_point, info.min, info.max).astype(port.dtype)


def dequantize_array(q: np.ndarray, port: _Port) -> np.ndarray:
    return ((q.astype(np.float32) - port.zero_point) * port.scale).astype(np.float32)


class TfliteRunner(Runner):
    def __init__(self, model: Path | bytes, specs: list[TensorSpec], io: IoMap | None, threads: int | None):
        start = time.perf_counter()
        self.interp = load_interpreter(model if isinstance(model, (bytes, bytearray)) else Path(model), threads)
        self.load_ms = (time.perf_counter() - start) * 1e3
        self.threads = threads
        self._inputs, self._outputs = bind(self.interp, specs, io)
        self._specs = {s.name: s for s in specs}
        self.input_specs = [self._specs.get(p.name) or self._native_spec(p) for p in self._inputs]
        self.output_names = [p.name for p in self._outputs]

    @staticmethod
    def _native_spec(p: _Port) -> TensorSpec:
        shape = p.shape if not p.perm else tuple(p.shape[p.perm.index(i)] for i in range(len(p.perm)))
        dtype = "float32" if p.quantized else p.dtype.name
        return TensorSpec(p.name, shape, dtype)

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        for port in self._inputs:
            if port.name not in feed:
                raise InvalidInputError(f"missing input '{port.name}'",
                                        hint="the model takes " + ", ".join(p.name for p in self._inputs))
            x = np.asarray(feed[port.name])
            spec = self._specs.get(port.name)
            if spec is not None and not spec.with_batch(None).accepts(x.shape):  # another batch: resized below
                raise InvalidInputError(f"input '{port.name}' has shape {'x'.join(map(str, x.shape))}, "
                                        f"the model expects {spec.display_shape()}")
            x = scalar_as(to_model_layout(x, port.perm), port.shape)
            if x.shape != port.shape:
                self._resize(port, x.shape)
            x = quantize_array(x, port) if port.quantized else x.astype(port.dtype, copy=False)
            self.interp.set_tensor(port.index, x)
        try:
            self.interp.invoke()
        except RuntimeError as e:
            raise BackendError(f"LiteRT inference failed: {first_line(e, 400)}") from e
        out = {}
        for port in self._outputs:
            y = self.interp.get_tensor(port.index)
            y = dequantize_array(y, port) if port.quantized else y.copy()
            out[port.name] = to_onnx_layout(y, port.perm)
        return out

    def _resize(self, port: _Port, shape: tuple[int, ...]) -> None:
        """Another batch size than the converted one: let LiteRT re-plan its tensors."""
        if len(shape) != len(port.shape):
            raise InvalidInputError(f"input '{port.name}' has rank {len(shape)}, the .tflite expects {len(port.shape)}")
        try:
            self.interp.resize_tensor_input(port.index, list(shape), strict=False)
            self.interp.allocate_tensors()
        except (RuntimeError, ValueError) as e:
            raise BackendError(f"the .tflite cannot take input '{port.name}' of shape {'x'.join(map(str, shape))}: "
                               f"{first_line(e, 400)}", hint="convert it again with that shape (--input)") from e
        port.shape = shape

    def close(self) -> None:
        self.interp = None
