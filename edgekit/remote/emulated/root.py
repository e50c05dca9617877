"""The arm64 root of the emulated device: Debian 12 (Python 3.11, OpenSSH) unpacked from its .debs with
`dpkg-deb -x` (no emulated maintainer scripts: the few things they would do are done here), plus the
aarch64 wheels of numpy and the chosen runtimes from the package index, pinned to this host's versions
so ARM and x86 outputs compare the same release.

Built in `<name>.partial` and renamed when complete; a root without a valid marker is rebuilt, never used.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from edgekit.core.errors import InvalidInputError, TargetUnavailableError
from edgekit.core.progress import stage
from edgekit.remote.emulated.apt import PrivateApt, extract
from edgekit.remote.emulated.chroot import guest_env, in_root_argv, model_text

SUITE = "bookworm"  # Python 3.11, as the runner's oldest tested Pythons
PACKAGES = ["python3.11-minimal", "libpython3.11-stdlib", "openssh-server", "dash", "coreutils", "tar",
            "libc-bin", "libstdc++6", "libgcc-s1", "base-files"]
RUNTIMES = {"tflite": "ai-edge-litert", "onnxruntime": "onnxruntime"}  # --runtime name -> wheel
MODULES = {"ai-edge-litert": "ai_edge_litert", "onnxruntime": "onnxruntime"}
PLATFORMS = ("manylinux_2_27_aarch64", "manylinux_2_28_aarch64", "manylinux2014_aarch64", "manylinux_2_17_aarch64")
SITE = "usr/local/lib/python3.11/dist-packages"  # on Debian's sys.path: no PYTHONPATH for the ssh session
MARKER = "etc/edgekit-root.json"
LAYOUT = 1  # bump when the root's layout changes: older cached roots are rebuilt


@dataclass(frozen=True)
class RootSpec:
    runtimes: tuple[str, ...] = ("tflite", "onnxruntime")

    def wheels(self) -> list[str]:
        """numpy and the runtimes, each pinned to the host's version when the host has it."""
        return [_pinned(name) for name in ("numpy", *(RUNTIMES[r] for r in self.runtimes))]

    @property
    def key(self) -> str:
        text = json.dumps({"suite": SUITE, "packages": PACKAGES, "wheels": self.wheels(), "layout": LAYOUT})
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def check_runtimes(names) -> tuple[str, ...]:
    bad = [n for n in names if n not in RUNTIMES]
    if bad:
        raise InvalidInputError(f"unknown runtime '{bad[0]}' for the emulated device",
                                hint="choose from: " + ", ".join(RUNTIMES))
    return tuple(dict.fromkeys(names)) or tuple(RUNTIMES)


def _pinned(dist: str) -> str:
    try:
        return f"{dist}=={metadata.version(dist)}"
    except metadata.PackageNotFoundError:
        return dist


def read_marker(root: Path) -> dict | None:
    """The marker of a complete root, or None (missing, unreadable, or the root lost a file it needs)."""
    try:
        marker = json.loads((root / MARKER).read_text())
    except (OSError, ValueError):
        return None
    needed = ("usr/bin/python3", "usr/sbin/sshd", "bin/sh", SITE + "/numpy")
    if not isinstance(marker, dict) or not all((root / p).exists() or (root / p).is_symlink() for p in needed):
        return None
    return marker


