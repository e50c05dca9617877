"""Source model -> float32 .tflite: PyTorch `.pt2` through litert-torch, ONNX through onnx2tf.

Either way the result gets one `serving_default` signature named with the ONNX input/output
names, an IoMap saying which tensors changed layout, and is checked against the source
model (PyTorch or ONNX Runtime) on a random input before anyone relies on it.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgekit.backends.tflite.runner import (
    CHANNELS_LAST,
    Binding,
    IoMap,
    TfliteRunner,
    load_interpreter,
    quiet_native_logs,
    scalar_as,
)
from edgekit.core.artifact import Artifact
from edgekit.core.errors import BackendError, InvalidInputError, TargetUnavailableError, first_line
from edgekit.core.hostinfo import package_version
from edgekit.core.progress import status
from edgekit.core.runlog import library_output
from edgekit.core.tensors import TensorSpec, random_feed

INSTALL_HINT = "pip install 'edgekit[tflite]'"
# a conversion is wrong, not just rounded differently, beyond this share of the output's range
REL_TOLERANCE = 1e-2
_CACHE: dict[tuple, "Converted"] = {}  # deploy converts the same source for fp32 and int8


@dataclass(frozen=True)
class Converted:
    model: bytes
    inputs: list[TensorSpec]  # ONNX layout, concrete shapes
    outputs: list[str]
    io: IoMap
    provenance: dict = field(default_factory=dict)


def convert(source: Artifact, overrides: tuple[TensorSpec, ...] = (),
            sample_feeds: list[dict] | None = None, consts: dict | None = None) -> Converted:
    """The float32 .tflite for a `.pt2` or ONNX source (cached per source file content and shapes). Without
    sample feeds, an ONNX is checked on a random sample with `consts` (--const) in it."""
    specs = _concrete(_merge(source.inputs, overrides), source)
    consts = consts or {}
    key = (source.sha256(), source.format, tuple(specs), tuple((k, v.tobytes()) for k, v in sorted(consts.items())))
    if key not in _CACHE:
        if source.format == "pt2":
            _CACHE.clear()  # one model at a time is enough, and models can be large
            _CACHE[key] = _from_pt2(source, specs)
        elif source.format == "onnx":
            _CACHE.clear()
            _CACHE[key] = _from_onnx(source, specs, sample_feeds, consts)
        else:
            raise InvalidInputError(f"the tflite target converts .pt2 and ONNX models, got {source.format}: "
                                    f"{source.path}",
                                    hint="export the model first (edgekit export) or pass the .pt2")
    return _CACHE[key]


def _merge(model_inputs: list[TensorSpec], overrides: tuple[TensorSpec, ...]) -> list[TensorSpec]:
    by_name = {s.name: s for s in overrides}
    if not model_inputs:
        return list(overrides)
    unknown = set(by_name) - {s.name for s in model_inputs}
    if unknown:
        raise InvalidInputError(f"--input names '{sorted(unknown)[0]}', which the model does not have",
                                hint="model inputs: " + ", ".join(s.name for s in model_inputs))
    return [by_name.get(s.name, s) for s in model_inputs]


def _concrete(specs: list[TensorSpec], source: Artifact) -> list[TensorSpec]:
    """TFLite wants static shapes: a dynamic batch becomes 1, other dynamic axes need --input."""
    if not specs:
        raise InvalidInputError(f"{source.path.name} does not say its input shapes", hint="pass --input NAME:DIMS")
    return [TensorSpec(s.name, s.concrete_shape(1), s.dtype) for s in specs]


def output_names(count: int) -> list[str]:
    """edgekit's exporter names outputs this way, so a .pt2 and its reference.onnx agree."""
    return ["output"] if count == 1 else [f"output_{i}" for i in range(count)]


# ---- PyTorch (.pt2) through litert-torch ----------------------------------------------------

