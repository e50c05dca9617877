"""Target registry: name -> "module:Class", imported only when looked up."""

from __future__ import annotations

import importlib

from edgekit.core.errors import InvalidInputError

BACKENDS = {
    "onnxruntime": "edgekit.backends.onnxruntime:OnnxRuntimeBackend",
    "openvino": "edgekit.backends.openvino.backend:OpenVinoBackend",
    "tflite": "edgekit.backends.tflite.backend:TfliteBackend",
    "tensorrt": "edgekit.backends.tensorrt.backend:TensorRtBackend",
}

# pip extra that installs each target's runtime
EXTRAS = {"onnxruntime": None, "openvino": "openvino", "tflite": "tflite", "tensorrt": "tensorrt"}


def get_backend(name: str):
    """Instantiate a target's Backend; unknown names are a usage error (exit 2)."""
    if name not in BACKENDS:
        raise InvalidInputError(f"unknown target '{name}'", hint=f"one of {', '.join(sorted(BACKENDS))}")
    module_name, cls_name = BACKENDS[name].split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name == module_name:
            from edgekit.core.errors import TargetUnavailableError

            extra = EXTRAS.get(name)
            raise TargetUnavailableError(
                f"target '{name}' is not part of this edgekit build",
                hint=f"pip install 'edgekit[{extra}]'" if extra else None,
            ) from e
        raise
    return getattr(module, cls_name)()


def available_targets() -> dict[str, str | None]:
    """name -> None when usable here, else the reason it is not."""
    from edgekit.core.errors import TargetUnavailableError

    status = {}
    for name in BACKENDS:
        try:
            get_backend(name).check_available()
            status[name] = None
        except TargetUnavailableError as e:
            status[name] = e.message
    return status


def target_for_format(fmt: str) -> str:
    return {"onnx": "onnxruntime", "ort": "onnxruntime", "openvino-ir": "openvino", "tflite": "tflite",
            "tensorrt-engine": "tensorrt"}.get(fmt, "onnxruntime")


def load_profile(name_or_path: str):
    """A device profile (edgekit.core.profiles) whose target is a registered one; `auto` picks the best CPU target."""
    from dataclasses import replace

    from edgekit.core.profiles import read_profile

    profile = read_profile(name_or_path)
    if profile.runtime.target == "auto":
        profile = replace(profile, runtime=replace(profile.runtime, target=best_cpu_target()))
    if profile.runtime.target not in BACKENDS:
        raise InvalidInputError(
            f"runtime.target = '{profile.runtime.target}' in {profile.source} is not a known target",
            hint=f"one of {', '.join(sorted(BACKENDS))}",
        )
    return profile


def best_cpu_target() -> str:
    """OpenVINO when installed (faster int8 on x86 here), else ONNX Runtime."""
    import importlib.util

    return "openvino" if importlib.util.find_spec("openvino") and importlib.util.find_spec("nncf") else "onnxruntime"
