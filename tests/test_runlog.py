"""Third-party output (issue 16 item 6): the libraries' logs and bars go to OUTPUT/edgekit.log, not the terminal."""

from __future__ import annotations

import json
import logging

import pytest

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
