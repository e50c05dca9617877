"""The emulated device's life: sshd started inside the arm64 root on 127.0.0.1 with a fresh client key and
host key (a private known_hosts), its PID kept in a state file; stopped by its own PIDs.

Every device command then reaches it like any board: ssh://root@127.0.0.1:PORT with the ssh options
of `devices.toml` (or EDGEKIT_SSH_OPTIONS).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from edgekit.core.atomic import atomic_path
from edgekit.core.errors import TargetUnavailableError
from edgekit.remote.emulated.chroot import guest_env, in_root_argv, model_text, tool

SSHD_CONFIG = "etc/ssh/edgekit_sshd_config"
HOST_KEY = "etc/ssh/edgekit_host_ed25519_key"
START_TIMEOUT_S = 120.0  # sshd starts in seconds under qemu; a busy 2-core machine is slower


@dataclass(frozen=True)
class EmulatedDevice:
    """A running emulated device and how to reach it."""

    url: str
    port: int
    pid: int
    cpu: str
    qemu: str
    root: str
    identity_file: str
    known_hosts: str
    devices_file: str
    started: float
    proc_start: int = 0  # the listener's start time in clock ticks: a reused PID is not ours

    @property
    def ssh_options(self) -> list[str]:
        return ["-F /dev/null", f"UserKnownHostsFile={self.known_hosts}", "GlobalKnownHostsFile=/dev/null",
                "IdentitiesOnly=yes", f"-i {self.identity_file}"]

    @property
    def ssh_options_env(self) -> str:
        """EDGEKIT_SSH_OPTIONS for the device's URL."""
        return " ".join(o if o.startswith("-") else f"-o {o}" for o in self.ssh_options)

    def to_dict(self) -> dict:
        return {**asdict(self), "ssh_options": self.ssh_options, "ssh_options_env": self.ssh_options_env}


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(root: Path, state_dir: Path, cpu: str, qemu_version: str, port: int | None) -> EmulatedDevice:
    port = port or free_port()
    if not port_free(port):
        raise TargetUnavailableError(f"port {port} on 127.0.0.1 is in use", hint="choose another with --port")
    state_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(state_dir, 0o700)
    client = _keys(root, state_dir, port)
    _write_sshd_config(root, port, cpu)
    log = state_dir / "sshd.log"
    argv = in_root_argv(root, model_text(qemu_version, cpu), ["/usr/sbin/sshd", "-D", "-e", "-f", "/" + SSHD_CONFIG])
    with open(log, "wb") as err:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                                env=guest_env(cpu), start_new_session=True)
    try:
        _wait_for_banner(proc, port, log)
    except BaseException:
        end_tree(proc.pid, root)
        proc.wait()
        raise
    device = EmulatedDevice(url=f"ssh://root@127.0.0.1:{port}", port=port, pid=proc.pid, cpu=cpu, qemu=qemu_version,
                            root=str(root), identity_file=str(client), known_hosts=str(state_dir / "known_hosts"),
                            devices_file=str(state_dir / "devices.toml"), started=time.time(),
                            proc_start=_start_ticks(proc.pid) or 0)
    _write_devices_file(device)
    with atomic_path(state_dir / "state.json") as tmp:
        tmp.write_text(json.dumps(asdict(device), indent=1))
    return device


def _keys(root: Path, state_dir: Path, port: int) -> Path:
    """A fresh client key pair (authorized in the root) and host key (the only entry of known_hosts)."""
    client, host = state_dir / "id_ed25519", state_dir / "host_ed25519"
    for key in (client, host):
        for path in (key, key.with_suffix(".pub")):
            path.unlink(missing_ok=True)
        proc = subprocess.run([tool("ssh-keygen"), "-q", "-t", "ed25519", "-N", "", "-C", "edgekit-emulated",
                               "-f", str(key)], capture_output=True, text=True)
        if proc.returncode != 0:
            raise TargetUnavailableError(f"ssh-keygen failed: {proc.stderr.strip()[-200:]}")
    (root / HOST_KEY).write_bytes(host.read_bytes())
    os.chmod(root / HOST_KEY, 0o600)
    (root / "root/.ssh/authorized_keys").write_text(client.with_suffix(".pub").read_text())
    key_type, key = host.with_suffix(".pub").read_text().split()[:2]
    (state_dir / "known_hosts").write_text(f"[127.0.0.1]:{port} {key_type} {key}\n")
    return client


