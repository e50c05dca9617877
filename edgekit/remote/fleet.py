"""Several places at once: resolve `--device` / `--devices FILE` / profiles into devices and run a job at
each concurrently (bounded). One device failing never loses the others' results: each gets its own row."""

from __future__ import annotations

import tomllib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from edgekit.core.errors import BackendError, EdgekitError, InvalidInputError
from edgekit.remote.jobs import RemoteOptions
from edgekit.remote.place import HOST, DevicePlace, Place
from edgekit.remote.ssh import Device, SshSettings, device_from_connection, parse_device_url

MAX_PARALLEL = 4  # devices driven at once: each costs a few threads and ssh processes here
DEVICE_KEYS = ("name", "url", "host", "user", "port", "python", "workdir", "identity_file", "ssh_options")


@dataclass(frozen=True)
class Fleet:
    devices: tuple[Device, ...]
    options: RemoteOptions

    def places(self) -> list[DevicePlace]:
        return [DevicePlace(d, self.options) for d in self.devices]


@dataclass(frozen=True)
class DeviceArgs:
    """The raw `--device/--devices/--accept-new-host-key/--device-timeout` values of a command."""

    devices: tuple[str, ...] = ()
    devices_file: str | None = None
    accept_new_host_key: bool = False
    timeout: float = 600.0

    @property
    def given(self) -> bool:
        return bool(self.devices or self.devices_file)

    def fleet(self) -> Fleet:
        found = [resolve_device(spec) for spec in self.devices]
        if self.devices_file:
            found += load_devices_file(Path(self.devices_file))
        unique = list({(d.url, d.python, d.workdir): d for d in found}.values())
        if not unique:
            raise InvalidInputError(f"no devices in {self.devices_file}")
        if self.timeout <= 0:
            raise InvalidInputError("--device-timeout must be positive")
        ssh = SshSettings.from_env(accept_new_host_key=self.accept_new_host_key)
        return Fleet(tuple(unique), RemoteOptions(ssh=ssh, timeout=self.timeout, show_progress=len(unique) == 1))

    def places(self) -> list[Place]:
        """Where the command runs: these devices, else this host."""
        return list(self.fleet().places()) if self.given else [HOST]


def resolve_device(spec: str) -> Device:
    """ssh://user@host[:port], or a profile (built-in name or TOML file) with a [connection] section."""
    if spec.startswith("ssh://"):
        return parse_device_url(spec)
    from edgekit.backends.registry import load_profile

    try:
        profile = load_profile(spec)
    except InvalidInputError as e:
        raise InvalidInputError(f"bad device '{spec}'", hint="use ssh://user@host[:port] or a profile with a "
                                "[connection] section") from e
    if profile.connection is None:
        raise InvalidInputError(f"profile '{profile.name}' has no [connection] section",
                                hint="add [connection] host = ..., or pass --device ssh://user@host")
    return device_from_connection(profile.connection, name=profile.name)


def load_devices_file(path: Path) -> list[Device]:
    """A text file (one ssh:// URL or profile per line, # comments) or TOML with [[device]] tables."""
    if not path.is_file():
        raise InvalidInputError(f"devices file not found: {path}")
    if path.suffix == ".toml":
        try:
            data = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as e:
            raise InvalidInputError(f"{path}: invalid TOML ({e})") from e
        extra = set(data) - {"device"}
        if extra or not isinstance(data.get("device", []), list):
            raise InvalidInputError(f"{path}: expected [[device]] tables, found '{sorted(extra or ['device'])[0]}'")
        return [_device_from_table(t, path, i) for i, t in enumerate(data.get("device", []))]
    devices = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if line:
            try:
                devices.append(resolve_device(line))
            except InvalidInputError as e:
                raise InvalidInputError(f"{path}:{number}: {e.message}", hint=e.hint) from e
    return devices


def _device_from_table(table: dict, path: Path, index: int) -> Device:
    where = f"{path} [[device]] #{index + 1}"
    unknown = set(table) - set(DEVICE_KEYS)
    if unknown:
        raise InvalidInputError(f"unknown key '{sorted(unknown)[0]}' in {where}", hint="allowed: " + ", ".join(DEVICE_KEYS))
    if ("url" in table) == ("host" in table):
        raise InvalidInputError(f"{where} needs either url = \"ssh://...\" or host = \"...\"")
    if "password" in str(table.get("ssh_options", "")).lower():
        raise InvalidInputError(f"{where}: passwords are not accepted", hint="edgekit uses key-based authentication")
    base = parse_device_url(table["url"]) if "url" in table else Device(host=str(table["host"]))
    fields = {k: table[k] for k in ("user", "port", "python", "workdir", "identity_file") if k in table}
    try:
        return replace(base, **fields, name=table.get("name"),
                       ssh_options=tuple(str(o) for o in table.get("ssh_options", [])))
    except TypeError as e:
        raise InvalidInputError(f"bad value in {where}: {e}") from e


@dataclass
class Outcome:
    place: Place
    value: dict | None = None
    error: EdgekitError | None = None

    def row(self) -> dict:
        """One row per device: status ok with the values, or failed with the one-line error."""
        device = self.place.device
        row = {"device": device.url, "name": device.name, "status": "ok" if self.error is None else "failed",
               "error": None if self.error is None else self.error.message}
        if self.error is not None:
            row["exit_code"] = self.error.exit_code
            if self.error.hint:
                row["hint"] = self.error.hint
        return {**row, **(self.value or {})}


def run_at(places: list[Place], job: Callable[[Place], dict]) -> list[Outcome]:
    """`job(place)` at every place, at most MAX_PARALLEL at once, in the places' order; a typed error is
    the place's outcome (a bug on a device too, so the other devices keep their rows)."""

    def one(place: Place) -> Outcome:
        try:
            return Outcome(place, value=job(place))
        except EdgekitError as e:
            return Outcome(place, error=e)
        except Exception as e:
            if not place.remote:
                raise
            return Outcome(place, error=BackendError(f"device {place.label}: {type(e).__name__}: {e}"))

    if len(places) == 1:
        return [one(places[0])]
    from edgekit.core.progress import status

    with status(f"running on {len(places)} devices"), ThreadPoolExecutor(
            min(MAX_PARALLEL, len(places)), thread_name_prefix="edgekit-device") as pool:
        return list(pool.map(one, places))


def raise_single_failure(outcomes: list[Outcome]) -> None:
    """One place: its error is the command's error (a fleet reports each device's in its row)."""
    if len(outcomes) == 1 and outcomes[0].error is not None:
        raise outcomes[0].error


def fleet_exit_code(outcomes: list[Outcome]) -> int:
    codes = [o.error.exit_code for o in outcomes if o.error is not None]
    return max(codes) if codes else 0


@dataclass(frozen=True)
class PlacesResult:
    """What a command measured at each place. On this host it is one value; with --device, one row
    per device (`status` ok with the values, or failed with the error)."""

    outcomes: tuple[Outcome, ...]
    on_devices: bool

    @property
    def value(self) -> dict | None:
        """The first place's values (None when it failed)."""
        return self.outcomes[0].value

    @property
    def rows(self) -> list[dict]:
        return [o.row() for o in self.outcomes]

    @property
    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.error is not None]

    @property
    def exit_code(self) -> int:
        return fleet_exit_code(list(self.outcomes))

    def to_dict(self) -> dict:
        return {"results": self.rows} if self.on_devices else dict(self.value)
