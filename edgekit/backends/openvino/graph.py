"""Naming the node and op behind an OpenVINO or NNCF failure, so exit-4 messages say where it broke.

The user knows the ONNX graph, so ONNX node names come first; OpenVINO names its ops after the ONNX
node, its output tensor, or either plus a '/Suffix' (`node_Conv_35/WithoutBiases`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from edgekit.core.errors import BackendError

# lines of OpenVINO's C++ exception text that say where in OpenVINO's sources, not what went wrong
_NOISE_LINE = re.compile(r"^(Exception from \S+:\d+:|FrontEnd API failed with \w+:?|Summary:)$")
_CHECK = re.compile(r"Check '.*?' failed at \S+?:\d+:\s*")
_LISTED_OPS = re.compile(r"--\s*(?:No conversion rule found for operations|Conversion is failed for):\s*(.+)")


@dataclass(frozen=True)
class Node:
    name: str
    op: str
    graph: str  # ONNX | OpenVINO

    def __str__(self) -> str:
        return f"{self.graph} node '{self.name}' ({self.op})"


class NodeIndex:
    """Node names and op types of a model, for finding the node an error message talks about."""

    def __init__(self, ov_model=None):
        self.onnx_nodes: dict[str, str] = {}  # node name -> op type ("domain.Op" outside the default domain)
        self.onnx_producers: dict[str, str] = {}  # output tensor -> node name
        self.ov_ops: dict[str, str] = {}  # friendly name -> OpenVINO op type
        if ov_model is not None:
            self.add_ov_model(ov_model)

    @classmethod
    def from_onnx(cls, path: Path) -> "NodeIndex":
        from edgekit.core.onnx_model import load_onnx

        index = cls()
        for i, node in enumerate(load_onnx(path, load_external_data=False).graph.node):
            name = node.name or f"#{i} {node.op_type}"
            index.onnx_nodes[name] = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"
            for out in node.output:
                index.onnx_producers[out] = name
        return index

    def add_ov_model(self, model) -> None:
        self.ov_ops.update({op.get_friendly_name(): op.get_type_name() for op in model.get_ops()})

    def nodes_of_type(self, op: str) -> list[str]:
        """ONNX nodes of an op type as OpenVINO reports it (`Foo`, `ai.onnx.Foo`, `domain.Foo`)."""
        short = op.removeprefix("ai.onnx.") if op.count(".") == 2 and op.startswith("ai.onnx.") else op
        return [n for n, t in self.onnx_nodes.items() if t in (op, short)]

    def lookup(self, name: str) -> Node | None:
        probe = name
        while probe:
            if probe in self.onnx_nodes:
                return Node(probe, self.onnx_nodes[probe], "ONNX")
            if probe in self.onnx_producers:
                node = self.onnx_producers[probe]
                return Node(node, self.onnx_nodes[node], "ONNX")
            probe = probe.rsplit("/", 1)[0] if "/" in probe[1:] else ""
        if name in self.ov_ops:
            return Node(name, self.ov_ops[name], "OpenVINO")
        return None

    def find_in(self, text: str) -> Node | None:
        """The first node an error message names: quoted names first, then name-like words."""
        quoted = [a or b for a, b in re.findall(r"'([^'\n]+)'|\"([^\"\n]+)\"", text)]
        # a bare word counts only when it looks like a generated name (node_Conv_35, /stem/Conv): plain
        # words such as "output" appear in messages for other reasons
        words = [w for w in re.split(r"[\s,;()\[\]{}'\"]+", text) if re.search(r"[_/.:0-9]", w) and len(w) > 2]
        for candidate in quoted + words:
            node = self.lookup(candidate)
            if node:
                return node
        return None


def summary(e: BaseException, limit: int = 400) -> str:
    """The informative part of an OpenVINO/NNCF exception on one line (source-file locations dropped)."""
    lines = [line.strip() for line in str(e).splitlines()]
    useful = [line for line in lines if line and not _NOISE_LINE.match(line)]
    text = _CHECK.sub("", " ".join(useful)).strip()
    return (text or type(e).__name__)[:limit]



def conversion_error(e: BaseException, index: NodeIndex, filename: str) -> BackendError:
    """Exit 4 naming the ops OpenVINO could not convert and the ONNX nodes that use them."""
    text = str(e)
    ops = [op.strip() for line in _LISTED_OPS.findall(text) for op in line.split(",") if op.strip()]
    if ops:
        parts = []
        for op in ops:
            nodes = index.nodes_of_type(op)
            shown = ", ".join(f"'{n}'" for n in nodes[:3]) + (f" and {len(nodes) - 3} more" if len(nodes) > 3 else "")
            parts.append(f"{op} (ONNX node {shown})" if nodes else op)
        detail = _failure_detail(text, ops[0])
        return BackendError(
            f"OpenVINO cannot convert op {'; '.join(parts)} in {filename}" + (f": {detail}" if detail else ""),
            hint="replace that op in the model (or its exporter settings), or deploy with --target onnxruntime",
        )
    node = index.find_in(text)
    return BackendError(f"OpenVINO could not convert {filename}{f' at {node}' if node else ''}: {summary(e)}")


def _failure_detail(text: str, op: str) -> str:
    """The converter's own message for an op whose conversion raised (not for a missing rule)."""
    m = re.search(rf"--\s*{re.escape(op)} with a message:\n(.*?)(?:\n--|\nSummary:|$)", text, re.S)
    return _CHECK.sub("", " ".join(m.group(1).split()))[:300] if m else ""
