"""TensorRT on the device: engine build (Python API, or trtexec when that is what the device has) and runner.

Copied beside device_runner.py; standard library + numpy + TensorRT (+ cuda-python for the runner) only.
What to build (flags, shapes, trtexec arguments) is a pure function of the job and the TensorRT version,
so it is tested without a GPU; the TensorRT calls are a thin layer over it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time

try:  # on the device: a file beside device_runner.py
    from device_runner import RunnerError, emit, find_trtexec, need
except ImportError:  # imported as part of the edgekit package (import checks)
    from .device_runner import RunnerError, emit, find_trtexec, need

ENGINE, LOG, CACHE = os.path.join("out", "model.engine"), os.path.join("out", "build.log"), os.path.join("out", "timing.cache")


def version_tuple(version: str) -> tuple:
    return tuple(int(p) for p in re.findall(r"\d+", version)[:3]) or (0,)


def build_plan(job: dict, trt_version: str) -> dict:
    """Builder settings for this model on this TensorRT. Precision comes from the ONNX where TensorRT is
    strongly typed (10+: Q/DQ and fp16 casts in the graph; 11 has no INT8/FP16 flags at all)."""
    major = version_tuple(trt_version)[0]
    want, have = job.get("precision", "fp32"), job.get("model_precision", "fp32")
    opts = job.get("options") or {}
    if want == "int8" and have != "int8":
        raise RunnerError("bad-job", "an int8 TensorRT engine is built from a Q/DQ ONNX, this one is " + have,
                          hint="edgekit quantize MODEL --target tensorrt --calib DATA first")
    strongly_typed = major >= 10 and not (want == "fp16" and have == "fp32")
    if major >= 11 and not strongly_typed:
        raise RunnerError("bad-job", f"TensorRT {trt_version} takes precision from the ONNX and has no FP16 flag",
                          hint="edgekit quantize MODEL --target tensorrt --precision fp16 first")
    flags = []
    if not strongly_typed:
        flags += ["FP16"] if want in ("fp16", "int8") else []
        flags += ["INT8"] if want == "int8" else []  # before 10, explicit Q/DQ still needs the INT8 flag
    profiles = []
    for spec in job["inputs"]:
        shape, opt = spec["shape"], spec["build_shape"]
        if any(d is None for d in shape):
            top = max(int(opts.get("max_batch", opt[0])), opt[0])
            profiles.append({"name": spec["name"], "min": [1 if d is None else c for d, c in zip(shape, opt)],
                             "opt": list(opt), "max": [top if d is None else c for d, c in zip(shape, opt)]})
    return {"tensorrt": trt_version, "strongly_typed": strongly_typed, "flags": flags,
            "workspace_mb": int(opts.get("workspace_mb", 1024)),
            "optimization_level": int(opts.get("builder_optimization_level", 3)), "profiles": profiles,
            "hardware_compatible": bool(opts.get("hardware_compatible", False)),
            "version_compatible": bool(opts.get("version_compatible", False))}


def trtexec_command(trtexec: str, plan: dict, onnx: str, engine: str, cache: str) -> list:
    """trtexec arguments for the plan (an argv list: no shell sees the names)."""
    version = version_tuple(plan["tensorrt"])
    argv = [trtexec, f"--onnx={onnx}", f"--saveEngine={engine}", f"--timingCacheFile={cache}",
            "--skipInference" if version >= (8, 6) else "--buildOnly",
            f"--memPoolSize=workspace:{plan['workspace_mb']}"]  # MiB in every version
    if version >= (8, 6):
        argv.append(f"--builderOptimizationLevel={plan['optimization_level']}")
    if plan["strongly_typed"]:
        argv.append("--stronglyTyped")
    argv += ["--" + flag.lower() for flag in plan["flags"]]
    for key, arg in (("min", "--minShapes"), ("opt", "--optShapes"), ("max", "--maxShapes")):
        if plan["profiles"]:
            argv.append(arg + "=" + ",".join(
                f"{_shape_name(p['name'])}:{'x'.join(str(d) for d in p[key])}" for p in plan["profiles"]))
    if plan["hardware_compatible"]:
        argv.append("--hardwareCompatibilityLevel=ampere+")
    if plan["version_compatible"]:
        argv.append("--versionCompatible")
    return argv


def _shape_name(name: str) -> str:
    return f"'{name}'" if any(c in name for c in ":,") else name  # trtexec's own quoting for such names


def parse_trtexec_version(text: str):
    """'[TensorRT v100300]' -> '10.3.0'; '[TensorRT v8601]' -> '8.6.1'."""
    m = re.search(r"TensorRT v(\d+)", text)
    if not m:
        return None
    n = int(m.group(1))
    if n >= 10000:
        return f"{n // 10000}.{n // 100 % 100}.{n % 100}"
    return f"{n // 1000}.{n // 100 % 10}.{n % 100}"


def parse_trtexec_device(text: str) -> dict:
    found = {}
    for key, pattern in (("gpu", r"Selected Device:\s*(.+)"), ("compute_capability", r"Compute Capability:\s*([\d.]+)")):
        m = re.search(pattern, text)
        if m:
            found[key] = m.group(1).strip()
    return found


def build_engine(job: dict) -> dict:
    start = time.perf_counter()
    try:
        import tensorrt as trt
    except ImportError:
        trt = None
    trtexec = find_trtexec()
    if trt is None and trtexec is None:
        raise RunnerError("missing-dependency", "the device has neither the tensorrt Python module nor trtexec",
                          hint="on a Jetson: sudo apt install nvidia-tensorrt (JetPack) and use its system python3; "
                               "elsewhere install TensorRT with its trtexec, or pip install tensorrt")
    if job.get("timing_cache") and os.path.exists(job["timing_cache"]):
        os.replace(job["timing_cache"], CACHE)
    if trt is not None:
        plan = build_plan(job, trt.__version__)
        _build_python(trt, plan, job["model"])
        facts = {"builder": "tensorrt python API", **gpu_facts()}
    else:
        version = parse_trtexec_version(_run([trtexec, "--help"], 60)[1]) or "0"
        plan = build_plan(job, version)
        argv = trtexec_command(trtexec, plan, job["model"], ENGINE, CACHE)
        emit("progress", phase="build", done=0, total=1)
        code, log = _run(argv, float(job.get("build_timeout", 3600)))
        with open(LOG, "w") as f:
            f.write(log)
        if code != 0 or not os.path.exists(ENGINE):
            lines = [line for line in log.splitlines() if "[E]" in line or "ERROR" in line] or log.splitlines()[-3:]
            raise RunnerError("runtime", "trtexec failed: " + " | ".join(lines[-5:]))
        facts = {"builder": "trtexec", "trtexec": trtexec, **gpu_facts(), **parse_trtexec_device(log)}
    facts.update(tensorrt=plan["tensorrt"], plan=plan, build_seconds=round(time.perf_counter() - start, 2))
    return facts


def _run(argv: list, timeout: float):
    try:
        out = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                             timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        raise RunnerError("runtime", f"trtexec did not finish within {timeout:.0f} s") from e
    return out.returncode, out.stdout


def _build_python(trt, plan: dict, onnx: str) -> None:
    class Log(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.lines = []

        def log(self, severity, msg):
            self.lines.append(f"[{getattr(severity, 'name', severity)}] {msg}")

    logger = Log()
    builder = trt.Builder(logger)
    flags = 0
    if plan["strongly_typed"]:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    elif version_tuple(plan["tensorrt"])[0] < 10:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    try:
        if not parser.parse_from_file(onnx):
            errors = [_parser_error(parser.get_error(i)) for i in range(parser.num_errors)]
            raise RunnerError("runtime", "TensorRT could not parse the ONNX: " + "; ".join(errors))
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, plan["workspace_mb"] << 20)
        if hasattr(config, "builder_optimization_level"):
            config.builder_optimization_level = plan["optimization_level"]
        for flag in plan["flags"]:
            config.set_flag(getattr(trt.BuilderFlag, flag))
        if plan["version_compatible"]:
            config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
        if plan["hardware_compatible"]:
            config.hardware_compatibility_level = trt.HardwareCompatibilityLevel.AMPERE_PLUS
        if plan["profiles"]:
            profile = builder.create_optimization_profile()
            for p in plan["profiles"]:
                profile.set_shape(p["name"], p["min"], p["opt"], p["max"])
            config.add_optimization_profile(profile)
        cache_bytes = open(CACHE, "rb").read() if os.path.exists(CACHE) else b""
        config.set_timing_cache(config.create_timing_cache(cache_bytes), False)
        emit("progress", phase="build", done=0, total=1)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            errors = [line for line in logger.lines if "ERROR" in line] or logger.lines[-3:]
            raise RunnerError("runtime", "TensorRT engine build failed: " + " | ".join(errors[-5:]))
        with open(ENGINE, "wb") as f:
            f.write(serialized)
        with open(CACHE, "wb") as f:
            f.write(config.get_timing_cache().serialize())
    finally:
        with open(LOG, "w") as f:
            f.write("\n".join(logger.lines) + "\n")


def _parser_error(err) -> str:
    node = getattr(err, "node_name", lambda: "")() or str(err.node())
    op = getattr(err, "node_operator", lambda: "")()
    return f"node {node}" + (f" ({op})" if op else "") + f": {err.desc()}"


def gpu_facts() -> dict:
    """CUDA runtime version, GPU name and compute capability, from cuda-python, nvidia-smi or the CUDA install."""
    facts = {}
    try:
        cudart = _cudart()
        err, version = cudart.cudaRuntimeGetVersion()
        if int(err) == 0:
            facts["cuda"] = f"{version // 1000}.{version % 1000 // 10}"
        err, props = cudart.cudaGetDeviceProperties(0)
        if int(err) == 0:
            name = props.name
            facts["gpu"] = (name.decode(errors="replace") if isinstance(name, bytes) else str(name)).strip("\x00 ")
            facts["compute_capability"] = f"{props.major}.{props.minor}"
    except ImportError:
        pass
    if "cuda" not in facts:
        for path in ("/usr/local/cuda/version.json",):
            try:
                with open(path) as f:
                    facts["cuda"] = json.load(f)["cuda"]["version"]
            except (OSError, KeyError, ValueError):
                pass
    if "compute_capability" not in facts:
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=name,compute_cap", "--format=csv,noheader"],
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, universal_newlines=True, timeout=10)
            name, _, cap = out.stdout.splitlines()[0].partition(",")
            facts.update(gpu=name.strip(), compute_capability=cap.strip())
        except (OSError, IndexError, subprocess.TimeoutExpired):
            pass
    return facts


def _cudart():
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        from cuda import cudart
    return cudart


class TrtModel:
    """Name-based I/O on a deserialized engine; host buffers in, host buffers out (end-to-end timing)."""

    def __init__(self, path: str):
        trt = need("tensorrt", "tensorrt")
        np = need("numpy", "numpy")
        try:
            self.cudart = _cudart()
        except ImportError as e:
            raise RunnerError("missing-dependency", "cuda-python is not installed", package="cuda-python") from e
        self.trt, self.np = trt, np
        self.logger = trt.Logger(trt.Logger.WARNING)
        with open(path, "rb") as f:
            self.engine = trt.Runtime(self.logger).deserialize_cuda_engine(f.read())
        if self.engine is None:
            raise RunnerError("runtime", "TensorRT could not load the engine: it was built with another TensorRT "
                              "version or GPU", hint="rebuild it on this device: edgekit compile --target tensorrt --device ...")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.input_names = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.output_names = [n for n in names if n not in self.input_names]
        self.stream = self._ck(self.cudart.cudaStreamCreate())
        self.buffers = {}  # name -> (device pointer, bytes)
        self.effective_precision = None

    def _ck(self, result):
        err, *rest = result if isinstance(result, tuple) else (result,)
        if int(err) != 0:
            raise RunnerError("runtime", f"CUDA error {err}")
        return rest[0] if rest else None

    def _buffer(self, name: str, nbytes: int):
        ptr, size = self.buffers.get(name, (None, 0))
        if size < nbytes:
            if ptr is not None:
                self._ck(self.cudart.cudaFree(ptr))
            ptr = self._ck(self.cudart.cudaMalloc(nbytes))
            self.buffers[name] = (ptr, nbytes)
        self.context.set_tensor_address(name, int(ptr))
        return ptr

    def infer(self, feed: dict) -> dict:
        np, trt, cudart = self.np, self.trt, self.cudart
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        keep = []
        for i, name in enumerate(self.input_names):
            x = feed[name] if name in feed else list(feed.values())[i]
            x = np.ascontiguousarray(x, dtype=trt.nptype(self.engine.get_tensor_dtype(name)))
            keep.append(x)
            self.context.set_input_shape(name, x.shape)
            ptr = self._buffer(name, x.nbytes)
            self._ck(cudart.cudaMemcpyAsync(ptr, x.ctypes.data, x.nbytes, h2d, self.stream))
        out = {}
        for name in self.output_names:
            y = np.empty(tuple(self.context.get_tensor_shape(name)), dtype=trt.nptype(self.engine.get_tensor_dtype(name)))
            out[name] = y
            self._buffer(name, y.nbytes)
        if not self.context.execute_async_v3(self.stream):
            raise RunnerError("runtime", "TensorRT execute_async_v3 failed")
        for name, y in out.items():
            self._ck(cudart.cudaMemcpyAsync(y.ctypes.data, self.buffers[name][0], y.nbytes, d2h, self.stream))
        self._ck(cudart.cudaStreamSynchronize(self.stream))
        return {k: v.astype(np.float32) if v.dtype.kind == "f" else v for k, v in out.items()}


