"""Bad input: one line + hint, the DESIGN.md exit code, no traceback, nothing half-written."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

EDGEKIT = [sys.executable, "-m", "edgekit.cli.main"]


def _no_traceback(text: str):
    assert "Traceback" not in text
    assert text.startswith("error: ")


def test_corrupt_truncated_and_non_model_files(cli, tiny_onnx, tiny_data, tmp_path):
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(tiny_onnx.read_bytes()[: tiny_onnx.stat().st_size // 3])
    text = tmp_path / "notes.onnx"
    text.write_text("this is not a model\n" * 50)
    for bad in (truncated, text):
        for args in (("quantize", bad, "--calib", tiny_data, "-o", tmp_path / "q"),
                     ("bench", bad, "--min-seconds", 0.1),
                     ("deploy", bad, "--profile", "x86-onnxruntime-cpu", "-o", tmp_path / "d")):
            r = cli(*args)
            assert r.exit_code == 2, (args, r.output)
            _no_traceback(r.stderr)
            assert "not a readable ONNX model" in r.stderr
    assert not any((tmp_path / "q").glob("*")) if (tmp_path / "q").exists() else True
    assert not (tmp_path / "d" / "reference.onnx").exists()


def test_unknown_format_and_missing_file(cli, tmp_path):
    (tmp_path / "m.bin").write_bytes(b"\0" * 10)
    r = cli("bench", tmp_path / "m.bin")
    assert r.exit_code == 2 and "unknown model format" in r.stderr
    r = cli("bench", tmp_path / "missing.onnx")
    assert r.exit_code == 2 and "not found" in r.stderr


def test_unknown_profile_and_key(cli, tiny_onnx, tmp_path):
    r = cli("deploy", tiny_onnx, "--profile", "pi-zero", "-o", tmp_path)
    assert r.exit_code == 2 and "unknown profile 'pi-zero'" in r.stderr and "hint:" in r.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad"\n[budgets]\nlatency_p99_ms = 3\n')
    r = cli("bench", tiny_onnx, "--profile", bad)
    assert r.exit_code == 2 and "budgets.latency_p99_ms" in r.stderr and str(bad) in r.stderr
    assert not (tmp_path / "reference.onnx").exists()


def test_data_errors_through_cli(cli, tiny_onnx, tmp_path):
    np.save(tmp_path / "wrong.npy", np.zeros((4, 3, 16, 16), np.float32))
    r = cli("quantize", tiny_onnx, "--calib", tmp_path / "wrong.npy", "-o", tmp_path / "q")
    assert r.exit_code == 2 and "input 'input'" in r.stderr and "1x3x16x16" in r.stderr
    nan = np.zeros((4, 3, 32, 32), np.float32)
    nan[2] = np.inf
    np.save(tmp_path / "nan.npy", nan)
    r = cli("quantize", tiny_onnx, "--calib", tmp_path / "nan.npy", "-o", tmp_path / "q")
    assert r.exit_code == 2 and "NaN or Inf" in r.stderr
    r = cli("quantize", tiny_onnx, "--calib", tmp_path / "no-such-folder", "-o", tmp_path / "q")
    assert r.exit_code == 2 and "data not found" in r.stderr
    (tmp_path / "empty").mkdir()
    r = cli("validate", tiny_onnx, "--reference", tiny_onnx, "--data", tmp_path / "empty")
    assert r.exit_code == 2 and "no samples" in r.stderr
    assert not any((tmp_path / "q").glob("*.onnx")) if (tmp_path / "q").exists() else True


def test_interrupt_leaves_no_partial_artifact(cli, tiny_onnx, tiny_data, tmp_path, monkeypatch):
    import edgekit.backends.onnxruntime as ortb

    real_next = ortb.CalibrationReader.get_next
    calls = []

    def interrupted(self):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real_next(self)

    monkeypatch.setattr(ortb.CalibrationReader, "get_next", interrupted)
    out = tmp_path / "q"
    r = cli("quantize", tiny_onnx, "--calib", tiny_data, "-o", out)
    assert r.exit_code == 130 and "interrupted" in r.stderr
    # no artifact, no temp file, no sidecar; at most the libraries' log (edgekit.core.runlog)
    assert [p.name for p in out.glob("*")] in ([], ["edgekit.log"])


def test_debug_shows_traceback(cli, tmp_path):
    r = cli("--debug", "bench", tmp_path / "missing.onnx")
    assert r.exit_code == 2 and "Traceback" in r.stderr


BLOCKER = """
import importlib.abc, sys
BLOCKED = set(sys.argv[1].split(","))
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named '{name}'", name=name)
sys.meta_path.insert(0, Block())
sys.argv = sys.argv[1:]
"""
OPTIONAL = "openvino,nncf,tensorflow,ai_edge_litert,litert_torch,ai_edge_quantizer,tflite_runtime,onnx2tf,tensorrt,modelopt,torch,torch_pruning,torchvision,cuda"


def _run_blocked(code: str, *args) -> subprocess.CompletedProcess:
    script = BLOCKER + code
    return subprocess.run([sys.executable, "-c", script, OPTIONAL, *map(str, args)], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})


def test_import_hygiene_without_optional_runtimes():
    """With only base dependencies every module imports and every `edgekit CMD --help` works."""
    code = """
