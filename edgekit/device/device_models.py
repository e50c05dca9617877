"""edgekit's on-device model wrappers, beside device_runner.py: each takes and returns float arrays in the
ONNX layout, like edgekit's local runners. Standard library + numpy + the target runtime ONLY (Python 3.8+).
"""

from __future__ import annotations

import time

try:  # on the device: a file beside device_runner.py
    from device_runner import RUNTIME_OF_FORMAT, RunnerError, first_line, need
except ImportError:  # imported as part of the edgekit package (import checks)
    from .device_runner import RUNTIME_OF_FORMAT, RunnerError, first_line, need


class OrtModel:
    def __init__(self, path: str, threads, options: dict):
        ort = need("onnxruntime", "onnxruntime")
        so = ort.SessionOptions()
        if threads:  # the same settings as edgekit.backends.onnxruntime, so outputs match bit for bit
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.log_severity_level = 3
        providers = options.get("providers") or ["CPUExecutionProvider"]
        try:
            self.session = ort.InferenceSession(path, so, providers=providers)
        except Exception as e:
            raise RunnerError("runtime", f"onnxruntime could not load the model: {first_line(e)}") from e
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.effective_precision = None

    def infer(self, feed: dict) -> dict:
        return dict(zip(self.output_names, self.session.run(self.output_names, feed)))


class OpenVinoModel:
    """The settings of edgekit.backends.openvino.backend: LATENCY hint, threads on CPU, f32 for FP32 artifacts."""

    def __init__(self, path: str, threads, options: dict, precision: str, output_names: list):
        ov = need("openvino", "openvino")
        device = str(options.get("device") or "CPU")
        config = {"PERFORMANCE_HINT": "LATENCY"}
        if threads and device.startswith("CPU"):  # other devices reject the property
            config["INFERENCE_NUM_THREADS"] = int(threads)
        hint = options.get("inference_precision") or ("f32" if precision == "fp32" else None)
        if hint:  # AMX/bf16 CPUs otherwise run "FP32" in bf16
            config["INFERENCE_PRECISION_HINT"] = hint
        core = ov.Core()
        family = device.split(":")[0].split(".")[0]
        if family not in ("AUTO", "MULTI", "HETERO", "BATCH") and not any(
                d == device or d.startswith(device + ".") for d in core.available_devices):
            raise RunnerError("missing-dependency", f"OpenVINO device '{device}' is not present; devices present: "
                              + (", ".join(core.available_devices) or "none"))
        try:
            self.compiled = core.compile_model(core.read_model(path), device, config)
        except Exception as e:
            raise RunnerError("runtime", f"openvino could not compile the model: {first_line(e)}") from e
        self.request = self.compiled.create_infer_request()
        self.input_names = [p.get_any_name() for p in self.compiled.inputs]
        names = [p.get_any_name() for p in self.compiled.outputs]
        self.output_names = list(output_names) if len(output_names or []) == len(names) else names
        try:
            hint = self.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
            self.effective_precision = f"int8+{hint}" if precision == "int8" else hint
        except Exception:  # a device without the property
            self.effective_precision = None

    def infer(self, feed: dict) -> dict:
        return dict(zip(self.output_names, self.request.infer(feed, share_inputs=True).to_tuple()))


class TfliteModel:
    """LiteRT / tflite_runtime, NHWC inside and int8 I/O mapped to NCHW float outside."""

    def __init__(self, path: str, threads, onnx_inputs: list):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            Interpreter = need("tflite_runtime.interpreter", "tflite").Interpreter
        try:
            self.interp = Interpreter(model_path=path, num_threads=threads or None)
            self.interp.allocate_tensors()
        except Exception as e:
            raise RunnerError("runtime", f"LiteRT could not load the model: {first_line(e)}") from e
        self.inputs = self.interp.get_input_details()
        self.outputs = self.interp.get_output_details()
        self.onnx_shapes = {s["name"]: s["shape"] for s in onnx_inputs}
        self.input_names = [s["name"] for s in onnx_inputs] or [d["name"] for d in self.inputs]
        self.output_names = [d["name"] for d in self.outputs]
        self.effective_precision = None
        self.np = need("numpy", "numpy")
        self.nhwc = [nhwc_of(self.onnx_shapes.get(n), list(d["shape"])) for n, d in zip(self.input_names, self.inputs)]

    def infer(self, feed: dict) -> dict:
        np = self.np
        values = [feed[n] if n in feed else list(feed.values())[i] for i, n in enumerate(self.input_names)]
        values = [quantize(x.transpose(0, 2, 3, 1) if t else x, d, np) for x, d, t in zip(values, self.inputs, self.nhwc)]
        if any(tuple(d["shape"]) != x.shape for x, d in zip(values, self.inputs)):  # another batch size
            for x, d in zip(values, self.inputs):
                self.interp.resize_tensor_input(d["index"], list(x.shape))
            self.interp.allocate_tensors()
            self.inputs = self.interp.get_input_details()
        for x, d in zip(values, self.inputs):
            self.interp.set_tensor(d["index"], x)
        self.interp.invoke()
        out = {}
        for d in self.outputs:
            y = dequantize(self.interp.get_tensor(d["index"]), d, np)
            out[d["name"]] = y.transpose(0, 3, 1, 2) if any(self.nhwc) and y.ndim == 4 else y
        return out


def nhwc_of(onnx_shape, runtime_shape: list) -> bool:
    """True when the runtime tensor is the NHWC form of an NCHW ONNX input."""
    if not onnx_shape or len(onnx_shape) != 4 or len(runtime_shape) != 4:
        return False
    c, h, w = onnx_shape[1:]
    return list(runtime_shape[1:]) == [h, w, c] and list(runtime_shape[1:]) != [c, h, w]


def quantize(x, detail: dict, np):
    dtype = np.dtype(detail["dtype"])
    scale, zero = detail.get("quantization", (0.0, 0))
    if dtype.kind in "iu" and scale and x.dtype.kind == "f":
        info = np.iinfo(dtype)
        return np.clip(np.round(x / scale + zero), info.min, info.max).astype(dtype)
    return np.ascontiguousarray(x, dtype=dtype)


def dequantize(y, detail: dict, np):
    scale, zero = detail.get("quantization", (0.0, 0))
    if y.dtype.kind in "iu" and scale:
        return ((y.astype(np.float32) - zero) * scale).astype(np.float32)
    return y


def load_model(job: dict):
    runtime = RUNTIME_OF_FORMAT.get(job["format"])
    path, threads, options = job["model"], job.get("threads"), job.get("options") or {}
    start = time.perf_counter()
    if runtime == "onnxruntime":
        model = OrtModel(path, threads, options)
    elif runtime == "openvino":
        model = OpenVinoModel(path, threads, options, job.get("precision", "fp32"), job.get("outputs") or [])
    elif runtime == "tflite":
        model = TfliteModel(path, threads, job.get("inputs") or [])
    elif runtime == "tensorrt":
        from device_runner_trt import TrtModel

        model = TrtModel(path)
    else:
        raise RunnerError("bad-job", f"no runtime for format '{job['format']}'")
    model.load_ms = (time.perf_counter() - start) * 1e3
    return model
