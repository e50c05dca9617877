"""Temporary files of every library go inside the output folder and are gone afterwards (core/tempdirs.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgekit.core.tempdirs import PREFIX, remove_stale, temp_files_in


def test_tempfile_and_child_processes_write_inside_the_folder_and_nothing_is_left(tmp_path):
    out = tmp_path / "out"
    before = tempfile.gettempdir()
    with temp_files_in(out) as private:
        assert private.parent == out and private.name.startswith(PREFIX)
        made = tempfile.mkdtemp(prefix="ort.quant.")  # as ONNX Runtime's quantizer makes its own
        assert os.path.commonpath([made, out]) == str(out)
        child = subprocess.run([sys.executable, "-c", "import tempfile; print(tempfile.gettempdir())"],
                               capture_output=True, text=True, check=True)
        assert child.stdout.strip() == str(private)
        with temp_files_in(tmp_path / "elsewhere") as inner:  # a nested command shares the outer folder
            assert inner == private
        (out / "result.txt").write_text("kept")
    assert tempfile.gettempdir() == before
    assert [p.name for p in out.iterdir()] == ["result.txt"]
    assert not (tmp_path / "elsewhere").exists()


def test_a_folder_made_for_a_failed_command_is_removed_again(tmp_path):
    out = tmp_path / "never"
    try:
        with temp_files_in(out):
            raise ValueError("bad input")
    except ValueError:
        pass
    assert not out.exists()


def test_a_killed_runs_private_folder_is_removed_by_the_next_run(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # a pid that has ended
    stale = tmp_path / f"{PREFIX}{child.pid}-abc"
    stale.mkdir()
    (stale / "prepared.onnx").write_bytes(b"x" * 100)
    mine = tmp_path / f"{PREFIX}{os.getpid()}-def"  # a live process's folder stays
    mine.mkdir()
    assert remove_stale(tmp_path) == [stale]
    assert not stale.exists() and mine.exists()


def test_onnx_runtime_quantization_leaves_nothing_in_the_system_temp_folder(tmp_path, monkeypatch):
    """A real `quantize` run: ONNX Runtime's quantizer and edgekit's stages make their temp folders in the output."""
    import edgekit

    made, mkdtemp = [], tempfile.mkdtemp

    def recorded(*args, **kwargs):  # TemporaryDirectory makes its folder through tempfile.mkdtemp too
        made.append(mkdtemp(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(tempfile, "mkdtemp", recorded)
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
                               helper.make_node("Relu", ["c"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 16, 16])], [w])
    model = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(model))
    np.save(tmp_path / "calib.npy", rng.standard_normal((8, 3, 16, 16)).astype(np.float32))
    out = tmp_path / "out"
    result = edgekit.quantize(str(model), target="onnxruntime", calib=str(tmp_path / "calib.npy"), output=str(out))
    assert result.artifact.path.exists()
    assert len(made) >= 2  # edgekit's ONNX Runtime folder and the quantizer's own, at least
    assert all(os.path.commonpath([m, out]) == str(out) for m in made), made
    assert not list(out.glob(PREFIX + "*"))


def test_a_relative_output_folder_still_holds_the_files_after_a_library_changes_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "elsewhere").mkdir()
    with temp_files_in("out"):
        os.chdir(tmp_path / "elsewhere")  # as ONNX Runtime's preprocessing runs inside edgekit's private folder
        made = tempfile.mkdtemp()
    assert os.path.commonpath([made, tmp_path / "out"]) == str(tmp_path / "out")