def _write_sshd_config(root: Path, port: int, cpu: str) -> None:
    (root / SSHD_CONFIG).write_text("\n".join([
        f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey /{HOST_KEY}", "PidFile none",
        "AuthorizedKeysFile /root/.ssh/authorized_keys", "StrictModes no", "UsePAM no",
        "PasswordAuthentication no", "KbdInteractiveAuthentication no", "PubkeyAuthentication yes",
        "PermitRootLogin prohibit-password", "AllowUsers root", "PrintMotd no", "LogLevel ERROR", "MaxStartups 50",
        # sessions get a fresh environment: qemu's CPU model must be set again for every program they start
        f"SetEnv QEMU_CPU={cpu} LANG=C.UTF-8", "",
    ]))


def _write_devices_file(device: EmulatedDevice) -> None:
    options = ", ".join(json.dumps(o) for o in device.ssh_options)
    text = (f"# the emulated aarch64 device (edgekit device emulate): edgekit device check --devices {device.devices_file}\n"
            f'[[device]]\nname = "emulated-aarch64"\nurl = "{device.url}"\nssh_options = [{options}]\n')
    with atomic_path(device.devices_file) as tmp:
        tmp.write_text(text)


def _wait_for_banner(proc: subprocess.Popen, port: int, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            text = log.read_text(errors="replace").strip()
            if "Address already in use" in text:
                raise TargetUnavailableError(f"port {port} on 127.0.0.1 is in use", hint="choose another with --port")
            last = text.splitlines()[-1] if text else f"exit {proc.returncode}"
            raise TargetUnavailableError(f"the emulated device's sshd exited at start: {last[:300]}",
                                         hint=f"see {log}; `edgekit device emulate` rebuilds a broken root")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                s.settimeout(10)
                if s.recv(64).startswith(b"SSH-"):
                    return
        except OSError:
            time.sleep(0.2)
    raise TargetUnavailableError(f"the emulated device's sshd did not answer on port {port} within "
                                 f"{START_TIMEOUT_S:.0f} s", hint=f"see {log}")


# ---- its processes ----

def _start_ticks(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def is_ours(device: EmulatedDevice) -> bool:
    """The PID is still the listener this state file started (not a reused PID)."""
    return _start_ticks(device.pid) == device.proc_start and device.proc_start != 0


def processes(pid: int, root: Path | None) -> list[int]:
    """`pid`, every process under it, and every process whose root directory is the emulated root."""
    children: dict[int, list[int]] = {}
    in_root = []
    real_root = os.path.realpath(root) if root is not None else None
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            if real_root is not None and os.readlink(f"/proc/{entry}/root") == real_root:
                in_root.append(int(entry))
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        if p not in found:
            found.append(p)
            todo += children.get(p, [])
    return [p for p in dict.fromkeys(found + in_root) if _running(p)]


def end_tree(pid: int, root: Path | None, grace_s: float = 5.0) -> None:
    """SIGTERM, then SIGKILL, to the listener, its sessions and runners, and anything left in the root."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for p in processes(pid, root):
            try:
                os.kill(p, sig)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and processes(pid, root):
            time.sleep(0.1)
        if not processes(pid, root):
            return


def _running(pid: int) -> bool:
    """Alive and not a zombie (an ended process its parent has not collected yet)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def read_state(state_dir: Path) -> EmulatedDevice | None:
    try:
        data = json.loads((state_dir / "state.json").read_text())
        return EmulatedDevice(**data)
    except (OSError, ValueError, TypeError):
        return None


def stop(state_dir: Path) -> EmulatedDevice | None:
    """End the device's processes by their PIDs; the state file goes. None if nothing was running."""
    device = read_state(state_dir)
    if device is None:
        return None
    if is_ours(device):
        end_tree(device.pid, Path(device.root))
    else:  # the listener is gone; a runner may still sit in the root
        end_tree(-1, Path(device.root))
    (state_dir / "state.json").unlink(missing_ok=True)
    return device


def ssh_command(device: EmulatedDevice) -> str:
    """A shell line that logs in by hand."""
    return "ssh " + device.ssh_options_env + f" -p {device.port} root@127.0.0.1"

