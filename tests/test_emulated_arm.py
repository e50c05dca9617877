"""The emulated aarch64 device end to end: the cached arm64 root (built on first use), sshd in it under
qemu 10, a tiny int8 .tflite (XNNPACK) and int8 .onnx (MLAS) validated there through the ordinary device
path, the ARM outputs within one quantization step of the x86 outputs of the same file, latency marked
emulated and never judged, and nothing left running after --stop.

Needs root (binfmt_misc, chroot, mounts) and the package mirrors the first time the root is built.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from edgekit.core.artifact import Artifact
from edgekit.core.data import open_data
from edgekit.remote.bench import outputs_on_device
from edgekit.remote.emulated import emulate, emulated_status, stop_emulated
from edgekit.remote.emulated.device import processes
from edgekit.remote.emulated.root import MARKER
from edgekit.remote.jobs import RemoteOptions
from edgekit.remote.ssh import SshSettings, parse_device_url
from edgekit.stages.validate import run_outputs

pytestmark = [
    pytest.mark.arm,
    pytest.mark.skipif(os.geteuid() != 0, reason="the emulated device needs root (binfmt_misc, chroot, mounts)"),
]


@pytest.fixture(scope="module")
def device():
    running = emulate(runtimes=("tflite", "onnxruntime"), cpu="cortex-a76")
    yield running
    stop_emulated()


@pytest.fixture(scope="module")
def models(cli, tiny_onnx, tiny_data, tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("arm-int8")
    for target in ("tflite", "onnxruntime"):
        r = cli("quantize", tiny_onnx, "--target", target, "--calib", tiny_data, "-o", out)
        assert r.exit_code == 0, r.output
    return {"tflite": out / "tiny.int8.tflite", "onnx": out / "tiny.int8.onnx"}


@pytest.fixture
def emulated_env(monkeypatch, device):
    monkeypatch.setenv("EDGEKIT_SSH_OPTIONS", device.ssh_options_env)


def output_step(path: Path) -> float:
    """One quantization step of the model's output: the scale its float output is dequantized with."""
    if path.suffix == ".tflite":
        from ai_edge_litert.interpreter import Interpreter

        interp = Interpreter(model_path=str(path))
        out = interp.get_output_details()[0]["index"]
        tensors = {t["index"]: t for t in interp.get_tensor_details()}
        op = next(op for op in interp._get_ops_details() if out in op["outputs"])
        assert op["op_name"] == "DEQUANTIZE"
        return float(tensors[int(op["inputs"][0])]["quantization"][0])
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    node = next(n for n in model.graph.node if model.graph.output[0].name in n.output)
    assert node.op_type == "DequantizeLinear"
    scale = next(i for i in model.graph.initializer if i.name == node.input[1])
    return float(numpy_helper.to_array(scale))


@pytest.mark.parametrize("kind", ["tflite", "onnx"])
def test_int8_on_arm_kernels_within_one_step_of_x86(device, models, tiny_onnx, tiny_data, kind):
    from edgekit.backends.registry import get_backend, target_for_format

    art = Artifact.load(models[kind])
    data = open_data(tiny_data, Artifact.load(tiny_onnx).inputs, limit=32)
    target = parse_device_url(device.url)
    from dataclasses import replace

    target = replace(target, ssh_options=tuple(device.ssh_options))
    got = outputs_on_device(art, target, data, 2, RemoteOptions(ssh=SshSettings(), show_progress=False))
    assert got["environment"]["arch"] == "aarch64" and got["environment"]["emulated"]["cpu"] == "cortex-a76"
    with get_backend(art.target or target_for_format(art.format)).runner(art, 2, None) as runner:
        x86 = run_outputs(runner, data, list(runner.output_names))
    step = output_step(models[kind])
    arm = np.stack([s[0] for s in got["outputs"]])
    host = np.stack([s[0] for s in x86])
    assert arm.shape == host.shape == (32, 1, 10)
    assert np.abs(arm - host).max() <= step * 1.001, (np.abs(arm - host).max(), step)
    assert np.ptp(arm) > 10 * step  # real outputs, not a constant


