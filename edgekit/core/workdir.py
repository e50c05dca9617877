"""Libraries that write into the current directory (ONNX Runtime's shape inference leaves
`sym_shape_infer_temp.onnx` and `<uuid>.data` files there when it gives up) run inside a private
folder instead, so nothing lands beside the user's files."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


@contextlib.contextmanager
def working_directory(folder: Path):
    """Run the block with `folder` as the current directory; paths given to it must be absolute."""
    previous = Path.cwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(previous)
