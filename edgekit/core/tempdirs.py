"""Every library's temporary files inside the command's output folder, not in /tmp.

ONNX Runtime's quantizer, NNCF, onnx2tf and edgekit's own stages make temporary folders with `tempfile`; a run
killed mid-way (Ctrl-C twice, a timeout's SIGKILL, a full disk) used to leave them in /tmp, 40 MB a model
(seen here: `edgekit-ort-*/prepared.onnx`, `ort.quant.*`). Inside `temp_files_in(out)`, `tempfile` and the
TMPDIR of child processes point at a private `.edgekit-tmp-<pid>-*` folder in `out`, removed when the block ends;
one left by a killed run is removed by the next run into the same folder.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

PREFIX = ".edgekit-tmp-"
_active: list[Path] = []  # the private folder in use (nested commands share the outer one)


@contextlib.contextmanager
def temp_files_in(folder: Path):
    """The block's temporary files go to a private folder inside `folder` (created for the block when missing,
    and removed again if nothing else was written there)."""
    if _active:
        yield _active[-1]
        return
    folder = Path(folder).absolute()  # libraries may change the current directory meanwhile
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    remove_stale(folder)
    private = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-", dir=folder))
    saved = tempfile.tempdir, os.environ.get("TMPDIR")
    tempfile.tempdir, os.environ["TMPDIR"] = str(private), str(private)
    _active.append(private)
    try:
        yield private
    finally:
        _active.pop()
        tempfile.tempdir = saved[0]
        if saved[1] is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = saved[1]
        shutil.rmtree(private, ignore_errors=True)
        if created:
            with contextlib.suppress(OSError):  # not empty: the command wrote its results there
                folder.rmdir()


def remove_stale(folder: Path) -> list[Path]:
    """Private folders in `folder` whose process is gone (a killed run's), removed."""
    removed = []
    for path in folder.glob(PREFIX + "*"):
        pid = path.name[len(PREFIX):].split("-", 1)[0]
        if path.is_dir() and pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True
