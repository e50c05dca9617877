"""Devices reached with the system OpenSSH client: targets, ssh command lines, quoting, error classification.

Using the user's own `ssh` means ~/.ssh/config, agents and jump hosts just work. Every remote command is a
POSIX `sh -c` script whose variable parts are quoted with shlex.quote, whatever the login shell is.
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

from edgekit.core.errors import InvalidInputError, TargetUnavailableError

SSH_OPTIONS_ENV = "EDGEKIT_SSH_OPTIONS"
URL_PARAMS = ("python", "workdir", "identity_file")


@dataclass(frozen=True)
class Device:
    """One device: where it is and how to run Python there (never a password: keys only)."""

    host: str
    user: str | None = None
    port: int | None = None
    python: str = "python3"
    workdir: str | None = None  # parent of the run's temporary folder; default $TMPDIR or /tmp
    identity_file: str | None = None
    ssh_options: tuple[str, ...] = ()
    name: str | None = None  # a profile or devices-file label

    def __post_init__(self):
        if not self.host or self.host.startswith("-") or re.search(r"[\s'\"`$;&|<>\\]", self.host):
            raise InvalidInputError(f"bad device host {self.host!r}", hint="use ssh://user@host[:port]")
        if self.user is not None and (not self.user or self.user.startswith("-") or re.search(r"[\s@:/]", self.user)):
            raise InvalidInputError(f"bad device user {self.user!r}")
        for value, what in ((self.workdir, "workdir"), (self.python, "python")):
            if value is not None and ("\n" in value or "\0" in value or not value):
                raise InvalidInputError(f"bad device {what} {value!r}")

    @property
    def url(self) -> str:
        """How reports name the device (the `where` of a latency block)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ssh://{self.user + '@' if self.user else ''}{host}{':' + str(self.port) if self.port else ''}"

    @property
    def label(self) -> str:
        return f"{self.name} ({self.url})" if self.name else self.url

    @property
    def slug(self) -> str:
        """The device as a file name (engines and timing caches are kept one per device)."""
        return re.sub(r"[^A-Za-z0-9_.-]+", "_", self.url[len("ssh://"):])


@dataclass(frozen=True)
class SshSettings:
    """Client behaviour shared by every device of a run."""

    accept_new_host_key: bool = False
    connect_timeout: int = 10
    alive_interval: int = 5  # a device that stops answering is given up after interval x count seconds
    alive_count: int = 3
    extra_options: tuple[str, ...] = ()  # from EDGEKIT_SSH_OPTIONS

    @classmethod
    def from_env(cls, **kwargs) -> "SshSettings":
        return cls(extra_options=tuple(shlex.split(os.environ.get(SSH_OPTIONS_ENV, ""))), **kwargs)


def parse_device_url(text: str, name: str | None = None) -> Device:
    """ssh://[user@]host[:port][?python=...&workdir=...&identity_file=...]"""
    if not text.startswith("ssh://"):
        raise InvalidInputError(f"bad device '{text}'", hint="use ssh://user@host[:port], a profile with a "
                                "[connection] section, or --devices FILE")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as e:
        raise InvalidInputError(f"bad device '{text}': {e}") from e
    if parts.password is not None:
        raise InvalidInputError(f"device '{parts.hostname}': passwords are not accepted",
                                hint="edgekit uses key-based authentication only (ssh-copy-id user@host)")
    if parts.path not in ("", "/"):
        raise InvalidInputError(f"bad device '{text}': unexpected path '{parts.path}'",
                                hint="a run folder is set with ?workdir=/path")
    params = dict(parse_qsl(parts.query, keep_blank_values=True))
    unknown = set(params) - set(URL_PARAMS)
    if unknown:
        raise InvalidInputError(f"unknown device parameter '{sorted(unknown)[0]}' in {text}",
                                hint="allowed: " + ", ".join(URL_PARAMS))
    if not parts.hostname:
        raise InvalidInputError(f"bad device '{text}': no host")
    return Device(host=parts.hostname, user=parts.username, port=port, python=params.get("python", "python3"),
                  workdir=params.get("workdir"), identity_file=params.get("identity_file"), name=name)


def device_from_connection(conn, name: str | None = None) -> Device:
    """A profile's [connection] section."""
    return Device(host=conn.host, user=conn.user, port=conn.port, python=conn.python or "python3",
                  workdir=conn.workdir, identity_file=conn.identity_file,
                  ssh_options=tuple(str(o) for o in conn.ssh_options), name=name)


SSH_FLAGS_WITH_VALUE = set("BbcDEeFIiJLlmOopQRSWw")  # ssh's single-letter options that take an argument


def option_args(items) -> list[str]:
    """User ssh options as arguments: `-X value` as given, a bare `Key=Value` as `-o Key=Value`.

    Items that start with '-' are split like a shell would; other items stay whole (a ProxyCommand has spaces)."""
    args: list[str] = []
    takes_value = False
    for token in (t for item in items for t in (shlex.split(item) if item.startswith("-") else [item])):
        if takes_value:
            args.append(token)
            takes_value = False
        elif token.startswith("-"):
            args.append(token)
            takes_value = len(token) == 2 and token[1] in SSH_FLAGS_WITH_VALUE
        else:
            args += ["-o", token]
    return args


