"""qemu 10 user-mode emulation for aarch64: the static `qemu-aarch64` from Debian 13's `qemu-user` package
(fetched with apt-get into the cache, never installed), registered with binfmt_misc.

Debian 12's qemu 7.2 is not enough: ONNX Runtime and LiteRT crash on import under it (their CPU-info
library reads the host's /proc/cpuinfo) and XNNPACK int8 gives wrong outputs. qemu 10 fixes both.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from edgekit.core.errors import TargetUnavailableError
from edgekit.remote.emulated.apt import PrivateApt, extract

MIN_VERSION = (10, 0)
BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")
BINFMT_NAME = "edgekit-aarch64"
# the aarch64 ELF header pattern and mask (as in qemu's own binfmt.d/qemu-aarch64.conf)
ELF_MAGIC = r"\x7f\x45\x4c\x46\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00"
ELF_MASK = r"\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff"


def parse_version(text: str) -> tuple[int, int]:
    """`qemu-aarch64 version 10.0.13 (Debian ...)` -> (10, 0)."""
    m = re.search(r"version (\d+)\.(\d+)", text)
    if not m:
        raise TargetUnavailableError(f"cannot read the qemu version from {text.strip()[:80]!r}")
    return int(m.group(1)), int(m.group(2))


def check_version(text: str) -> tuple[int, int]:
    version = parse_version(text)
    if version < MIN_VERSION:
        raise TargetUnavailableError(
            f"qemu {version[0]}.{version[1]} is too old for the emulated device (needs >= {MIN_VERSION[0]})",
            hint="qemu 7 crashes ONNX Runtime/LiteRT on import and gives wrong XNNPACK int8 outputs")
    return version


def qemu_version(binary: Path) -> tuple[int, int]:
    try:
        out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=30).stdout
    except OSError as e:
        raise TargetUnavailableError(f"qemu-aarch64 does not run: {e}") from e
    return check_version(out)


def fetch_qemu(cache: Path) -> Path:
    """The static qemu-aarch64 in `cache/qemu`, fetched once from Debian 13 (trixie)."""
    binary = cache / "qemu" / "usr/bin/qemu-aarch64"
    if binary.is_file():
        qemu_version(binary)
        return binary
    apt = PrivateApt(cache / "apt-trixie-host", "trixie", _dpkg_arch())
    apt.update()
    deb = apt.download("qemu-user", cache / "debs")
    partial = cache / "qemu.partial"
    subprocess.run(["rm", "-rf", str(partial)], check=True)
    extract(deb, partial)
    if not (partial / "usr/bin/qemu-aarch64").is_file():
        raise TargetUnavailableError(f"{deb.name} has no usr/bin/qemu-aarch64")
    qemu_version(partial / "usr/bin/qemu-aarch64")
    keep = cache / "qemu.keep"  # only qemu-aarch64 is kept (the package holds every target: 450 MB)
    subprocess.run(["rm", "-rf", str(keep)], check=True)
    (keep / "usr/bin").mkdir(parents=True)
    os.replace(partial / "usr/bin/qemu-aarch64", keep / "usr/bin/qemu-aarch64")
    subprocess.run(["rm", "-rf", str(partial)], check=True)
    os.replace(keep, cache / "qemu")
    deb.unlink()  # 68 MB, all in qemu/ now
    return binary


def _dpkg_arch() -> str:
    try:
        return subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True).stdout.strip()
    except OSError:
        raise TargetUnavailableError("dpkg is not installed", hint="the emulated device needs a Debian host") from None


def require_root() -> None:
    if os.geteuid() != 0:
        raise TargetUnavailableError("the emulated device needs root (binfmt_misc, chroot and mounts)",
                                     hint="run as root, e.g. in a CI container")


def ensure_binfmt_mounted() -> None:
    if (BINFMT_DIR / "register").exists():
        return
    proc = subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT_DIR)], capture_output=True,
                          text=True)
    if proc.returncode != 0 or not (BINFMT_DIR / "register").exists():
        raise TargetUnavailableError(f"binfmt_misc is not available: {proc.stderr.strip() or 'no register file'}",
                                     hint="the kernel needs CONFIG_BINFMT_MISC and a container allowed to mount it")


def register(binary: Path) -> None:
    """aarch64 ELF files run through `binary`; F (fix-binary) opens it now, so a chroot needs no copy of it."""
    ensure_binfmt_mounted()
    entry = BINFMT_DIR / BINFMT_NAME
    if entry.exists():
        if f"interpreter {binary}" in entry.read_text():
            return
        unregister()
    line = f":{BINFMT_NAME}:M::{ELF_MAGIC}:{ELF_MASK}:{binary}:F"
    try:
        (BINFMT_DIR / "register").write_text(line)
    except OSError as e:
        raise TargetUnavailableError(f"registering qemu with binfmt_misc failed: {e}") from e


def unregister() -> None:
    entry = BINFMT_DIR / BINFMT_NAME
    if entry.exists():
        try:
            entry.write_text("-1")
        except OSError:
            pass
