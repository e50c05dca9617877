"""Third-party output (issue 16 item 6): the libraries' logs and bars go to OUTPUT/edgekit.log, not the terminal."""

from __future__ import annotations

import json
import logging

import pytest
from test_accuracy_aware import planted  # noqa: F401, F811  (a fixture: int8 breaks on its one layer)

from edgekit.core import runlog


@pytest.fixture(autouse=True)
def command_log_ends():
    yield
    runlog.stop()  # the next test runs as the Python API does


def test_a_library_call_is_kept_out_of_the_terminal_but_edgekits_own_note_is_not(tmp_path, capsys):
    from edgekit.core.console import note

    runlog.start(verbose=False)
    runlog.set_folder(tmp_path)
    with runlog.library_output("somelib"):
        print("somelib: step 1 of 3")
        print("bar  10%\rbar  50%\rbar 100%")
        logging.getLogger("somelib.core").warning("an INFO the user cannot act on")
        note("edgekit: chose the int8 settings")
    log = runlog.finish().read_text()
    seen = capsys.readouterr()
    assert "somelib" not in seen.out + seen.err and "edgekit: chose the int8 settings" in seen.err
    assert "[somelib] somelib: step 1 of 3" in log and "[somelib] bar 100%" in log and "bar  10%" not in log
    assert "[somelib.core] WARNING: an INFO the user cannot act on" in log


def test_verbose_shows_the_library_lines_as_they_come(tmp_path, capsys):
    runlog.start(verbose=True)
    with runlog.library_output("somelib"):
        print("somelib: loading")
    assert "[somelib] somelib: loading" in capsys.readouterr().err


def test_nncf_logs_and_bars_land_in_the_output_folders_log(cli, tiny_onnx, tiny_data, tmp_path):
    pytest.importorskip("nncf")
    out = tmp_path / "q"
    result = cli("quantize", tiny_onnx, "--target", "openvino", "--calib", tiny_data, "-o", out, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["artifact"]["precision"] == "int8"  # --json is not corrupted by NNCF's stdout
    assert "INFO:nncf" not in result.output and "Statistics collection" not in result.output  # on neither stream
    log = (out / runlog.LOG_NAME).read_text()
    assert "[nncf] " in log and "Statistics collection" in log

    loud = cli("--verbose", "quantize", tiny_onnx, "--target", "openvino", "--calib", tiny_data, "-o",
               tmp_path / "v", "--json")
    assert "Statistics collection" in loud.stderr


def test_deploy_announces_each_row_and_search_step_with_time_left(cli, planted, tiny_data, tmp_path):  # noqa: F811
    args = ("deploy", planted, "--profile", "x86-onnxruntime-cpu", "--calib", tiny_data, "--min-seconds", "0.1",
            "--accuracy-budget", "5")
    shown = cli(*args, "-o", tmp_path / "a").stderr
    assert "] row 1/2 x86-onnxruntime-cpu fp32" in shown and "left] row 2/2 x86-onnxruntime-cpu int8" in shown
    assert "row 2/2 x86-onnxruntime-cpu int8 · search step 1: " in shown  # the planted layer breaks int8
    assert "row 1/2" not in cli("--quiet", *args, "-o", tmp_path / "b").stderr
