"""The emulated device's faults that need no emulation: qemu too old, a half-built or broken cached root,
a port in use, a stale state file, no root, bad options. Each is one line and an exit code."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from edgekit.core.errors import InvalidInputError, TargetUnavailableError
from edgekit.remote.emulated import emulate, emulated_status, emulation_of
from edgekit.remote.emulated.chroot import model_text
from edgekit.remote.emulated.device import start
from edgekit.remote.emulated.qemu import check_version
from edgekit.remote.emulated.root import MARKER, SITE, read_marker


def test_qemu_version_gate():
    assert check_version("qemu-aarch64 version 10.0.13 (Debian 1:10.0.13+ds-0+deb13u1)\nCopyright ...") == (10, 0)
    with pytest.raises(TargetUnavailableError, match=r"qemu 7\.2 is too old .*needs >= 10") as e:
        check_version("qemu-aarch64 version 7.2.19 (Debian 1:7.2+dfsg-7+deb12u13)\n")
    assert e.value.exit_code == 3
    with pytest.raises(TargetUnavailableError, match="cannot read the qemu version"):
        check_version("qemu-aarch64: command not found")


def _complete_root(path: Path) -> Path:
    for rel in ("usr/bin/python3", "usr/sbin/sshd", "bin/sh"):
        (path / rel).parent.mkdir(parents=True, exist_ok=True)
        (path / rel).write_text("")
    (path / SITE / "numpy").mkdir(parents=True)
    (path / MARKER).parent.mkdir(parents=True, exist_ok=True)
    (path / MARKER).write_text(json.dumps({"suite": "bookworm"}))
    return path


def test_a_root_is_used_only_when_complete(tmp_path):
    root = _complete_root(tmp_path / "aarch64-abc")
    assert read_marker(root) == {"suite": "bookworm"}
    (root / "usr/sbin/sshd").unlink()  # lost a file it needs: broken, rebuilt
    assert read_marker(root) is None
    partial = _complete_root(tmp_path / "aarch64-def.partial")
    (partial / MARKER).unlink()  # a build that stopped before its marker
    assert read_marker(partial) is None
    (partial / MARKER).write_text("{not json")
    assert read_marker(partial) is None


def test_port_in_use_is_refused_before_anything_starts(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(TargetUnavailableError, match=rf"port {port} on 127\.0\.0\.1 is in use") as e:
            start(tmp_path / "root", tmp_path / "state", "cortex-a76", "10.0", port)
        assert e.value.exit_code == 3
    assert not (tmp_path / "state").exists()  # no keys, no state file


@pytest.mark.skipif(os.geteuid() != 0, reason="the port check follows the root check")
def test_cli_port_in_use_one_line_exit_3(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # no device runs from this cache
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = cli("device", "emulate", "aarch64", "--port", port)
    assert r.exit_code == 3 and f"port {port} on 127.0.0.1 is in use" in r.output
    assert "Traceback" not in r.output and not (tmp_path / "cache" / "edgekit" / "emulated" / "device").exists()


def test_stale_state_of_a_dead_device_is_cleared(tmp_path):
    state = tmp_path / "device"
    state.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (state / "state.json").write_text(json.dumps({
        "url": "ssh://root@127.0.0.1:1", "port": 1, "pid": dead.pid, "cpu": "cortex-a76", "qemu": "10.0",
        "root": str(tmp_path / "root"), "identity_file": "k", "known_hosts": "h", "devices_file": "d",
        "started": 0.0, "proc_start": 1}))
    assert emulated_status(tmp_path) is None
    assert not (state / "state.json").exists()


def test_bad_options_exit_2(cli):
    r = cli("device", "emulate", "riscv64")
    assert r.exit_code == 2 and "cannot emulate 'riscv64'" in r.output
    r = cli("device", "emulate", "--cpu", "pentium")
    assert r.exit_code == 2 and "unknown emulated cpu 'pentium'" in r.output
    with pytest.raises(InvalidInputError, match="unknown runtime 'openvino'"):
        emulate(runtimes=("openvino",))


@pytest.mark.skipif(shutil.which("setpriv") is None or os.geteuid() != 0, reason="needs setpriv, run as root")
def test_without_root_one_line_exit_3(tmp_path):
    """A real unprivileged process (setpriv drops to nobody), not a patched geteuid."""
    os.chmod(tmp_path, 0o755)
    proc = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-m",
                           "edgekit.cli.main", "device", "emulate"], capture_output=True, text=True,
                          env={**os.environ, "HOME": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path)}, timeout=120,
                          cwd=tmp_path)
    assert proc.returncode == 3, proc.stderr
    assert "needs root" in proc.stderr and "Traceback" not in proc.stderr


def test_reports_know_the_emulated_device_by_its_model():
    assert emulation_of({"model": model_text("10.0", "cortex-a76")}) == {"qemu": "10.0", "cpu": "cortex-a76"}
    assert emulation_of({"model": "Raspberry Pi 5 Model B Rev 1.0"}) is None
    assert emulation_of({}) is None