import pkgutil, importlib, edgekit
from click.testing import CliRunner
for m in pkgutil.walk_packages(edgekit.__path__, "edgekit."):
    importlib.import_module(m.name)
from edgekit.cli.main import main
runner = CliRunner()
def walk(group, prefix):
    for name, cmd in group.commands.items():
        r = runner.invoke(main, prefix + [name, "--help"])
        assert r.exit_code == 0, (prefix, name, r.output)
        if hasattr(cmd, "commands"):
            walk(cmd, prefix + [name])
walk(main, [])
print("ok", len(main.commands))
"""
    r = _run_blocked(code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("ok")


def test_missing_runtime_is_exit_3_with_install_hint(tiny_onnx, tmp_path):
    code = "from edgekit.cli.main import main; main()"
    r = _run_blocked(code, "compile", tiny_onnx, "--target", "openvino", "-o", tmp_path)
    assert r.returncode == 3, r.stderr
    _no_traceback(r.stderr)
    assert "pip install 'edgekit[openvino]'" in r.stderr
    factory = f"{Path(__file__).parent / 'models.py'}:tiny_cnn"  # an existing file: torch is what is missing
    r = _run_blocked(code, "export", factory, "--input", "input:1x3x8x8", "-o", tmp_path / "m.onnx")
    assert r.returncode == 3 and "torch" in r.stderr, r.stderr


@pytest.mark.parametrize("args", [
    ("quantize", "nosuch.onnx", "--target", "onnxruntime", "--calib", "x.npy", "-o", "out"),
    ("export", "nosuch.py:make", "--input", "x:1x3x8x8", "-o", "m.onnx"),
    ("deploy", "nosuch.onnx", "--profile", "x86-onnxruntime-cpu", "-o", "out"),
    ("validate", "nosuch.onnx", "--reference", "nosuch.onnx", "--data", "x.npy"),
])
def test_a_missing_file_is_answered_before_any_heavy_import(args, tmp_path):
    """Checked with stdlib only: onnx, numpy's runtimes and torch are never imported for a typo."""
    script = ("import sys\nfrom edgekit.cli.main import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n"
              "    heavy = sorted(m for m in ('onnx', 'onnxruntime', 'torch', 'openvino') if m in sys.modules)\n"
              "    print('heavy=' + ','.join(heavy), file=sys.stderr)\n    raise\n")
    r = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert r.returncode == 2 and "not found" in r.stderr, r.stderr
    assert "heavy=\n" in r.stderr or r.stderr.rstrip().endswith("heavy="), r.stderr
    assert not any(tmp_path.iterdir())