def ensure_root(cache: Path, spec: RootSpec, qemu: Path) -> tuple[Path, dict]:
    """The cached root for `spec` (built now if missing or broken) and its marker."""
    final = cache / f"aarch64-{spec.key}"
    marker = read_marker(final) if final.exists() else None
    if marker is not None:
        return final, marker
    if final.exists():  # a broken root: rebuilt, never used
        with stage(f"emulated device: the cached root {final.name} is incomplete: rebuilding it"):
            shutil.rmtree(final)
    partial = final.with_name(final.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    start = time.monotonic()
    try:
        _build(cache, partial, spec, qemu)
        marker = {"suite": SUITE, "packages": PACKAGES, "wheels": _installed(partial), "layout": LAYOUT,
                  "qemu": qemu.name, "build_seconds": round(time.monotonic() - start, 1)}
        (partial / MARKER).write_text(json.dumps(marker, indent=1))
        os.replace(partial, final)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    for old in cache.glob("aarch64-*"):  # roots of other versions: 350 MB each, never used again
        if old != final and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
    return final, marker


def _build(cache: Path, root: Path, spec: RootSpec, qemu: Path) -> None:
    root.mkdir(parents=True)
    apt = PrivateApt(cache / f"apt-{SUITE}-arm64", SUITE, "arm64")
    with stage(f"emulated device: Debian {SUITE} arm64 packages (apt-get)"):
        apt.update()
        debs = apt.closure(PACKAGES)
    with stage(f"emulated device: unpacking {len(debs)} packages (dpkg-deb -x)"):
        for deb in debs:
            extract(deb, root)
    _fix_up(root)
    with stage("emulated device: aarch64 wheels " + " ".join(spec.wheels())):
        for wheel in _download_wheels(cache / "wheels-aarch64", spec.wheels()):
            with zipfile.ZipFile(wheel) as z:
                z.extractall(root / SITE)
    with stage("emulated device: checking the root under qemu (python imports numpy and the runtimes)"):
        _smoke_test(root, spec)


def _fix_up(root: Path) -> None:
    """What the maintainer scripts would have done: users, sshd's privilege separation, python3."""
    etc = root / "etc"
    (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\nsshd:x:100:65534::/run/sshd:/usr/sbin/nologin\n"
                                "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n")
    (etc / "group").write_text("root:x:0:\nnogroup:x:65534:\n")
    (etc / "shadow").write_text("root:*:19000:0:99999:7:::\nsshd:*:19000:0:99999:7:::\nnobody:*:19000:0:99999:7:::\n")
    os.chmod(etc / "shadow", 0o640)
    (etc / "nsswitch.conf").write_text("passwd: files\ngroup: files\nshadow: files\nhosts: files\n")
    (etc / "hosts").write_text("127.0.0.1 localhost\n")
    for d, mode in (("root/.ssh", 0o700), ("run/sshd", 0o755), ("tmp", 0o1777), ("proc", 0o555), ("sys", 0o555),
                    ("dev", 0o755), (SITE, 0o755)):
        (root / d).mkdir(parents=True, exist_ok=True)
        os.chmod(root / d, mode)
    python3 = root / "usr/bin/python3"
    if not python3.exists():
        python3.symlink_to("python3.11")
    sh = root / "bin/sh"
    if not sh.exists() and not sh.is_symlink():
        sh.symlink_to("dash")


def _download_wheels(cache: Path, requirements: list[str]) -> list[Path]:
    """The wheels (with their dependencies) in a folder of their own: exactly what is unpacked into the root."""
    dest = cache / hashlib.sha256(" ".join(requirements).encode()).hexdigest()[:12]
    dest.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:", "--python-version", "3.11",
            "--implementation", "cp", "--dest", str(dest)]
    for platform in PLATFORMS:
        argv += ["--platform", platform]
    proc = subprocess.run([*argv, *requirements], capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        raise TargetUnavailableError(f"pip download of the aarch64 wheels failed: {last}",
                                     hint="the package index must be reachable while the cache is built")
    return sorted(dest.glob("*.whl"))


def _installed(root: Path) -> dict:
    found = {}
    for info in (root / SITE).glob("*.dist-info"):
        name, _, version = info.name[: -len(".dist-info")].partition("-")
        found[name.lower().replace("_", "-")] = version
    return dict(sorted(found.items()))


def _smoke_test(root: Path, spec: RootSpec, cpu: str = "cortex-a76") -> None:
    modules = ["numpy", *(MODULES[RUNTIMES[r]] for r in spec.runtimes)]
    code = "import " + ", ".join(modules) + "; print('ok')"
    argv = in_root_argv(root, model_text("check", cpu), ["/usr/bin/python3", "-c", code])
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=900, env=guest_env(cpu))
    if proc.returncode != 0 or "ok" not in proc.stdout:
        last = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
        raise TargetUnavailableError(f"the arm64 root does not import {', '.join(modules)} under qemu: {last}")