def test_validate_cli_reports_arm_vs_x86(cli, emulated_env, device, models, tiny_onnx, tiny_data):
    common = ("--reference", tiny_onnx, "--data", tiny_data, "--threads", "2", "--limit", "24", "--json")
    r = cli("validate", models["tflite"], *common, "--devices", device.devices_file)
    assert r.exit_code == 0, r.output
    row = json.loads(r.stdout)["results"][0]
    block = row["accuracy"]["arm_vs_x86"]
    assert block["samples"] == 24 and block["max_abs_diff"] <= output_step(models["tflite"]) * 1.001
    assert block["top1_agreement"] >= 0.95 and set(block["x86"]) >= {"cosine_mean", "top1_agreement"}
    assert abs(block["cosine_mean_diff"]) < 1e-3
    assert row["environment"]["emulated"] == {"qemu": device.qemu, "cpu": "cortex-a76"}
    here = json.loads(cli("validate", models["tflite"], *common).stdout)  # a host run has no ARM comparison
    assert "arm_vs_x86" not in here["accuracy"]


def test_latency_is_marked_emulated_and_never_judged(cli, emulated_env, device, tiny_onnx, tiny_data, tmp_path):
    profile = tmp_path / "tiny-pi.toml"  # a budget no device meets: it must not be judged on qemu's latency
    profile.write_text('name = "tiny-pi"\n[hardware]\narch = "aarch64"\nemulated_cpu = "cortex-a76"\n'
                       '[runtime]\ntarget = "tflite"\nprecision = "int8"\nthreads = 2\n'
                       '[budgets]\nlatency_p90_ms = 0.0001\nmin_top1_agreement = 0.5\n')
    r = cli("deploy", tiny_onnx, "--profile", profile, "--precision", "int8", "--calib", tiny_data,
            "--min-seconds", "0.2", "--devices", device.devices_file, "-o", tmp_path / "out")
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    row = next(x for x in report["results"] if x["precision"] == "int8")
    assert row["latency_ms"]["where"] == "emulated aarch64 (cortex-a76)" and row["latency_ms"]["emulated"] is True
    assert not any("latency" in v for v in row.get("violations", []))
    assert "emulated, not representative" in (tmp_path / "out" / "report.md").read_text()


def test_device_check_and_stop_leave_nothing_running(cli, emulated_env, device):
    r = cli("device", "check", "--devices", device.devices_file, "--json")
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout)["results"][0]["info"]
    assert info["arch"] == "aarch64" and "asimddp" in info["cpu_flags"]  # cortex-a76 has the dot product
    assert {"onnxruntime", "ai-edge-litert"} <= set(info["runtimes"])
    assert emulated_status() == device
    assert processes(device.pid, Path(device.root))
    stop_emulated()
    assert processes(device.pid, Path(device.root)) == []
    assert emulated_status() is None
    marker = Path(device.root) / MARKER
    built = json.loads(marker.read_text())
    marker.unlink()  # a broken cached root (as after a crash mid-build): rebuilt, never used as it is
    (Path(device.root).parent / (Path(device.root).name + ".partial")).mkdir()  # a half-built one: removed
    again = emulate(runtimes=("tflite", "onnxruntime"), cpu="cortex-a76")
    assert again.pid != device.pid and again.root == device.root
    assert json.loads(marker.read_text())["wheels"] == built["wheels"]
    assert not (Path(device.root).parent / (Path(device.root).name + ".partial")).exists()


def test_device_dying_mid_run_is_one_error_and_leaves_nothing(device, models):
    """The device is stopped while a benchmark runs on it: exit 3 naming the device, no process left."""
    import threading
    import time
    from dataclasses import replace

    from edgekit.core.errors import TargetUnavailableError
    from edgekit.remote.bench import bench_on_device
    from edgekit.stages.bench import BenchOptions

    running = emulated_status() or emulate(runtimes=("tflite", "onnxruntime"), cpu="cortex-a76")
    target = replace(parse_device_url(running.url), ssh_options=tuple(running.ssh_options))
    failure: list[BaseException] = []

    def bench():
        try:
            bench_on_device(Artifact.load(models["tflite"]), target, 1, BenchOptions(min_seconds=600, max_seconds=600),
                            None, RemoteOptions(show_progress=False, retry_delay=0.2))
        except BaseException as e:  # noqa: BLE001 - the thread hands it to the test
            failure.append(e)

    thread = threading.Thread(target=bench)
    thread.start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not any(
            b"device_runner.py" in Path(f"/proc/{p}/cmdline").read_bytes() for p in processes(running.pid, None)
            if Path(f"/proc/{p}/cmdline").exists()):
        time.sleep(0.2)
    stop_emulated()
    thread.join(120)
    assert not thread.is_alive() and len(failure) == 1
    assert isinstance(failure[0], TargetUnavailableError) and failure[0].exit_code == 3
    assert running.url in failure[0].message
    assert processes(running.pid, Path(running.root)) == []