def _from_pt2(source: Artifact, specs: list[TensorSpec]) -> Converted:
    for noisy in ("torchao", "torch.utils._pytree"):  # import-time warnings the user cannot act on
        logging.getLogger(noisy).setLevel(logging.ERROR)
    try:
        with quiet_native_logs():  # litert-converter's native library logs as it loads
            import litert_torch
            import torch
    except ImportError as e:
        raise TargetUnavailableError(f"converting PyTorch to .tflite needs {e.name}", hint=INSTALL_HINT) from e
    from edgekit.core.torch_model import load_torch_model

    module = load_torch_model(str(source.path))
    # the graph was traced in eval mode; the exported module only refuses .eval(), so say it directly
    module.training = False
    feed = random_feed(specs, seed=3)
    args = tuple(torch.from_numpy(feed[s.name]) for s in specs)
    with torch.no_grad():
        expected = module(*args)
    expected = [t.detach().numpy() for t in (expected if isinstance(expected, (tuple, list)) else [expected])]
    os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "n")  # its own progress lines; edgekit shows a spinner
    with status("converting to .tflite with litert-torch"), quiet_native_logs(), library_output("litert-torch"):
        try:
            model = litert_torch.convert(module, args).model_content()
        except Exception as e:
            raise torch_conversion_error(e) from e
    interp = load_interpreter(model)
    sig = interp.get_signature_runner()
    in_idx = [d["index"] for _, d in sorted(sig.get_input_details().items(), key=lambda kv: _arg_position(kv[0]))]
    out_idx = [d["index"] for _, d in sorted(sig.get_output_details().items(), key=lambda kv: _arg_position(kv[0]))]
    names = output_names(len(out_idx))
    from edgekit.backends.tflite.flatbuffer import set_signature

    model = set_signature(model, list(zip((s.name for s in specs), in_idx)), list(zip(names, out_idx)))
    io = IoMap(tuple(Binding(s.name) for s in specs), tuple(Binding(n) for n in names))
    diff = check_against(model, specs, io, feed, dict(zip(names, expected)), "litert-torch", "PyTorch")
    return Converted(model, specs, names, io, {
        "converter": f"litert-torch {package_version('litert-torch')}", "max_abs_diff_vs_source": diff})


def _arg_position(name: str) -> int:
    m = re.search(r"(\d+)$", name)
    return int(m.group(1)) if m else 0


def torch_conversion_error(e: BaseException) -> BackendError:
    """Name the aten op, the graph node and the user's source line when litert-torch says them."""
    text = str(e)
    op = re.search(r"Lowering not found: (\S+)", text)
    node = re.search(r"While executing %(\S+)", text)
    where = re.search(r'File "([^"]+)", line (\d+), in (\S+)', text)
    at = f" at {Path(where.group(1)).name}:{where.group(2)} in {where.group(3)}()" if where else ""
    node_text = f" (node '{node.group(1)}'{at})" if node else at
    if op:
        message = f"litert-torch cannot convert op {op.group(1)}{node_text}"
    else:
        first = next((ln.strip() for ln in text.splitlines() if ln.strip()), type(e).__name__)
        message = f"litert-torch conversion failed{node_text}: {first[:300]}"
    return BackendError(message, hint="replace that op in the model, or convert its ONNX export with onnx2tf "
                                      "(pip install 'edgekit[tflite-onnx]')")


# ---- ONNX through onnx2tf -------------------------------------------------------------------

def _from_onnx(source: Artifact, specs: list[TensorSpec], sample_feeds: list[dict] | None,
               consts: dict | None = None) -> Converted:
    from edgekit.backends.tflite.flatbuffer import set_signature
    from edgekit.backends.tflite.onnx2tf import convert_onnx, onnx2tf_version
    from edgekit.onnx.session import ort_session

    session = ort_session(source.path)
    names = [o.name for o in session.get_outputs()]
    # a real sample (with any --const inputs) takes the branches the data takes; random values may not
    feed = {s.name: sample_feeds[0][s.name] for s in specs} if sample_feeds else {**random_feed(specs, seed=3),
                                                                                   **(consts or {})}
    try:
        expected = dict(zip(names, session.run(names, feed)))
    except Exception as e:
        raise BackendError(f"{source.path.name} does not run in ONNX Runtime on the conversion sample: "
                           f"{first_line(e, 300)}", hint="check --input shapes and --const values") from e
    with status("converting to .tflite with onnx2tf"):
        model = convert_onnx(source.path, {s.name: s.shape for s in specs}, sample_images(specs, sample_feeds))
    interp = load_interpreter(model)
    in_details = {d["name"]: d for d in interp.get_input_details()}
    ordered = list(in_details.values())
    inputs = []
    for pos, s in enumerate(specs):
        detail = in_details.get(s.name) or in_details.get(s.name.replace(":", "_")) or ordered[pos]
        inputs.append((s, detail["index"], _layout_of(s.shape, tuple(detail["shape"]), s.name)))
    # onnx2tf names outputs Identity, Identity_1...: match each ONNX output by shape and value
    outputs = _match_outputs(interp, inputs, feed, expected)
    model = set_signature(model, [(s.name, idx) for s, idx, _ in inputs], [(n, idx) for n, idx, _ in outputs])
    io = IoMap(tuple(Binding(s.name, perm) for s, _, perm in inputs), tuple(Binding(n, perm) for n, _, perm in outputs))
    diff = check_against(model, specs, io, feed, expected, "onnx2tf", "ONNX Runtime")
    return Converted(model, specs, names, io, {"converter": onnx2tf_version(), "max_abs_diff_vs_source": diff})


