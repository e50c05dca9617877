"""The package's structure, checked by tools rather than by hope: import-linter's layer contracts
(pyproject.toml), ruff, and the size and naming rules of DESIGN.md read from the code itself."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "edgekit"
BIN = Path(sys.executable).parent
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
MAX_PARAMETERS = 8


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def parsed(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), str(path))


def run_tool(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_import_linter_contracts_are_kept():
    """Layers import only the layers below them; no import circles; the device runners import nothing of
    edgekit; only backends import a target runtime (the contracts in pyproject.toml)."""
    done = run_tool(str(BIN / "lint-imports"), "--no-cache")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def test_ruff_is_clean():
    done = run_tool(sys.executable, "-m", "ruff", "check", "edgekit", "tests", "benchmarks")
    assert done.returncode == 0, done.stdout[-4000:]


def test_no_module_is_over_the_line_limit():
    long = {str(p.relative_to(ROOT)): n for p in modules() if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


def parameter_count(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    a = fn.args
    names = [*a.posonlyargs, *a.args, *a.kwonlyargs]
    count = len(names) + bool(a.vararg) + bool(a.kwarg)
    return count - (1 if names and names[0].arg in ("self", "cls") else 0)


def test_functions_are_short_and_take_few_parameters():
    too_long, too_many = [], []
    for path in modules():
        for node in ast.walk(parsed(path)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                where = f"{path.relative_to(ROOT)}:{node.lineno} {node.name}"
                if node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES:
                    too_long.append(where)
                if parameter_count(node) > MAX_PARAMETERS:
                    too_many.append(where)
    assert not too_long, f"functions over {MAX_FUNCTION_LINES} lines: {too_long}"
    assert not too_many, f"functions with more than {MAX_PARAMETERS} parameters (pass a dataclass): {too_many}"


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_names_used_across_modules(path: Path) -> list[str]:
    """`from edgekit.x import _y`, and `_y` read off an edgekit module imported as a name."""
    tree, found, module_aliases = parsed(path), [], set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("edgekit")):
            for alias in node.names:
                if is_private(alias.name):
                    found.append(f"from {node.module} import {alias.name}")
                module_aliases.add(alias.asname or alias.name)  # may be a module: `from edgekit.x import y as z`
        elif isinstance(node, ast.Import):
            module_aliases |= {a.asname or a.name.split(".")[0] for a in node.names if a.name.startswith("edgekit")}
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and is_private(node.attr) and isinstance(node.value, ast.Name) \
                and node.value.id in module_aliases:
            found.append(f"{node.value.id}.{node.attr}")
    return found


def test_no_private_name_crosses_a_module():
    found = {str(p.relative_to(ROOT)): names for p in modules() if (names := private_names_used_across_modules(p))}
    assert not found, f"private names used outside their module: {found}"


TARGET_PROBES = re.compile(r"\bbackend\.name\s*(==|!=|\bin\b|not in)|(hasattr|getattr)\((backend|runner)\b")


def test_no_target_knowledge_outside_backends():
    """Callers ask a Backend what it can do (edgekit/backends/base.py); they never test its name or probe it."""
    found = []
    for path in modules():
        if "backends" in path.relative_to(PACKAGE).parts:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if TARGET_PROBES.search(line):
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not found, "\n".join(found)


@pytest.mark.parametrize("probe", ["x = backend.name == 'tflite'", "if hasattr(runner, 'timing_report'):"])
def test_the_target_probe_check_sees_a_probe(probe):
    assert TARGET_PROBES.search(probe)


def test_the_private_name_check_sees_a_private_import(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("from edgekit.core import data\nfrom edgekit.cli.main import _load\nx = data._private\n")
    assert private_names_used_across_modules(sample) == ["from edgekit.cli.main import _load", "data._private"]
