"""Running a program inside the arm64 root: a private mount namespace (`unshare -m`) with /proc, /dev and
the CPU part of /sys mounted, then `chroot`; aarch64 binaries run through qemu by binfmt_misc.

/sys is a tmpfs holding the host's /sys/devices and one file of our own, /sys/class/dmi/id/product_name:
the standalone runner reports it as the device's `model`, which is how a report knows the device is
emulated without the runner knowing anything about emulation.
"""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

from edgekit.core.errors import TargetUnavailableError

MODEL_PREFIX = "edgekit emulated aarch64"
_MODEL = re.compile(re.escape(MODEL_PREFIX) + r" \(qemu (?P<qemu>[\d.]+), cpu (?P<cpu>[\w.+-]+)\)")


def model_text(qemu_version: str, cpu: str) -> str:
    return f"{MODEL_PREFIX} (qemu {qemu_version}, cpu {cpu})"


def emulation_of(info: dict) -> dict | None:
    """{"qemu": "10.0", "cpu": "cortex-a76"} when a device's `device check` info is the emulated device."""
    m = _MODEL.match(str(info.get("model") or ""))
    return {"qemu": m.group("qemu"), "cpu": m.group("cpu")} if m else None


def tool(name: str) -> str:
    found = shutil.which(name) or next((p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}", f"/sbin/{name}")
                                        if Path(p).exists()), None)
    if found is None:
        raise TargetUnavailableError(f"'{name}' is not installed on this host", hint="it comes with util-linux/coreutils")
    return found


def in_root_argv(root: Path, model: str, command: list[str]) -> list[str]:
    """argv that runs `command` (paths inside the root) in the root, in its own mount namespace."""
    r = shlex.quote(str(root))
    script = "\n".join([
        "set -e",
        f"mount -t proc proc {r}/proc",
        f"mount -t tmpfs -o mode=755 tmpfs {r}/sys",
        f"mkdir -p {r}/sys/devices {r}/sys/class/dmi/id",
        f"mount --rbind /sys/devices {r}/sys/devices",
        f"printf '%s\\n' {shlex.quote(model)} > {r}/sys/class/dmi/id/product_name",
        f"mount --rbind /dev {r}/dev",
        f'exec {shlex.quote(tool("chroot"))} {r} "$@"',
    ])
    return [tool("unshare"), "--mount", "--propagation", "private", "/bin/sh", "-c", script, "edgekit-emulated",
            *command]


def guest_env(cpu: str) -> dict:
    """The environment of programs in the root: qemu's CPU model is read from QEMU_CPU at every exec."""
    return {"PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "HOME": "/root", "LANG": "C.UTF-8",
            "QEMU_CPU": cpu}
