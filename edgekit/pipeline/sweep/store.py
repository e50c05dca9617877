"""A sweep's records on disk: each finished source or point is one JSON file, written atomically once its files are
in place, so a record is the proof that a point is done (`--resume` trusts records, never folders)."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
from pathlib import Path

from edgekit.core.artifact import file_sha256
from edgekit.core.atomic import write_json

SETTINGS = "sweep-settings.json"


def content_key(*parts) -> str:
    """A short stable hash of JSON-able parts (model hash, data hash, settings)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def path_sha(path) -> str | None:
    """A file's sha256, or a folder's (its files' names and hashes); None when there is no path."""
    if path is None:
        return None
    p = Path(str(getattr(path, "path", path)))
    if p.is_file():
        return file_sha256(p)
    if p.is_dir():
        h = hashlib.sha256()
        for f in sorted(q for q in p.rglob("*") if q.is_file()):
            h.update(f"{f.relative_to(p)}:{file_sha256(f)}\n".encode())
        return h.hexdigest()
    return str(path)  # a data source object or a name: its description is the best key there is


def model_sha(spec: str, weights: str | None) -> str:
    """The model's content: the file (an ONNX, a .pt2, the .py of a factory), its weights."""
    file_part = spec.rsplit(":", 1)[0] if ":" in spec and not Path(spec).exists() else spec
    if not Path(file_part).is_file():  # pkg.module:factory: the module's file when it can be found
        import importlib.util

        try:
            found = importlib.util.find_spec(file_part)
            file_part = found.origin if found and found.origin else file_part
        except (ImportError, ValueError):
            pass
    return content_key(spec, path_sha(file_part) if Path(file_part).is_file() else file_part, path_sha(weights))


class Store:
    """out/records/<kind>-<key>.json; artifacts live in out/sources/<key>/ and out/points/<key>/."""

    def __init__(self, out_dir: Path):
        self.out_dir = out_dir
        self.folder = out_dir / "records"

    def path(self, kind: str, key: str) -> Path:
        return self.folder / f"{kind}-{key}.json"

    def load(self, kind: str, key: str) -> dict | None:
        """The record, when it exists and its files are still there."""
        path = self.path(kind, key)
        if not path.is_file():
            return None
        try:
            record = json.loads(path.read_text())
        except json.JSONDecodeError:
            return None
        files = record.get("files", [])
        return record if all((self.out_dir / f).exists() for f in files) else None

    def save(self, kind: str, key: str, record: dict) -> None:
        with disk_full_is_one_line(self.out_dir):
            write_json(self.path(kind, key), record)

    def save_settings(self, settings: dict) -> None:
        with disk_full_is_one_line(self.out_dir):
            write_json(self.out_dir / SETTINGS, settings)


@contextlib.contextmanager
def disk_full_is_one_line(out_dir: Path):
    """A full disk while writing: exit 2 with one line (the atomic write left nothing half-written)."""
    try:
        yield
    except OSError as e:
        if e.errno != errno.ENOSPC:
            raise
        from edgekit.core.errors import InvalidInputError

        raise InvalidInputError(f"no space left on the device of {out_dir}; finished points are kept",
                                hint=f"free some space, then `edgekit sweep --resume {out_dir}`") from None


def load_settings(out_dir: Path) -> dict:
    from edgekit.core.errors import InvalidInputError

    path = Path(out_dir) / SETTINGS
    if not path.is_file():
        raise InvalidInputError(f"--resume {out_dir}: no sweep there ({SETTINGS} missing)",
                                hint="give the output folder of an earlier `edgekit sweep`")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise InvalidInputError(f"--resume {out_dir}: {SETTINGS} is corrupt: {e}") from None


def publish_folder(tmp: Path, final: Path) -> None:
    """Move a finished build folder into place; a stale folder (a point interrupted before its record) goes first."""
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
