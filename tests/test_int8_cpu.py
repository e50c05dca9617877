"""CPU-aware int8 (issue 16 item 3): the CPU's int8 class, each target's settings from it, doctor, the sidecar."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgekit.core.artifact import Artifact
from edgekit.core.int8_cpu import int8_cpu

EPYC_AVX2 = ["avx2", "avx512f"]  # flags as cpu_info reads them: an AMD EPYC without VNNI
XEON_VNNI = ["avx2", "avx512f", "avx512_vnni"]
SAPPHIRE_RAPIDS = ["avx2", "avx512_vnni", "avx_vnni", "amx_tile", "amx_int8"]


@pytest.mark.parametrize("flags, machine, kind, reduce_range, overflow_fix, activations", [
    (EPYC_AVX2, "x86_64", "avx2", True, "enable", "uint8"),
    ([], "x86_64", "sse", True, "enable", "uint8"),
    (XEON_VNNI, "x86_64", "vnni", False, "disable", "uint8"),
    (SAPPHIRE_RAPIDS, "AMD64", "amx", False, "disable", "uint8"),
    (["asimd", "asimddp"], "aarch64", "arm-dot", False, None, "int8"),
    (["asimd"], "aarch64", "arm", False, None, "int8"),
])
def test_each_cpu_class_gets_its_targets_int8_settings(flags, machine, kind, reduce_range, overflow_fix, activations):
    cpu = int8_cpu(flags, machine)
    assert cpu.kind == kind
    assert cpu.choices() == {"onnxruntime": {"activations": activations, "reduce_range": reduce_range},
                             "openvino": {"overflow_fix": overflow_fix}}
    assert ("16-bit" in cpu.summary()) == cpu.saturates == reduce_range


def test_onnxruntime_int8_records_the_cpu_it_was_chosen_for(tiny_onnx, tiny_data, tmp_path):
    from edgekit.backends.base import QuantOptions
    from edgekit.backends.registry import get_backend
    from edgekit.core.data import open_data

    source = Artifact.load(tiny_onnx)
    art = get_backend("onnxruntime").quantize(source, open_data(str(tiny_data), source.inputs), QuantOptions(), tmp_path)
    here = int8_cpu()
    recorded = Artifact.load(art.path).provenance
    assert recorded["int8_cpu"]["kind"] == here.kind
    assert recorded["reduce_range"] is here.choices()["onnxruntime"]["reduce_range"]
    assert recorded["activations"] == here.choices()["onnxruntime"]["activations"]


def test_doctor_says_what_the_cpu_means_for_int8(cli):
    info = json.loads(cli("doctor", "--json").stdout)["int8"]
    assert info["kind"] == int8_cpu().kind and info["meaning"] == int8_cpu().summary()
    text = cli("doctor").stdout
    assert "int8 here" in text and int8_cpu().summary() in text


def test_a_closed_pipe_ends_quietly():
    """`edgekit doctor | head -1`: no 'BrokenPipeError ... report it' once the reader has what it wanted.
    `true` reads nothing and is gone long before edgekit has started, so every write meets a closed pipe."""
    cli = Path(sys.executable).parent / "edgekit"
    done = subprocess.run(["bash", "-c", f"set -o pipefail; '{cli}' doctor | true"], capture_output=True, text=True,
                          timeout=60)
    assert (done.returncode, done.stderr) == (0, "")


def test_openvino_int8_records_the_cpu_and_its_overflow_fix(tiny_onnx, tiny_data, tmp_path):
    pytest.importorskip("nncf")
    from edgekit.backends.base import QuantOptions
    from edgekit.backends.registry import get_backend
    from edgekit.core.data import open_data

    source = Artifact.load(tiny_onnx)
    art = get_backend("openvino").quantize(source, open_data(str(tiny_data), source.inputs), QuantOptions(), tmp_path)
    recorded = Artifact.load(art.path).provenance
    assert recorded["int8_cpu"]["kind"] == int8_cpu().kind
    assert recorded["overflow_fix"] == int8_cpu().choices()["openvino"]["overflow_fix"]