def ssh_argv(device: Device, settings: SshSettings, remote_script: str) -> list[str]:
    """The ssh command line running `remote_script` with sh on the device."""
    argv = ["ssh", "-T", "-a", "-x", "-o", "BatchMode=yes"]  # never a password prompt; no agent/X11 forwarding
    # ssh keeps the first value it sees for an option: the user's choices go before edgekit's defaults
    argv += option_args(device.ssh_options) + option_args(settings.extra_options)
    argv += ["-o", f"StrictHostKeyChecking={'accept-new' if settings.accept_new_host_key else 'yes'}",
             "-o", f"ConnectTimeout={settings.connect_timeout}",
             "-o", f"ServerAliveInterval={settings.alive_interval}", "-o", f"ServerAliveCountMax={settings.alive_count}"]
    # LogLevel stays the user's (INFO by default): "Timeout, server not responding" is logged at INFO
    if device.identity_file:
        argv += ["-i", os.path.expanduser(device.identity_file)]
    if device.port:
        argv += ["-p", str(device.port)]
    if device.user:
        argv += ["-l", device.user]
    return argv + ["--", device.host, "sh -c " + shlex.quote(remote_script)]


def remote_path(path: str) -> str:
    """A path for the device's sh: quoted, with a leading ~/ meaning the remote home."""
    if path == "~":
        return '"$HOME"'
    if path.startswith("~/"):
        return '"$HOME"/' + shlex.quote(path[2:])
    return shlex.quote(path)


def upload_script(device: Device) -> str:
    """Make a private temporary folder under the workdir and unpack the tar on stdin into it."""
    base = remote_path(device.workdir) if device.workdir else '"${TMPDIR:-/tmp}"'
    return (
        "umask 077\n"
        f"base={base}\n"
        '[ -d "$base" ] || { echo "edgekit: workdir $base does not exist on the device" >&2; exit 96; }\n'
        'd=$(mktemp -d "$base/edgekit-run.XXXXXX") || exit 95\n'
        'tar -xf - -C "$d" || { rm -rf -- "$d"; exit 94; }\n'
        "printf '@@edgekit-dir %s\\n' \"$d\"\n"
    )


def run_script(device: Device, run_dir: str, job: str = "job.json") -> str:
    """Run the runner in its folder, print its exit status, send back ./out as a tar, remove the folder."""
    return (
        f"d={shlex.quote(run_dir)}\n"
        'cd -- "$d" || exit 97\n'
        f"{remote_path(device.python)} device_runner.py {shlex.quote(job)}\n"
        "rc=$?\n"
        "printf '\\n@@edgekit-exit %s\\n' \"$rc\"\n"
        '[ "$rc" = 0 ] && tar -cf - -C out .\n'
        'cd / && rm -rf -- "$d"\n'
    )


def cleanup_script(run_dir: str) -> str:
    """After a timeout: stop a runner that still sits in its folder, then remove the folder."""
    return (
        f"d={shlex.quote(run_dir)}\n"
        'if [ -f "$d/runner.pid" ]; then p=$(cat "$d/runner.pid")\n'
        '  [ "$(readlink "/proc/$p/cwd" 2>/dev/null)" = "$d" ] && kill -9 "$p" 2>/dev/null; fi\n'
        'rm -rf -- "$d"\n'
    )


def info_script(device: Device) -> str:
    """`device check`: the runner arrives on stdin, so nothing is written on the device."""
    return f"{remote_path(device.python)} - info\n"


# ---- what went wrong, in one line ----

@dataclass(frozen=True)
class Fault:
    cause: str
    hint: str
    transient: bool = False  # worth a bounded retry (a dropped connection)


SSH_FAULTS = [
    (r"Could not resolve hostname|Name or service not known|nodename nor servname|Temporary failure in name resolution",
     Fault("DNS lookup failed", "check the host name (or use its IP address)")),
    (r"Connection refused", Fault("connection refused", "is sshd running on the device, and is the port right?")),
    (r"REMOTE HOST IDENTIFICATION HAS CHANGED|Host key for .* has changed",
     Fault("the host key does not match known_hosts (changed or spoofed)",
           "if the device was re-installed: ssh-keygen -R HOST, then connect once by hand to verify the new key")),
    (r"No \S+ host key is known|Host key verification failed",
     Fault("unknown host key (not in known_hosts)",
           "verify it with `ssh HOST` once, or pass --accept-new-host-key to trust it on first use")),
    (r"Permission denied|Too many authentication failures|Invalid user|Authentication failed",
     Fault("authentication failed (key not accepted for this user)",
           "check the user name and that your public key is in the device's ~/.ssh/authorized_keys")),
    (r"Timeout, server .* not responding",
     Fault("the device stopped responding (hung or unreachable)", "check the device; --device-timeout sets the limit")),
    (r"Connection timed out|Operation timed out|timed out during banner exchange",
     Fault("connection timed out", "is the device on and reachable (network, firewall)?")),
    (r"No route to host|Network is unreachable|Host is down",
     Fault("host unreachable", "is the device on the network?")),
    (r"Connection reset|Connection closed|closed by remote host|Broken pipe|Connection to .* closed|client_loop: send disconnect|kex_exchange_identification",
     Fault("the connection dropped", "the device rebooted or the network dropped; run again", transient=True)),
]


def classify_ssh_error(stderr: str) -> Fault:
    for pattern, fault in SSH_FAULTS:
        if re.search(pattern, stderr):
            return fault
    last = last_line(stderr) or "ssh failed without a message"
    return Fault(f"ssh failed: {last}", f"run `ssh` to the device by hand to see why; {SSH_OPTIONS_ENV} adds ssh options")


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def unavailable(device: Device, fault: Fault, attempts: int = 1) -> TargetUnavailableError:
    tries = f" (after {attempts} attempts)" if attempts > 1 else ""
    return TargetUnavailableError(f"device {device.label}: {fault.cause}{tries}", hint=fault.hint)
