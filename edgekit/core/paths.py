"""The cheapest checks a command makes, before it imports anything heavy: do the files it names exist?

Stdlib only, so a typo'd path answers in well under a second instead of after ONNX, a runtime or
PyTorch has been imported.
"""

from __future__ import annotations

from pathlib import Path

from edgekit.core.errors import InvalidInputError


def check_model_path(model, what: str = "model") -> None:
    """A model given as a path must exist; `file.py:factory` needs its file; `pkg.module:factory` and
    live objects are checked where they are loaded."""
    if model is None or not isinstance(model, (str, Path)):
        return
    text = str(model)
    path = Path(text)
    if path.exists():
        return
    head, sep, _ = text.rpartition(":")
    if sep and head.endswith(".py") and not Path(head).exists():
        raise InvalidInputError(f"{what} file not found: {head}", hint="give FILE.py:FACTORY of an existing file")
    if sep and not head.endswith(".py") and "/" not in head and not path.suffix:
        return  # pkg.module:factory: its import says what is missing
    if not sep:
        raise InvalidInputError(f"{what} file not found: {path}")


def check_data_path(data, option: str) -> None:
    if isinstance(data, (str, Path)) and not Path(data).exists():
        raise InvalidInputError(f"data not found: {data} ({option})")
