"""On-device runs over SSH against a real sshd on 127.0.0.1 (tests/sshd.py).

The "device" Python is a separate virtual environment with only numpy and onnxruntime: the runner
works there with no edgekit installed. Faults are real: sshd killed, stopped or frozen mid-run, the
runner killed or stopped, wrong keys and users, a runtime missing on the device.
"""

from __future__ import annotations

import ast
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
from sshd import SSHD, Sshd, keygen

from edgekit.backends.onnxruntime import OnnxRuntimeRunner
from edgekit.core.artifact import Artifact
from edgekit.core.data import open_data
from edgekit.core.errors import BackendError, InvalidInputError, TargetUnavailableError
from edgekit.remote.bench import bench_feed, bench_on_device, outputs_on_device
from edgekit.remote.fleet import DeviceArgs, load_devices_file
from edgekit.remote.jobs import RemoteOptions, device_check
from edgekit.remote.ssh import SshSettings, classify_ssh_error, parse_device_url
from edgekit.stages.bench import BenchOptions, bench_artifact
from edgekit.stages.validate import run_outputs

pytestmark = [
    pytest.mark.ssh,
    pytest.mark.skipif(not os.access(SSHD, os.X_OK), reason=f"needs OpenSSH's server ({SSHD}): "
                       "apt-get install openssh-server"),
]
EDGEKIT_DIR = Path(__file__).resolve().parent.parent / "edgekit" / "device"
QUICK = BenchOptions(warmup=2, min_runs=20, min_seconds=0.3)
LONG = BenchOptions(warmup=2, min_runs=20, min_seconds=30.0)  # still running when a test breaks something


# ---- fixtures: a device Python without edgekit, servers, devices ----

def _make_venv(path: Path, packages: list[str]) -> Path:
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    python = path / "bin" / "python"
    done = subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *packages],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.fail(f"could not build the device venv: {done.stderr[-800:]}")
    return python


@pytest.fixture(scope="session")
def device_python(tmp_path_factory) -> Path:
    """numpy + onnxruntime only, the same versions as here (so outputs can match bit for bit)."""
    return _make_venv(tmp_path_factory.mktemp("device-venv") / "venv",
                      [f"numpy=={np.__version__}", f"onnxruntime=={metadata.version('onnxruntime')}"])


