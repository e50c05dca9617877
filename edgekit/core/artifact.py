"""Artifact: a model file on disk plus its JSON sidecar (`<file>.json`).

Stages hand each other Artifacts, never live objects, so every stage can run on its own.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from edgekit.core.atomic import write_json
from edgekit.core.errors import InvalidInputError
from edgekit.core.tensors import TensorSpec
from edgekit.core.version import __version__

SIDECAR_SCHEMA = "edgekit.artifact/1"

# file suffix -> format, for files that arrive without a sidecar
FORMATS_BY_SUFFIX = {
    ".onnx": "onnx",
    ".ort": "ort",
    ".xml": "openvino-ir",
    ".tflite": "tflite",
    ".engine": "tensorrt-engine",
    ".plan": "tensorrt-engine",
    ".pt2": "pt2",
}


@dataclass
class Artifact:
    path: Path
    format: str
    precision: str = "fp32"
    target: str | None = None
    inputs: list[TensorSpec] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    provenance: dict = field(default_factory=dict)

    @property
    def sidecar_path(self) -> Path:
        return self.path.with_name(self.path.name + ".json")

    def files(self) -> list[Path]:
        """Every file the artifact consists of (IR has a .bin beside the .xml, an ONNX may have its weights
        in external data files)."""
        extra = [self.path.with_suffix(".bin")] if self.format == "openvino-ir" else []
        if self.format == "onnx" and self.path.exists():
            from edgekit.core.onnx_model import external_data_files

            try:
                extra = external_data_files(self.path)
            except Exception:  # an unreadable model is reported where it is loaded, not here
                extra = []
        return [self.path, *[p for p in extra if p.exists()]]

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.files())

    def sha256(self) -> str:
        h = hashlib.sha256()
        for p in self.files():
            h.update(file_sha256(p).encode())
        return h.hexdigest()

    def to_dict(self) -> dict:
        return {
            "schema": SIDECAR_SCHEMA,
            "edgekit_version": __version__,
            "file": self.path.name,
            "format": self.format,
            "precision": self.precision,
            "target": self.target,
            "inputs": [s.to_dict() for s in self.inputs],
            "outputs": list(self.outputs),
            "provenance": self.provenance,
        }

    def save_sidecar(self) -> "Artifact":
        write_json(self.sidecar_path, self.to_dict())
        return self

    @classmethod
    def load(cls, path: str | Path) -> "Artifact":
        """Open a model file, reading its sidecar if there is one, else inferring the format."""
        path = Path(path)
        if not path.exists():
            raise InvalidInputError(f"model file not found: {path}")
        sidecar = path.with_name(path.name + ".json")
        if sidecar.exists():
            try:
                d = json.loads(sidecar.read_text())
                return cls(
                    path=path, format=d["format"], precision=d.get("precision", "fp32"),
                    target=d.get("target"), inputs=[TensorSpec.from_dict(s) for s in d.get("inputs", [])],
                    outputs=d.get("outputs", []), provenance=d.get("provenance", {}),
                )
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise InvalidInputError(f"corrupt sidecar {sidecar}: {e}", hint="delete it to infer the format") from e
        fmt = FORMATS_BY_SUFFIX.get(path.suffix.lower())
        if fmt is None:
            raise InvalidInputError(
                f"unknown model format '{path.suffix}' for {path}",
                hint="expected one of " + ", ".join(sorted(FORMATS_BY_SUFFIX)),
            )
        art = cls(path=path, format=fmt)
        if fmt == "onnx":
            from edgekit.core.onnx_model import describe_onnx

            info = describe_onnx(path)
            art.inputs, art.outputs = info.inputs, info.outputs
            art.precision = info.precision
        return art


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
