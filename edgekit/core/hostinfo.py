"""What machine this is: CPU model and features, cores, OS, Python, runtime versions."""

from __future__ import annotations

import functools
import os
import platform
import sys
from importlib import metadata

RUNTIME_PACKAGES = {
    "onnxruntime": "onnxruntime",
    "onnx": "onnx",
    "torch": "torch",
    "openvino": "openvino",
    "nncf": "nncf",
    "ai-edge-litert": "ai-edge-litert",
    "litert-torch": "litert-torch",
    "ai-edge-quantizer": "ai-edge-quantizer",
    "tflite-runtime": "tflite-runtime",
    "onnx2tf": "onnx2tf",
    "tensorrt": "tensorrt",
    "torch-pruning": "torch-pruning",
}
INTERESTING_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16", "asimd", "asimddp", "sve", "i8mm")


@functools.lru_cache(maxsize=1)
def cpu_info() -> dict:
    name, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("model name", "Model", "Hardware") and name in ("", platform.machine(), platform.processor()):
                    name = value.strip()
                elif key in ("flags", "Features") and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    return {"name": name, "flags": sorted(f for f in INTERESTING_FLAGS if f in flags)}


def package_version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def runtime_versions() -> dict[str, str]:
    return {k: v for k, d in RUNTIME_PACKAGES.items() if (v := package_version(d))}


def environment() -> dict:
    cpu = cpu_info()
    return {
        "cpu": cpu["name"],
        "cpu_flags": cpu["flags"],
        "arch": platform.machine(),
        "cores": os.cpu_count(),
        "os": f"{platform.system()} {platform.release()}",
        "python": sys.version.split()[0],
        "runtimes": runtime_versions(),
    }
