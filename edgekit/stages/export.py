"""PyTorch -> ONNX (torch.export-based exporter), simplification, checks against PyTorch."""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekit.core.artifact import Artifact
from edgekit.core.atomic import atomic_path
from edgekit.core.errors import BackendError, InvalidInputError
from edgekit.core.progress import status
from edgekit.core.runlog import library_output
from edgekit.core.tensors import TensorSpec, random_feed


@dataclass(frozen=True)
class ExportOptions:
    inputs: tuple[TensorSpec, ...]
    dynamic_batch: bool = True
    opset: int | None = None
    simplify: bool = True
    atol: float = 1e-4
    rtol: float = 1e-4


def export_onnx(model, out: Path, options: ExportOptions, source_name: str = "") -> Artifact:
    """Export, simplify, check and compare with PyTorch; writes `out` and its sidecar atomically."""
    import onnx
    import torch

    if not options.inputs:
        raise InvalidInputError("a PyTorch model needs its inputs", hint="--input input:1x3x224x224")
    example = _example_args(options.inputs)
    with torch.no_grad():
        try:
            reference = model(*example)
        except Exception as e:
            raise InvalidInputError(
                f"the model does not run on inputs {', '.join(s.name + ':' + s.display_shape() for s in options.inputs)}: "
                f"{str(e).splitlines()[0] if str(e) else type(e).__name__}"
            ) from e
    output_names = _output_names(reference)
    out = Path(out)
    with atomic_path(out) as tmp, status("exporting to ONNX"):
        _torch_export(model, example, tmp, options, output_names)
        proto = onnx.load(str(tmp))
        if options.simplify:
            proto = _simplify(proto)
        try:
            onnx.checker.check_model(proto)
        except onnx.checker.ValidationError as e:
            raise BackendError(f"exported ONNX fails onnx.checker: {str(e).splitlines()[0]}") from e
        onnx.save(proto, str(tmp))
        max_diff = compare_with_torch(model, tmp, options)
    from edgekit.core.onnx_model import describe_model

    info = describe_model(proto)
    art = Artifact(
        path=out, format="onnx", precision="fp32", target=None, inputs=info.inputs, outputs=info.outputs,
        provenance={
            "from": source_name, "exporter": f"torch.onnx dynamo (torch {torch.__version__})",
            "opset": proto.opset_import[0].version, "simplified": options.simplify,
            "max_abs_diff_vs_torch": max_diff, "params": info.params, "macs": info.macs,
        },
    )
    return art.save_sidecar()


def _example_args(specs, batch: int = 1) -> tuple:
    import torch

    feed = random_feed([s.with_batch(batch) for s in specs])
    return tuple(torch.from_numpy(feed[s.name]) for s in specs)


def _output_names(reference) -> list[str]:
    count = len(reference) if isinstance(reference, (tuple, list)) else 1
    return ["output"] if count == 1 else [f"output_{i}" for i in range(count)]


def _torch_export(model, example, path: Path, options: ExportOptions, output_names: list[str]) -> None:
    import torch

    names = [s.name for s in options.inputs]
    dynamic = None
    if options.dynamic_batch:
        batch = torch.export.Dim("batch", min=1, max=1024)
        dynamic = tuple({0: batch} for _ in options.inputs)
    kwargs = dict(input_names=names, output_names=output_names, opset_version=options.opset)
    # the exporter logs every step at INFO and warns about things the user cannot act on
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings(), library_output("torch.onnx"):  # it prints each step on stdout
        warnings.simplefilter("ignore")
        try:
            if isinstance(model, torch.jit.ScriptModule):  # TorchScript only has the legacy exporter
                axes = {n: {0: "batch"} for n in names + output_names} if options.dynamic_batch else None
                torch.onnx.export(model, example, str(path), dynamo=False, dynamic_axes=axes, **kwargs)
            else:
                onnx_program = torch.onnx.export(
                    model, example, dynamo=True, dynamic_shapes=dynamic, verbose=False, **kwargs
                )
                onnx_program.save(str(path))
        except Exception as e:
            raise BackendError(f"torch.onnx.export failed: {_summary(e)}") from e


def _summary(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return " | ".join(lines[:3])[:600] or type(e).__name__


def _simplify(proto):
    try:
        import onnxslim

        return onnxslim.slim(proto)
    except ImportError:
        return proto
    except Exception as e:  # simplification is an optimisation, not a requirement
        warnings.warn(f"onnxslim failed, keeping the unsimplified graph: {e}")
        return proto


def compare_with_torch(model, onnx_path: Path, options: ExportOptions) -> float:
    """Max |ONNX - PyTorch| on random inputs (batch 1, and 2 when the batch is dynamic)."""
    import torch

    from edgekit.onnx.session import ort_session

    session = ort_session(onnx_path)
    worst = 0.0
    for batch, seed in ((1, 1), (2, 2)) if options.dynamic_batch else ((1, 1),):
        feed = random_feed([s.with_batch(batch) for s in options.inputs], seed=seed)
        with torch.no_grad():
            expected = model(*(torch.from_numpy(feed[s.name]) for s in options.inputs))
        expected = [expected] if not isinstance(expected, (tuple, list)) else list(expected)
        got = session.run(None, feed)
        for i, (e, g) in enumerate(zip(expected, got)):
            e = e.detach().numpy()
            diff = float(np.max(np.abs(e - g))) if e.size else 0.0
            worst = max(worst, diff)
            if not np.allclose(e, g, atol=options.atol, rtol=options.rtol):
                raise BackendError(
                    f"ONNX output {i} differs from PyTorch at batch {batch}: max diff = {diff:.3g} "
                    f"(atol {options.atol})",
                    hint="an op exported differently; try --no-simplify or another opset",
                )
    return worst


def save_pt2(model, out: Path, specs, dynamic_batch: bool = True) -> Artifact:
    """Save the model as a torch.export .pt2 (weights inside, loads without the user's code)."""
    import torch

    # torch.export specialises size-1 dims, so a dynamic batch is traced at batch 2
    example = _example_args(specs, batch=2 if dynamic_batch else 1)
    dynamic = None
    if dynamic_batch:
        batch = torch.export.Dim("batch", min=1, max=1024)
        dynamic = tuple({0: batch} for _ in specs)
    try:
        exported = torch.export.export(model, example, dynamic_shapes=dynamic)
    except Exception as e:
        raise BackendError(f"torch.export failed: {_summary(e)}") from e
    with atomic_path(out) as tmp:
        torch.export.save(exported, str(tmp))
    art = Artifact(path=Path(out), format="pt2", precision="fp32", inputs=list(specs), provenance={"torch": torch.__version__})
    return art.save_sidecar()
