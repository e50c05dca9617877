"""Which task a model is, from its output shapes and names, when `--task` is not given.

In order: an output named like an embedding (sentence_embedding, pooler_output, last_hidden_state,
...) is `embed`; a YOLO-family head (one output with N >= 4 x its channels and a last axis that is
no multiple of 32, which 1x16x384 token states are; or boxes + scores outputs) is `detect`; a 1xCxHxW output with H, W > 1 is `segment`; a single 1xD output with D >= 2
is `classify` (a single 1xHxW output, H and W >= 32 and within 2x of each other, is `segment`); anything else (several outputs, a regression
value, sequences) is `generic`.
The reason is one line, for the command to print and the report to record.
"""

from __future__ import annotations

from typing import Sequence

from edgekit.core.errors import InvalidInputError
from edgekit.tasks.base import shape_text, squeezed
from edgekit.tasks.heads import find_head

EMBEDDING_WORDS = ("embed", "sentence", "pooler", "pooled", "last_hidden_state", "hidden_state", "feature",
                   "vector", "descriptor")


def _is_map(shape: Sequence[int | None]) -> bool:
    s = squeezed(shape)
    return len(shape) in (3, 4) and len(s) in (2, 3) and all(d is None or d > 1 for d in s[-2:])


def _image_like(hw: Sequence[int | None]) -> bool:
    """H x W of a class-id map rather than T x D token states: both >= 32, aspect ratio <= 2."""
    h, w = (1 << 30 if d is None else d for d in hw)
    return min(h, w) >= 32 and max(h, w) <= 2 * min(h, w)


def guess_task(output_shapes: Sequence[Sequence[int | None]], output_names: Sequence[str]) -> tuple[str, str]:
    """(task name, one-line reason) for a model with these outputs (dynamic axes as None)."""
    shapes = [tuple(s) for s in output_shapes]
    if not shapes:
        return "generic", "the model has no outputs to judge by"
    described = [f"'{n}' {shape_text(s)}" for n, s in zip(output_names, shapes)]
    for text, name, s in zip(described, output_names, shapes):  # first: 1x16x384 token states look like a head
        if any(w in name.lower() for w in EMBEDDING_WORDS) and len(squeezed(s)) in (1, 2):
            return "embed", f"output {text} is named as an embedding"
    try:
        head = find_head(shapes, output_names, strict=True)
        return "detect", head.description
    except InvalidInputError:
        pass
    for text, s in zip(described, shapes):
        if _is_map(s) and len(s) == 4:
            return "segment", f"output {text} is per-pixel class scores (1xCxHxW)"
    if len(shapes) == 1:
        s = squeezed(shapes[0])
        if len(shapes[0]) == 2 and len(s) == 1 and (s[0] is None or s[0] >= 2):
            return "classify", f"the one output {described[0]} holds {s[0] or 'D'} scores per sample"
        if len(shapes[0]) == 3 and _is_map(shapes[0]) and _image_like(s):
            return "segment", f"the one output {described[0]} is a per-pixel class map (1xHxW)"
    return "generic", ("outputs " + ", ".join(described) if len(shapes) > 1 else f"output {described[0]}") + \
        " fit no task: per-output metrics"
