"""The thin TensorRT layer: replay a BuildPlan through the builder API, load engines.

Every decision lives in `tensorrt_plan`; this module only turns names into TensorRT calls,
collects TensorRT's own error messages and reports parser errors node by node.
"""

from __future__ import annotations

import time
from pathlib import Path

from edgekit.backends.tensorrt.plan import BuildPlan, TrtVersion
from edgekit.core.atomic import atomic_path
from edgekit.core.errors import BackendError, TargetUnavailableError

INSTALL_HINT = ("TensorRT runs on NVIDIA GPUs: on the GPU machine, pip install 'edgekit[tensorrt]' "
                "(its wheels download from NVIDIA's index); on Jetson, TensorRT comes with JetPack")


def import_tensorrt():
    try:
        import tensorrt
    except ImportError as e:
        raise TargetUnavailableError("TensorRT is not installed", hint=INSTALL_HINT) from e
    except OSError as e:  # the wheel is there but libnvinfer / the CUDA libraries are not
        raise TargetUnavailableError(f"TensorRT does not load: {e}", hint=INSTALL_HINT) from e
    return tensorrt


def trt_version() -> TrtVersion:
    return TrtVersion.parse(import_tensorrt().__version__)


def make_logger(trt):
    """A TensorRT logger that keeps errors (for our message) and prints nothing below warnings."""

    class Logger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity, msg):
            if severity in (trt.ILogger.Severity.ERROR, trt.ILogger.Severity.INTERNAL_ERROR):
                self.errors.append(str(msg))

    return Logger()


def parser_errors(parser) -> list[str]:
    """Every ONNX parser error, each with the node (index, name, op) it came from."""
    found = []
    for i in range(parser.num_errors):
        err = parser.get_error(i)
        where = []
        if callable(getattr(err, "node_name", None)) and err.node_name():
            where.append(f"node '{err.node_name()}'")
        elif err.node() >= 0:
            where.append(f"node #{err.node()}")
        if callable(getattr(err, "node_operator", None)) and err.node_operator():
            where.append(f"op {err.node_operator()}")
        found.append(f"{' '.join(where) or 'model'}: {err.desc()}")
    return found


def build_engine(onnx_path: Path, plan: BuildPlan, out: Path, cache_dir: Path | None) -> dict:
    """Parse, configure from the plan, build, write the engine atomically; returns build facts."""
    trt = import_tensorrt()
    logger = make_logger(trt)
    builder = trt.Builder(logger)
    flags = 0
    for name in plan.network_flags:
        flags |= 1 << int(getattr(trt.NetworkDefinitionCreationFlag, name))
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)) or parser.num_errors:
        errors = parser_errors(parser) or logger.errors or ["the parser gave no reason"]
        raise BackendError(f"TensorRT could not parse {onnx_path.name}: " + "; ".join(errors),
                           hint="exclude the failing node from quantization (--exclude), or simplify the model")
    config = builder.create_builder_config()
    if plan.workspace_bytes:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, plan.workspace_bytes)
    config.builder_optimization_level = plan.optimization_level
    for name in plan.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, name))
    for name in plan.cleared_builder_flags:
        config.clear_flag(getattr(trt.BuilderFlag, name))
    if plan.hardware_compatibility:
        level = getattr(trt.HardwareCompatibilityLevel, plan.hardware_compatibility, None)
        if level is None:
            raise TargetUnavailableError(f"TensorRT {trt.__version__} has no hardware compatibility level "
                                         f"{plan.hardware_compatibility}", hint="use a newer TensorRT or hardware_compatibility = \"none\"")
        config.hardware_compatibility_level = level
    if plan.profiles:
        profile = builder.create_optimization_profile()
        for r in plan.profiles:
            profile.set_shape(r.name, r.min, r.opt, r.max)
        config.add_optimization_profile(profile)
    cache_path = cache_dir / plan.timing_cache_file if cache_dir and plan.timing_cache_file else None
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path and cache_path.exists() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    start = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - start
    if serialized is None:
        raise BackendError("TensorRT could not build the engine: " + ("; ".join(logger.errors) or "no reason given"),
                           hint="a lower optimization_level or a larger workspace_mb may help")
    with atomic_path(out) as tmp:
        tmp.write_bytes(memoryview(serialized))
    if cache_path:
        with atomic_path(cache_path) as tmp:
            tmp.write_bytes(memoryview(config.get_timing_cache().serialize()))
    return {"build_seconds": round(seconds, 2), "layers": network.num_layers,
            "timing_cache": str(cache_path) if cache_path else None}


def load_engine(path: Path, version_compatible: bool):
    trt = import_tensorrt()
    logger = make_logger(trt)
    runtime = trt.Runtime(logger)
    if version_compatible:
        runtime.engine_host_code_allowed = True  # version-compatible engines carry their own runtime
    engine = runtime.deserialize_cuda_engine(path.read_bytes())
    if engine is None:
        raise TargetUnavailableError(
            f"TensorRT could not load {path.name}: " + ("; ".join(logger.errors) or "no reason given"),
            hint="engines only load on the TensorRT version and GPU they were built for: rebuild it on this device")
    return trt, engine