@pytest.fixture(scope="session")
def numpy_only_python(device_python, tmp_path_factory) -> Path:
    """A device Python with numpy and no runtime: the device venv's numpy linked into a bare venv."""
    path = tmp_path_factory.mktemp("numpy-venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    source = next(device_python.parent.parent.glob("lib/python*/site-packages"))
    target = next(path.glob("lib/python*/site-packages"))
    for item in source.iterdir():
        if item.name.startswith("numpy"):  # numpy, numpy.libs, numpy-X.dist-info
            (target / item.name).symlink_to(item)
    return path / "bin" / "python"


@pytest.fixture(scope="session")
def client_key(tmp_path_factory) -> Path:
    key = tmp_path_factory.mktemp("client") / "id_ed25519"
    keygen(key)
    return key


@pytest.fixture(scope="session")
def server(tmp_path_factory, client_key):
    s = Sshd(tmp_path_factory.mktemp("sshd"), client_key).start()
    yield s
    s.stop()


@pytest.fixture
def own_server(tmp_path, client_key):
    """A server this test may kill, stop or freeze."""
    s = Sshd(tmp_path / "sshd", client_key).start()
    yield s
    s.stop()


@pytest.fixture
def workdir(tmp_path) -> Path:
    """The device-side parent folder of the runs: empty before, and empty again after every run."""
    path = tmp_path / "work"
    path.mkdir()
    return path


def make_device(srv: Sshd, python: Path, workdir: Path | None = None, user: str | None = None):
    d = parse_device_url(srv.url + f"?python={python}")
    return replace(d, identity_file=str(srv.client_key), ssh_options=srv.ssh_options,
                   workdir=str(workdir) if workdir else None, **({"user": user} if user else {}))


def options(**kw) -> RemoteOptions:
    ssh = kw.pop("ssh", SshSettings())
    return RemoteOptions(ssh=ssh, show_progress=False, **kw)


@pytest.fixture
def ssh_env(monkeypatch, client_key, server):
    """The CLI reaches the test servers through EDGEKIT_SSH_OPTIONS (-i key, the test known_hosts)."""
    monkeypatch.setenv("EDGEKIT_SSH_OPTIONS", f"-F /dev/null -i {client_key} -o IdentitiesOnly=yes "
                       f"-o UserKnownHostsFile={server.known_hosts} -o GlobalKnownHostsFile=/dev/null")


@pytest.fixture(scope="module")
def int8_onnx(tiny_onnx, tiny_data, tmp_path_factory) -> Path:
    from edgekit.backends.base import QuantOptions
    from edgekit.backends.onnxruntime import OnnxRuntimeBackend

    art = Artifact.load(tiny_onnx)
    calib = open_data(tiny_data, art.inputs)
    return OnnxRuntimeBackend().quantize(art, calib, QuantOptions(max_samples=16), tmp_path_factory.mktemp("q")).path


def wait_for_runner(workdir: Path, timeout: float = 30.0) -> int:
    """PID of the runner once it is running in its folder under `workdir`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid_file in workdir.glob("edgekit-run.*/runner.pid"):
            text = pid_file.read_text().strip()
            if text and (pid_file.parent / "out").exists():
                return int(text)
        time.sleep(0.05)
    raise AssertionError("the runner did not start on the device")


def in_background(fn):
    box = {}

    def run():
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the test
            box["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, box


def wait_empty(folder: Path, timeout: float = 10.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(folder.iterdir()):
        time.sleep(0.05)
    return sorted(p.name for p in folder.iterdir())


def process_gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state == "Z"


# ---- the runner needs no edgekit ----

def test_runner_imports_only_stdlib_numpy_and_runtimes(device_python):
    allowed = set(sys.stdlib_module_names) | {"numpy", "onnxruntime", "openvino", "ai_edge_litert", "tflite_runtime",
                                              "tensorrt", "cuda", "device_runner", "device_models", "device_runner_trt",
                                              "__future__"}
    for name in ("device_runner.py", "device_models.py", "device_runner_trt.py"):
        tree = ast.parse((EDGEKIT_DIR / name).read_text())
        imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert imported <= allowed, (name, imported - allowed)
    # and the device Python really has no edgekit: every run below works there regardless
    clean_env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    probe = subprocess.run([str(device_python), "-c", "import edgekit"], capture_output=True, text=True,
                           cwd=device_python.parent, env=clean_env)
    assert probe.returncode != 0 and "No module named 'edgekit'" in probe.stderr


# ---- device check ----

def test_device_check_describes_the_device(server, device_python):
    info = device_check(make_device(server, device_python), options())
    assert info["cores"] == os.cpu_count()
    assert info["python_path"] == str(device_python)
    assert info["numpy"] == np.__version__
    assert info["runtimes"] == {"onnxruntime": metadata.version("onnxruntime")}  # nothing else in that venv
    assert info["memory_mb"] > 0 and info["os"] and info["arch"]


def test_device_check_cli(cli, ssh_env, server, device_python):
    url = f"{server.url}?python={device_python}"
    text = cli("device", "check", url)
    assert text.exit_code == 0, text.output
    assert f"runtime onnxruntime     {metadata.version('onnxruntime')}" in text.output
    assert "runtime openvino        -" in text.output
    assert f"numpy                   {np.__version__}" in text.output
    as_json = cli("device", "check", url, "--json")
    row = json.loads(as_json.stdout)["results"][0]
    assert row["status"] == "ok" and row["info"]["python_path"] == str(device_python)


# ---- bench and validate over SSH vs local ----

@pytest.mark.parametrize("threads", [1, 2])
def test_bench_over_ssh_matches_local(server, device_python, tiny_onnx, threads):
    art = Artifact.load(tiny_onnx)
    got = bench_on_device(art, make_device(server, device_python), threads, QUICK, None, options())
    with OnnxRuntimeRunner(tiny_onnx, threads) as runner:
        local_out = runner.infer(bench_feed(art))
    for name, value in local_out.items():
        assert np.array_equal(got["outputs"][name], value), name  # bit-exact: same runtime, threads, feed
    remote, local = got["latency_ms"], bench_artifact(art, threads, QUICK)
    # the same report schema, but for the host's record of other processes' CPU use (core/machine_busy.py)
    assert set(local) - {"machine_busy"} <= set(remote)
    assert remote["where"] == server.url and remote["threads"] == threads and remote["runs"] >= QUICK.min_runs
    assert 0.2 < remote["p50"] / local["p50"] < 5, (remote["p50"], local["p50"])  # the same order
    assert got["environment"]["device"] == server.url and got["environment"]["runtimes"] == {
        "onnxruntime": metadata.version("onnxruntime")}


def test_bench_cli_over_ssh(cli, ssh_env, server, device_python, tiny_onnx):
    url = f"{server.url}?python={device_python}"
    r = cli("bench", tiny_onnx, "--device", url, "--threads", "1", "--min-runs", "20", "--min-seconds", "0.3", "--json")
    assert r.exit_code == 0, r.output
    row = json.loads(r.stdout)["results"][0]
    assert row["status"] == "ok" and row["latency_ms"]["where"] == server.url
    assert row["environment"]["python"] == row["environment"]["python"] and row["environment"]["device"] == server.url
    text = cli("bench", tiny_onnx, "--device", url, "--min-runs", "20", "--min-seconds", "0.3")
    assert text.exit_code == 0 and re.search(rf"where\s+{re.escape(server.url)}\n", text.output)


def test_validate_over_ssh_is_bit_exact(cli, ssh_env, server, device_python, tiny_onnx, int8_onnx, tiny_data):
    art = Artifact.load(int8_onnx)
    data = open_data(tiny_data, Artifact.load(tiny_onnx).inputs, limit=24)
    got = outputs_on_device(art, make_device(server, device_python), data, 2, options())
    with OnnxRuntimeRunner(int8_onnx, 2) as runner:
        local = run_outputs(runner, data, runner.output_names)
    assert len(got["outputs"]) == 24
    assert all(np.array_equal(a, b) for ga, la in zip(got["outputs"], local) for a, b in zip(ga, la))
    # the CLI: the device's accuracy block equals the local one exactly
    common = ("--reference", tiny_onnx, "--data", tiny_data, "--threads", "2", "--limit", "24", "--json")
    here = json.loads(cli("validate", int8_onnx, *common).stdout)
    there = cli("validate", int8_onnx, *common, "--device", f"{server.url}?python={device_python}")
    assert there.exit_code == 0, there.output
    row = json.loads(there.stdout)["results"][0]
    assert row["accuracy"] == here["accuracy"] and row["accuracy"]["cosine_mean"] < 1.0  # int8 really differs


def test_quoting_workdir_and_file_names(server, device_python, tiny_onnx, tmp_path):
    workdir = tmp_path / "work dir; touch PWNED"
    workdir.mkdir()
    odd = tmp_path / "my model; rm -rf x.onnx"
    odd.mkdir()
    model = odd / "tiny model; echo owned $(id).onnx"
    model.write_bytes(tiny_onnx.read_bytes())
    Artifact.load(model).save_sidecar()
    got = bench_on_device(Artifact.load(model), make_device(server, device_python, workdir), 1, QUICK, None, options())
    assert got["latency_ms"]["runs"] >= QUICK.min_runs
    assert not list(tmp_path.rglob("PWNED")) and not (Path.cwd() / "PWNED").exists()
    assert list(workdir.iterdir()) == []  # the run's folder is gone, nothing else was written


# ---- faults: one line naming the device and the cause, exit 3 (4 for the runner) ----

def test_unknown_host_key_refused_then_trusted_on_first_use(own_server, device_python, tiny_onnx):
    own_server.known_hosts.write_text("")
    device = make_device(own_server, device_python)
    with pytest.raises(TargetUnavailableError, match=r"127\.0\.0\.1.*unknown host key") as e:
        device_check(device, options())
    assert "--accept-new-host-key" in e.value.hint and e.value.exit_code == 3
    info = device_check(device, options(ssh=SshSettings(accept_new_host_key=True)))
    assert info["python_path"] == str(device_python)
    assert "ssh-ed25519" in own_server.known_hosts.read_text()  # remembered: strict from now on
    device_check(device, options())


def test_changed_host_key_is_refused(own_server, device_python, tmp_path):
    other = keygen(tmp_path / "other_host_key").split()
    own_server.known_hosts.write_text(f"[127.0.0.1]:{own_server.port} {other[0]} {other[1]}\n")
    for accept_new in (False, True):  # trust-on-first-use never overrides a changed key
        with pytest.raises(TargetUnavailableError, match="host key does not match known_hosts"):
            device_check(make_device(own_server, device_python), options(ssh=SshSettings(accept_new_host_key=accept_new)))


def test_wrong_user_is_an_auth_failure(server, device_python):
    with pytest.raises(TargetUnavailableError, match=r"ssh://edgekit-nobody@127\.0\.0\.1:\d+: authentication failed"):
        device_check(make_device(server, device_python, user="edgekit-nobody"), options())


def test_connection_refused(own_server, device_python, cli, monkeypatch, client_key):
    own_server.stop()
    with pytest.raises(TargetUnavailableError, match="connection refused"):
        device_check(make_device(own_server, device_python), options())
    r = cli("device", "check", own_server.url)
    assert r.exit_code == 3 and f"error: device {own_server.url}: connection refused" in r.output
    assert "Traceback" not in r.output


def test_dns_failure_message_is_classified():
    fault = classify_ssh_error("ssh: Could not resolve hostname jetson.invalid: Name or service not known\r\n")
    assert fault.cause == "DNS lookup failed" and not fault.transient
    assert classify_ssh_error("Connection to 10.0.0.7 closed by remote host.").transient


def test_missing_runtime_on_the_device(server, numpy_only_python, tiny_onnx):
    with pytest.raises(TargetUnavailableError, match="onnxruntime is not installed for") as e:
        bench_on_device(Artifact.load(tiny_onnx), make_device(server, numpy_only_python), 1, QUICK, None, options())
    assert "pip install onnxruntime" in e.value.hint and str(server.url) in e.value.message


def test_missing_python_on_the_device(server, tiny_onnx, workdir):
    with pytest.raises(TargetUnavailableError, match="python '/no/such/python' was not found"):
        bench_on_device(Artifact.load(tiny_onnx), make_device(server, Path("/no/such/python"), workdir), 1, QUICK,
                        None, options())
    assert list(workdir.iterdir()) == []


def test_runner_killed(server, device_python, tiny_onnx, workdir):
    device = make_device(server, device_python, workdir)
    thread, box = in_background(lambda: bench_on_device(Artifact.load(tiny_onnx), device, 1, LONG, None, options()))
    os.kill(wait_for_runner(workdir), signal.SIGKILL)
    thread.join(30)
    assert isinstance(box.get("error"), BackendError), box
    assert "the runner was killed by signal 9" in box["error"].message and box["error"].exit_code == 4
    assert wait_empty(workdir) == []


def test_hung_runner_times_out_and_is_cleaned_up(server, device_python, tiny_onnx, workdir):
    device = make_device(server, device_python, workdir)
    thread, box = in_background(lambda: bench_on_device(Artifact.load(tiny_onnx), device, 1, LONG, None,
                                                        options(timeout=4)))
    pid = wait_for_runner(workdir)
    os.kill(pid, signal.SIGSTOP)  # alive, connected, silent
    started = time.monotonic()
    thread.join(30)
    assert isinstance(box.get("error"), TargetUnavailableError), box
    assert "timed out after 4 s" in box["error"].message and time.monotonic() - started < 15
    assert wait_empty(workdir) == [] and process_gone(pid)


def test_frozen_device_is_given_up_by_keepalive(own_server, device_python, tiny_onnx, workdir):
    device = make_device(own_server, device_python, workdir)
    quick_alive = SshSettings(alive_interval=1, alive_count=2)
    thread, box = in_background(lambda: bench_on_device(Artifact.load(tiny_onnx), device, 1, LONG, None,
                                                        options(ssh=quick_alive, retries=0)))
    wait_for_runner(workdir)
    own_server.signal_all(signal.SIGSTOP)  # the whole "device" stops answering
    try:
        thread.join(20)
    finally:
        own_server.signal_all(signal.SIGCONT)
    assert isinstance(box.get("error"), TargetUnavailableError), box
    assert "stopped responding" in box["error"].message


def test_sshd_killed_mid_run_fails_after_bounded_retries(own_server, device_python, tiny_onnx, workdir):
    device = make_device(own_server, device_python, workdir)
    thread, box = in_background(lambda: bench_on_device(Artifact.load(tiny_onnx), device, 1, LONG, None,
                                                        options(retries=1, retry_delay=0.2)))
    pid = wait_for_runner(workdir)
    own_server.kill_sessions()
    own_server.stop()
    thread.join(30)
    error = box.get("error")
    assert isinstance(error, TargetUnavailableError) and error.exit_code == 3, box
    assert "connection refused, after the connection dropped mid-run (2 attempts)" in error.message
    assert wait_empty(workdir) == [] and process_gone(pid)  # the runner saw the drop and removed its folder


def test_transient_drop_is_retried(own_server, device_python, tiny_onnx, workdir):
    device = make_device(own_server, device_python, workdir)
    slow = BenchOptions(warmup=2, min_runs=20, min_seconds=2.0)
    thread, box = in_background(lambda: bench_on_device(Artifact.load(tiny_onnx), device, 1, slow, None,
                                                        options(retries=2, retry_delay=0.2)))
    first = wait_for_runner(workdir)
    own_server.kill_sessions()  # the connection drops; the server stays up
    thread.join(60)
    assert "error" not in box, box.get("error")
    assert box["value"]["attempts"] == 2 and box["value"]["latency_ms"]["runs"] >= 20
    assert process_gone(first) and wait_empty(workdir) == []


# ---- fleets ----

def test_fleet_with_one_device_down(cli, ssh_env, server, own_server, device_python, tiny_onnx, tmp_path):
    own_server.stop()
    devices = tmp_path / "devices.txt"
    devices.write_text(f"# two boards\n{server.url}?python={device_python}\n\n{own_server.url}?python={device_python}\n")
    r = cli("bench", tiny_onnx, "--devices", devices, "--min-runs", "20", "--min-seconds", "0.3", "--json")
    assert r.exit_code == 3, r.output
    ok, down = json.loads(r.stdout)["results"]
    assert ok["status"] == "ok" and ok["latency_ms"]["runs"] >= 20 and ok["device"] == server.url
    assert down["status"] == "failed" and not down.get("latency_ms")
    assert down["device"] == own_server.url and "connection refused" in down["error"] and down["exit_code"] == 3
    text = cli("bench", tiny_onnx, "--devices", devices, "--min-runs", "20", "--min-seconds", "0.3")
    assert text.exit_code == 3 and "FAILED" in text.output and f"error: device {own_server.url}: connection refused" in text.output


def test_deploy_on_a_device(cli, ssh_env, server, device_python, tiny_onnx, tiny_data, tmp_path):
    url = f"{server.url}?python={device_python}"
    r = cli("deploy", tiny_onnx, "--profile", "x86-onnxruntime-cpu", "--precision", "fp32", "--calib", tiny_data,
            "--min-seconds", "0.3", "--device", url, "-o", tmp_path / "out", "--json")
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    (row,) = report["results"]
    assert row["status"] == "ok" and row["device"] == server.url and row["latency_ms"]["where"] == server.url
    assert row["accuracy"]["cosine_min"] > 0.9999 and row["accuracy"]["samples"] == 64
    assert report["environment"]["device"] == server.url and report["environment"]["python"]
    assert "host" in report["environment"]


def test_devices_file_formats_and_errors(tmp_path):
    toml = tmp_path / "devices.toml"
    toml.write_text('[[device]]\nname = "pi"\nurl = "ssh://pi@raspberrypi.local"\npython = "~/venv/bin/python"\n\n'
                    '[[device]]\nhost = "10.0.0.9"\nuser = "nvidia"\nport = 2222\nssh_options = ["ProxyJump=bastion"]\n')
    pi, jetson = load_devices_file(toml)
    assert (pi.name, pi.user, pi.host, pi.python) == ("pi", "pi", "raspberrypi.local", "~/venv/bin/python")
    assert jetson.url == "ssh://nvidia@10.0.0.9:2222" and jetson.ssh_options == ("ProxyJump=bastion",)
    toml.write_text('[[device]]\nurl = "ssh://a@b"\npasword = "x"\n')
    with pytest.raises(InvalidInputError, match="unknown key 'pasword'"):
        load_devices_file(toml)
    with pytest.raises(InvalidInputError, match="passwords are not accepted"):
        parse_device_url("ssh://pi:secret@raspberrypi")
    with pytest.raises(InvalidInputError, match="bad device host"):
        parse_device_url("ssh://-oProxyCommand=evil")
    with pytest.raises(InvalidInputError, match="has no \\[connection\\] section"):
        DeviceArgs(("raspberry-pi-5",)).fleet()


# ---- TensorRT on the device: the error path here, the build plan as a pure function ----

def test_compile_tensorrt_on_a_device_without_tensorrt(cli, ssh_env, server, device_python, tiny_onnx, tmp_path):
    r = cli("compile", tiny_onnx, "--target", "tensorrt", "--device", f"{server.url}?python={device_python}",
            "-o", tmp_path / "engines")
    assert r.exit_code == 3, r.output
    assert "neither the tensorrt Python module nor trtexec" in r.output and server.url in r.output
    assert not list(tmp_path.rglob("*.engine"))


def test_tensorrt_build_plan_and_trtexec_command(monkeypatch):
    monkeypatch.syspath_prepend(str(EDGEKIT_DIR))  # imported as the device imports it
    import device_runner
    import device_runner_trt as trt

    inputs = [{"name": "input", "shape": [None, 3, 224, 224], "build_shape": [1, 3, 224, 224]}]
    job = {"precision": "int8", "model_precision": "int8", "inputs": inputs, "options": {"max_batch": 8}}
    plan = trt.build_plan(job, "10.3.0")
    assert plan["strongly_typed"] and plan["flags"] == []
    assert plan["profiles"] == [{"name": "input", "min": [1, 3, 224, 224], "opt": [1, 3, 224, 224],
                                 "max": [8, 3, 224, 224]}]
    argv = trt.trtexec_command("/usr/src/tensorrt/bin/trtexec", plan, "model.onnx", "out/model.engine", "out/t.cache")
    assert argv == ["/usr/src/tensorrt/bin/trtexec", "--onnx=model.onnx", "--saveEngine=out/model.engine",
                    "--timingCacheFile=out/t.cache", "--skipInference", "--memPoolSize=workspace:1024",
                    "--builderOptimizationLevel=3", "--stronglyTyped", "--minShapes=input:1x3x224x224",
                    "--optShapes=input:1x3x224x224", "--maxShapes=input:8x3x224x224"]
    old = trt.build_plan(job, "8.5.2")  # JetPack 5: explicit Q/DQ still wants the INT8 flag
    assert not old["strongly_typed"] and old["flags"] == ["FP16", "INT8"]
    assert "--buildOnly" in trt.trtexec_command("trtexec", old, "m.onnx", "e", "c")
    fp16 = trt.build_plan({**job, "precision": "fp16", "model_precision": "fp32"}, "10.3.0")
    assert not fp16["strongly_typed"] and fp16["flags"] == ["FP16"]
    with pytest.raises(device_runner.RunnerError, match="has no FP16 flag"):
        trt.build_plan({**job, "precision": "fp16", "model_precision": "fp32"}, "11.0.0")
    with pytest.raises(device_runner.RunnerError, match="Q/DQ ONNX"):
        trt.build_plan({**job, "model_precision": "fp32"}, "10.3.0")
    assert trt.parse_trtexec_version("&&&& RUNNING TensorRT.trtexec [TensorRT v100300] # trtexec") == "10.3.0"
    assert trt.parse_trtexec_version("[TensorRT v8601]") == "8.6.1"
    assert trt.parse_trtexec_device("[I] Selected Device: Orin\n[I] Compute Capability: 8.7\n") == {
        "gpu": "Orin", "compute_capability": "8.7"}


# ---- other runtimes in the runner: OpenVINO where the host has it (the host's Python as the "device") ----

def test_openvino_over_ssh_matches_the_local_runner(server, tiny_onnx, tiny_data, tmp_path):
    ov = pytest.importorskip("openvino")
    from edgekit.backends.registry import get_backend

    source = Artifact.load(tiny_onnx)
    xml = tmp_path / "tiny.xml"
    ov.save_model(ov.convert_model(str(tiny_onnx)), str(xml))
    art = Artifact(xml, "openvino-ir", "fp32", "openvino", source.inputs, source.outputs).save_sidecar()
    data = open_data(tiny_data, source.inputs, limit=8)
    device = make_device(server, Path(sys.executable))  # it has openvino; the runner still imports no edgekit
    got = outputs_on_device(art, device, data, 1, options())
    with get_backend("openvino").runner(art, 1) as runner:
        local = run_outputs(runner, data, runner.output_names)
        effective = runner.effective_precision
    assert all(np.array_equal(a, b) for ga, la in zip(got["outputs"], local) for a, b in zip(ga, la))
    assert got["effective_precision"] == effective == "f32"


def test_nhwc_and_int8_mapping_helpers(monkeypatch):
    monkeypatch.syspath_prepend(str(EDGEKIT_DIR))
    import device_models as dr

    assert dr.nhwc_of([None, 3, 32, 32], [1, 32, 32, 3]) and not dr.nhwc_of([None, 3, 32, 32], [1, 3, 32, 32])
    assert not dr.nhwc_of([None, 3, 3, 3], [1, 3, 3, 3])  # ambiguous: left as it is
    detail = {"dtype": np.int8, "quantization": (0.05, -3)}
    x = np.array([[-10.0, -0.05, 0.0, 0.26, 10.0]], np.float32)
    q = dr.quantize(x, detail, np)
    assert q.dtype == np.int8 and q.tolist() == [[-128, -4, -3, 2, 127]]  # rounded, offset, saturated
    back = dr.dequantize(q, detail, np)
    assert back.dtype == np.float32 and np.allclose(back, [[-6.25, -0.05, 0.0, 0.25, 6.5]])
