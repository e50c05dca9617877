"""Loading a user's PyTorch model: `file.py:factory`, `pkg.module:factory`, `.pt2`, TorchScript.

Weights load with `torch.load(weights_only=True)` or safetensors; a fully pickled model runs
arbitrary code when loaded, so it is refused unless the user says `--trust-pickle`.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from edgekit.core.errors import InvalidInputError, TargetUnavailableError, first_line
from edgekit.core.user_code import import_attribute

PYTORCH_SUFFIXES = {".pt2", ".pt", ".pth", ".ts", ".jit"}


def is_pytorch_spec(spec: str) -> bool:
    path = Path(spec)
    if path.suffix in PYTORCH_SUFFIXES:
        return True
    return ":" in spec and not path.exists() and not spec.endswith(".onnx")


def require_torch():
    try:
        import torch
    except ImportError as e:
        raise TargetUnavailableError(
            "PyTorch is not installed; it is needed for PyTorch models", hint="pip install 'edgekit[torch]'"
        ) from e
    return torch


def load_torch_model(spec: str, weights: str | None = None, trust_pickle: bool = False):
    """Return an eval-mode nn.Module (or exported-program module) for a model spec."""
    torch = require_torch()

    path = Path(spec)
    if path.suffix == ".pt2":
        model = _load_pt2(path)
    elif path.suffix in PYTORCH_SUFFIXES:
        model = _load_serialized(path, trust_pickle)
    else:
        model = _call_factory(spec)
    if weights:
        load_weights(model, Path(weights))
    if isinstance(model, torch.nn.Module) and path.suffix != ".pt2":  # exported programs have no eval()
        model.eval()
    return model


def _load_pt2(path: Path):
    import torch

    if not path.exists():
        raise InvalidInputError(f"model file not found: {path}")
    try:
        return torch.export.load(str(path)).module()
    except Exception as e:
        raise InvalidInputError(f"{path} is not a readable torch.export .pt2 file ({first_line(e, 300)})") from e


def _load_serialized(path: Path, trust_pickle: bool):
    import torch

    if not path.exists():
        raise InvalidInputError(f"model file not found: {path}")
    if zipfile.is_zipfile(path) and _is_torchscript(path):
        try:
            return torch.jit.load(str(path), map_location="cpu")
        except Exception as e:
            raise InvalidInputError(f"{path} is not a readable TorchScript file ({first_line(e, 300)})") from e
    if not trust_pickle:
        raise InvalidInputError(
            f"{path} is a pickled model; loading it would run arbitrary code",
            hint="pass a factory (model.py:make_model --weights w.pt) or, if you trust the file, --trust-pickle",
        )
    try:
        model = torch.load(str(path), map_location="cpu", weights_only=False)
    except Exception as e:
        raise InvalidInputError(f"{path} is not a readable PyTorch file ({first_line(e, 300)})") from e
    if not isinstance(model, torch.nn.Module):
        raise InvalidInputError(f"{path} holds a {type(model).__name__}, not a model", hint="pass it as --weights")
    return model


def _is_torchscript(path: Path) -> bool:
    with zipfile.ZipFile(path) as z:
        return any(n.endswith("constants.pkl") or "/code/" in n for n in z.namelist())


def _call_factory(spec: str):
    module_part, sep, attr = spec.rpartition(":")
    if not sep or not attr:
        raise InvalidInputError(f"bad model '{spec}'", hint="use file.py:factory, package.module:factory or a .pt2")
    factory, module_part, attr = import_attribute(spec, "model")
    if factory is None:
        raise InvalidInputError(f"'{module_part}' has no attribute '{attr}'")
    try:
        return factory() if callable(factory) and not _is_module(factory) else factory
    except Exception as e:
        raise InvalidInputError(f"calling {spec}() failed: {first_line(e, 300)}") from e


def _is_module(obj) -> bool:
    import torch

    return isinstance(obj, torch.nn.Module)


def load_weights(model, path: Path) -> None:
    import torch

    if not path.exists():
        raise InvalidInputError(f"weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        raise InvalidInputError(
            f"cannot load weights {path} ({first_line(e, 300)})",
            hint="weights load as a state dict (weights_only=True) or safetensors",
        ) from e
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise InvalidInputError(f"{path} holds a {type(state).__name__}, not a state dict")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise InvalidInputError(f"weights {path} do not fit the model: {first_line(e, 300)}") from e

