"""An emulated aarch64 device on this x86 host: the real ARM kernels (XNNPACK, MLAS on NEON) under qemu 10
user-mode emulation, reached over SSH on 127.0.0.1 like any board.

    emulate()           build (once, cached) the arm64 root and start its sshd: an EmulatedDevice
    emulated_status()   the running device, or None
    stop_emulated()     end its processes by their PIDs

Latency measured there is not representative (40-500x slower than the board); accuracy is.
"""

from __future__ import annotations

import os
from pathlib import Path

from edgekit.core.errors import InvalidInputError, TargetUnavailableError
from edgekit.core.progress import stage
from edgekit.remote.emulated.chroot import emulation_of
from edgekit.remote.emulated.device import EmulatedDevice, is_ours, port_free, read_state, stop
from edgekit.remote.emulated.device import start as _start

ARCHES = ("aarch64",)
DEFAULT_CPU = "cortex-a76"  # Raspberry Pi 5's core; qemu's default 'max' has SVE/SME no phone or Pi has
CPUS = ("cortex-a76", "cortex-a72", "cortex-a57", "cortex-a55", "cortex-a53", "neoverse-n1", "neoverse-v1",
        "cortex-a710", "max")

__all__ = ["EmulatedDevice", "emulate", "emulated_status", "stop_emulated", "emulation_of", "cache_dir", "CPUS"]


def cache_dir() -> Path:
    """The user's cache folder for the emulated device (qemu, roots, wheels, the running device's state)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "edgekit" / "emulated"


def emulate(arch: str = "aarch64", runtimes: tuple[str, ...] = ("tflite", "onnxruntime"), cpu: str = DEFAULT_CPU,
            port: int | None = None, cache: Path | None = None) -> EmulatedDevice:
    """Build (once) and start the emulated device; the running one is returned if it already runs."""
    from edgekit.remote.emulated import qemu, root

    if arch not in ARCHES:
        raise InvalidInputError(f"cannot emulate '{arch}'", hint="supported: " + ", ".join(ARCHES))
    if cpu not in CPUS:
        raise InvalidInputError(f"unknown emulated cpu '{cpu}'", hint="choose from: " + ", ".join(CPUS))
    spec = root.RootSpec(root.check_runtimes(runtimes))
    cache = cache or cache_dir()
    qemu.require_root()
    running = emulated_status(cache)
    if port and running is None and not port_free(port):  # before minutes of building
        raise TargetUnavailableError(f"port {port} on 127.0.0.1 is in use", hint="choose another with --port")
    qemu.ensure_binfmt_mounted()
    if running is not None:
        if running.cpu != cpu or (port and running.port != port):
            raise TargetUnavailableError(f"the emulated device already runs at {running.url} (cpu {running.cpu})",
                                         hint="edgekit device emulate --stop, then start it again")
        return running
    cache.mkdir(parents=True, exist_ok=True)
    with stage("emulated device: qemu 10 (Debian 13 qemu-user, static qemu-aarch64)"):
        binary = qemu.fetch_qemu(cache)
        version = ".".join(map(str, qemu.qemu_version(binary)))
        qemu.register(binary)
    try:
        folder, _ = root.ensure_root(cache, spec, binary)
        with stage(f"emulated device: starting sshd in the arm64 root (cpu {cpu})"):
            return _start(folder, cache / "device", cpu, version, port)
    except BaseException:
        qemu.unregister()  # nothing left behind by a start that failed
        raise


def emulated_status(cache: Path | None = None) -> EmulatedDevice | None:
    """The running emulated device, or None (a stale state file of a device that died is removed)."""
    state_dir = (cache or cache_dir()) / "device"
    device = read_state(state_dir)
    if device is None:
        return None
    if not is_ours(device):
        stop(state_dir)  # its runners, if any, end too
        return None
    return device


def stop_emulated(cache: Path | None = None) -> EmulatedDevice | None:
    """End the emulated device's processes by their PIDs and unregister qemu; None if none was running."""
    from edgekit.remote.emulated import qemu

    state_dir = (cache or cache_dir()) / "device"
    if os.geteuid() != 0 and read_state(state_dir) is not None:
        qemu.require_root()  # its processes are root's: a user could not end them
    device = stop(state_dir)
    if os.geteuid() == 0:
        qemu.unregister()
    return device
