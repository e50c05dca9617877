"""Target registry: one line per target, its Backend class imported only when looked up."""

from __future__ import annotations

import importlib

from edgekit.core.errors import InvalidInputError

# name -> ("module:Backend class", the pip extra that installs its runtime)
TARGETS = {
    "onnxruntime": ("edgekit.backends.onnxruntime:OnnxRuntimeBackend", None),
    "openvino": ("edgekit.backends.openvino.backend:OpenVinoBackend", "openvino"),
    "tflite": ("edgekit.backends.tflite.backend:TfliteBackend", "tflite"),
    "tensorrt": ("edgekit.backends.tensorrt.backend:TensorRtBackend", "tensorrt"),
}
BACKENDS = {name: path for name, (path, _) in TARGETS.items()}
EXTRAS = {name: extra for name, (_, extra) in TARGETS.items()}


def get_backend(name: str):
    """Instantiate a target's Backend; unknown names are a usage error (exit 2)."""
    if name not in BACKENDS:
        raise InvalidInputError(f"unknown target '{name}'", hint=f"one of {', '.join(sorted(BACKENDS))}")
    return backend_class(name)()


def backend_class(name: str) -> type:
    """The Backend class of a registered target, without running anything of its runtime."""
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
    return getattr(module, cls_name)


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
    """The target whose runner loads files of this format (as each Backend declares); ONNX Runtime otherwise."""
    from edgekit.core.errors import TargetUnavailableError

    for name in BACKENDS:
        try:
            cls = backend_class(name)
        except TargetUnavailableError:  # not in this build: it runs nothing here
            continue
        if fmt == cls.deploy_format or fmt in cls.other_formats:
            return name
    return "onnxruntime"


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
