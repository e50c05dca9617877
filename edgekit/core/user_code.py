"""Code a user names on the command line: `package.module:name` or `path/to/file.py:name`."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

from edgekit.core.errors import InvalidInputError, first_line


def import_attribute(spec: str, kind: str, module_label: str = "module") -> tuple[object, str, str]:
    """(the attribute or None, module part, attribute name) of `spec`; a missing file or a module that fails to
    import is an InvalidInputError naming it. `kind` ("model", "task") says what the user meant to give,
    `module_label` how the message names a dotted module ("module", "task module")."""
    module_part, _, attr = spec.rpartition(":")
    if module_part.endswith(".py"):
        file = Path(module_part)
        if not file.exists():
            raise InvalidInputError(f"{kind} file not found: {file}")
        module_spec = importlib.util.spec_from_file_location(f"edgekit_{kind}_{file.stem}", file)
        module = importlib.util.module_from_spec(module_spec)
        sys.path.insert(0, str(file.parent.resolve()))  # let the file import its neighbours
        try:
            module_spec.loader.exec_module(module)
        except Exception as e:
            raise InvalidInputError(f"importing {file} failed: {first_line(e, 300)}") from e
        finally:
            sys.path.pop(0)
    else:
        try:
            module = importlib.import_module(module_part)
        except Exception as e:
            raise InvalidInputError(f"cannot import {module_label} '{module_part}': {first_line(e, 300)}") from e
    return getattr(module, attr, None), module_part, attr
