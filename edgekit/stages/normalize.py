"""The ONNX every target starts from (edgekit.onnx.normalize), as an Artifact whose sidecar records
what was changed: the opset upgrade, the axes fixed from the data, the simplification and its check."""

from __future__ import annotations

import contextlib
from dataclasses import replace
from pathlib import Path

from edgekit.core.artifact import Artifact
from edgekit.core.console import note
from edgekit.core.tensors import TensorSpec


def normalized_source(source: Artifact, out_dir: Path, specs: list[TensorSpec], data=None) -> Artifact:
    """`source` itself when it is not an FP32 ONNX or needs nothing; else `OUT/normalized/<name>.onnx`."""
    from edgekit.core.onnx_model import graph_inputs, load_onnx
    from edgekit.onnx.normalize import normalize_onnx

    if source.format != "onnx" or source.precision != "fp32":
        return source
    feed = next(iter(data)).feed if data is not None else None
    result = normalize_onnx(source.path, out_dir, specs, feed)
    if not result.changed:
        return source
    note("normalised " + source.path.name + ": " + describe(result.changes))
    inputs = resolved(graph_inputs(load_onnx(result.path, load_external_data=False)), specs)
    art = replace(source, path=result.path, inputs=inputs,
                  provenance={**source.provenance, "from": source.path.name, "normalized": result.changes})
    return art.save_sidecar()


@contextlib.contextmanager
def removed_on_failure(art: Artifact, source: Artifact):
    """The normalised model stays only when the command that made it succeeds."""
    try:
        yield
    except BaseException:
        if art is not source:
            for path in (*art.files(), art.sidecar_path):
                path.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                art.path.parent.rmdir()
        raise


def resolved(model_inputs: list[TensorSpec], specs: list[TensorSpec]) -> list[TensorSpec]:
    """The normalised model's inputs, each keeping the batch axis the command was given."""
    axes = {s.name: s.batch_axis for s in specs}
    return [replace(s, batch_axis=axes.get(s.name, s.batch_axis)) if s.shape else s for s in model_inputs]


def describe(changes: dict) -> str:
    parts = []
    if "opset" in changes:
        parts.append(f"opset {changes['opset'][0]} -> {changes['opset'][1]}")
    for name, dims in changes.get("fixed_shapes", {}).items():
        parts.append(f"{name} fixed at " + "x".join("?" if d is None else str(d) for d in dims))
    if changes.get("simplified"):
        parts.append("simplified with onnxslim")
    if "max_rel_err" in changes.get("check", {}):
        parts.append(f"outputs match the original (max rel err {changes['check']['max_rel_err']:.1e})")
    return ", ".join(parts)
