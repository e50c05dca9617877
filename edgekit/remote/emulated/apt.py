"""A private apt: Debian's own packages fetched with apt-get into a cache folder, the system's sources and
package state untouched (own sources list, lists, archives, an empty dpkg status)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from edgekit.core.errors import TargetUnavailableError

MIRROR = "http://deb.debian.org/debian"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"


class PrivateApt:
    """apt-get for one suite and architecture, everything kept under `home`."""

    def __init__(self, home: Path, suite: str, arch: str):
        self.home, self.suite, self.arch = home, suite, arch
        for sub in ("lists/partial", "archives/partial", "etc/sources.list.d", "etc/preferences.d", "etc/apt.conf.d"):
            (home / sub).mkdir(parents=True, exist_ok=True)
        (home / "etc/sources.list").write_text(f"deb [signed-by={KEYRING}] {MIRROR} {suite} main\n")
        (home / "status").touch()  # nothing installed: the whole dependency closure is resolved

    def options(self) -> list[str]:
        h = self.home
        return ["-o", f"Dir::Etc::SourceList={h / 'etc/sources.list'}",
                "-o", f"Dir::Etc::SourceParts={h / 'etc/sources.list.d'}",
                "-o", f"Dir::Etc::Preferences={h / 'etc/preferences'}",
                "-o", f"Dir::Etc::PreferencesParts={h / 'etc/preferences.d'}",
                "-o", f"Dir::State::Lists={h / 'lists'}", "-o", f"Dir::State::status={h / 'status'}",
                "-o", f"Dir::Cache={h / 'cache'}", "-o", f"Dir::Cache::Archives={h / 'archives'}",
                "-o", f"APT::Architecture={self.arch}", "-o", f"APT::Architectures={self.arch}",
                "-o", "APT::Install-Recommends=false", "-o", "APT::Get::AllowUnauthenticated=false",
                "-o", "Debug::NoLocking=true", "-qq"]

    def run(self, *args: str, cwd: Path | None = None) -> str:
        if shutil.which("apt-get") is None:
            raise TargetUnavailableError("apt-get is not installed", hint="the emulated device needs a Debian host")
        proc = subprocess.run(["apt-get", *self.options(), *args], cwd=cwd, capture_output=True, text=True)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["no message"])[-1]
            raise TargetUnavailableError(f"apt-get {args[0]} ({self.suite}/{self.arch}) failed: {last}",
                                         hint="the package mirror must be reachable while the cache is built")
        return proc.stdout

    def update(self) -> None:
        self.run("update")

    def download(self, package: str, dest: Path) -> Path:
        """One package's .deb (no dependencies) into `dest`."""
        dest.mkdir(parents=True, exist_ok=True)
        self.run("download", package, cwd=dest)
        found = sorted(dest.glob(f"{package}_*_{self.arch}.deb"))
        if not found:
            raise TargetUnavailableError(f"apt-get download {package} gave no .deb")
        return found[-1]

    def closure(self, packages: list[str]) -> list[Path]:
        """The .debs of `packages` and everything they depend on (apt's own solver), downloaded."""
        self.run("install", "--download-only", "-y", "--no-install-recommends", *packages)
        return sorted((self.home / "archives").glob("*.deb"))


def extract(deb: Path, dest: Path) -> None:
    proc = subprocess.run(["dpkg-deb", "-x", str(deb), str(dest)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise TargetUnavailableError(f"dpkg-deb -x {deb.name} failed: {proc.stderr.strip()[-200:]}")