def sample_images(specs: list[TensorSpec], feeds: list[dict] | None) -> np.ndarray:
    """Up to 20 channels-last samples of the first image-like input: the user's data, else random."""
    image = next((s for s in specs if len(s.shape) == 4 and s.dtype.startswith("float")), None)
    if image is None:
        return np.zeros((1, 1, 1, 3), np.float32)  # onnx2tf only reads it for image inputs
    if feeds:
        batch = np.concatenate([f[image.name] for f in feeds[:20]])
    else:
        batch = random_feed([image.with_batch(20)], batch=20, seed=5)[image.name]
    return np.ascontiguousarray(batch.transpose(0, 2, 3, 1), dtype=np.float32)


def _layout_of(onnx_shape: tuple[int, ...], tfl_shape: tuple[int, ...], name: str):
    perm = CHANNELS_LAST.get(len(onnx_shape))
    if perm and tuple(onnx_shape[i] for i in perm) == tuple(tfl_shape):
        return perm  # onnx2tf makes every channels-first tensor channels-last, even when the shape is symmetric
    if tuple(onnx_shape) == tuple(tfl_shape) or (not onnx_shape and int(np.prod(tfl_shape)) == 1):
        return None  # the same, or a scalar onnx2tf made a 1-element tensor (the runner reshapes it)
    raise InvalidInputError(f"input '{name}': onnx2tf made it {'x'.join(map(str, tfl_shape))}, which does not map "
                            f"back onto {'x'.join(map(str, onnx_shape)) or 'a scalar'}")


def _input_shape(interp, index: int) -> tuple[int, ...]:
    return next(tuple(d["shape"]) for d in interp.get_input_details() if d["index"] == index)


def _match_outputs(interp, inputs, feed, expected: dict) -> list[tuple[str, int, tuple | None]]:
    for s, idx, perm in inputs:
        x = feed[s.name].transpose(perm) if perm else feed[s.name]
        interp.set_tensor(idx, np.ascontiguousarray(scalar_as(x, _input_shape(interp, idx))))
    try:
        interp.invoke()
    except RuntimeError as e:  # onnx2tf computes both branches of an If, say, and one cannot run on this input
        raise BackendError(f"the .tflite onnx2tf made fails to run: {first_line(e, 300)}",
                           hint="with an If or Loop, onnx2tf may compute every branch: this model may not convert") from e
    got = {d["index"]: interp.get_tensor(d["index"]) for d in interp.get_output_details()}
    matched, free = [], dict(got)
    for name, ref in expected.items():
        best = None
        for idx, y in free.items():
            for perm in (None, CHANNELS_LAST.get(ref.ndim)):
                if perm is None and y.shape != ref.shape:
                    continue
                if perm is not None and y.shape != tuple(ref.shape[i] for i in perm):
                    continue
                back = y.transpose(np.argsort(perm)) if perm else y
                err = float(np.max(np.abs(back - ref))) if ref.size else 0.0
                if best is None or err < best[0]:
                    best = (err, idx, perm)
        if best is None:
            raise BackendError(f"onnx2tf output for '{name}' is missing (no .tflite output has shape "
                               f"{'x'.join(map(str, ref.shape))} or its channels-last version)")
        matched.append((name, best[1], best[2]))
        free.pop(best[1])
    return matched


def check_against(model: bytes, specs, io: IoMap, feed: dict, expected: dict, converter: str, reference: str) -> float:
    """Max |tflite - source| on one random input; a gross difference means a broken conversion."""
    with TfliteRunner(model, specs, io, threads=None) as runner:
        got = runner.infer(feed)
    worst = 0.0
    for name, ref in expected.items():
        y = got[name]
        if y.shape != ref.shape:
            raise BackendError(f"{converter} output '{name}' has shape {y.shape}, {reference} gives {ref.shape}")
        diff = float(np.max(np.abs(y - ref))) if ref.size else 0.0
        scale = float(np.max(np.abs(ref))) if ref.size else 0.0
        if diff > REL_TOLERANCE * max(scale, 1e-3):
            raise BackendError(f"{converter} output '{name}' differs from {reference}: max diff = {diff:.3g} "
                               f"(output magnitude {scale:.3g})", hint="report the model; try the other converter")
        worst = max(worst, diff)
    return worst
