"""`edgekit compile --target tensorrt --device ssh://jetson`: build the engine on the device itself.

Engines are tied to the TensorRT version and GPU that built them, so a Jetson's engine is built on the
Jetson (device_runner_trt: the Python API, or trtexec). The engine, the build log and the timing cache
come back; the sidecar records the device's TensorRT, CUDA, GPU and compute capability.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from edgekit.core.artifact import Artifact
from edgekit.core.atomic import atomic_path
from edgekit.core.errors import InvalidInputError
from edgekit.remote.jobs import RemoteOptions, run_job
from edgekit.remote.ssh import Device


def build_inputs(source: Artifact, overrides) -> list[dict]:
    """Each input with the shape the engine is built for (dynamic batch -> 1 unless --input says otherwise)."""
    by_name = {s.name: s for s in overrides}
    unknown = set(by_name) - {s.name for s in source.inputs}
    if unknown:
        raise InvalidInputError(f"--input names '{sorted(unknown)[0]}', which the model does not have")
    fields = []
    for spec in source.inputs:
        chosen = by_name.get(spec.name, spec)
        fields.append({**spec.to_dict(), "build_shape": list(chosen.concrete_shape(1))})
    return fields


def timing_cache_path(out_dir: Path, device: Device) -> Path:
    """One timing cache per device, kept beside the engines (it speeds up the next build there)."""
    return out_dir / ".timing-cache" / (device.slug + ".cache")


def compile_on_device(source: Artifact, device: Device, precision: str, overrides, extra: dict, out_dir: Path,
                      remote: RemoteOptions) -> Artifact:
    if source.format != "onnx":
        raise InvalidInputError(f"TensorRT builds engines from ONNX, got {source.format}: {source.path}")
    if not source.inputs:
        raise InvalidInputError(f"{source.path.name} has no input description", hint="keep its .json sidecar beside it")
    out_dir = Path(out_dir)
    cache = timing_cache_path(out_dir, device)
    job = {"command": "build-trt", "model": "model.onnx", "format": "onnx", "precision": precision,
           "model_precision": source.precision, "inputs": build_inputs(source, overrides), "options": dict(extra),
           "build_timeout": remote.timeout}
    files = {"model.onnx": source.path}
    if cache.exists():
        files["timing.cache"] = cache
        job["timing_cache"] = "timing.cache"
    with tempfile.TemporaryDirectory(prefix="edgekit-trt-") as tmp:
        fetched = run_job(device, job, files, Path(tmp), remote, progress=("building engine", 1))
        res = fetched.result
        built = precision if precision != "fp32" else source.precision
        engine = out_dir / f"{source.path.stem}.{built}.engine"
        log = engine.with_suffix(".build.log")
        for name, final in (("model.engine", engine), ("build.log", log), ("timing.cache", cache)):
            if (fetched.files / name).exists():
                with atomic_path(final) as dst:
                    shutil.copyfile(fetched.files / name, dst)
    env = res.get("environment", {})
    art = Artifact(
        path=engine, format="tensorrt-engine", precision=built, target="tensorrt", inputs=source.inputs,
        outputs=source.outputs,
        provenance={"from": source.path.name, "built_on": device.url, "builder": res.get("builder"),
                    "tensorrt": res.get("tensorrt"), "cuda": res.get("cuda"), "gpu": res.get("gpu"),
                    "compute_capability": res.get("compute_capability"), "build_options": res.get("plan"),
                    "build_seconds": res.get("build_seconds"), "build_log": log.name,
                    "device": {k: env.get(k) for k in ("model", "cpu", "os", "python") if env.get(k)}},
    )
    return art.save_sidecar()
