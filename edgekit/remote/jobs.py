"""On-device runs over SSH: copy the artifact, the standalone runner and the inputs into a fresh temporary
folder on the device, run it, stream its progress, bring back latency samples / outputs / environment,
remove the folder.

Three ssh connections per run: `device check` (the runner arrives on stdin, nothing is written), an upload
(tar on stdin into `mktemp -d`), and the run itself, whose stdout carries JSON progress events, the exit
status line and then the results as a tar. A dropped connection is retried a bounded number of times.
"""

from __future__ import annotations

import collections
import json
import shutil
import subprocess
import tarfile
import threading
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from edgekit.core.errors import BackendError, EdgekitError, InvalidInputError, TargetUnavailableError
from edgekit.core.progress import progress_iter
from edgekit.remote.ssh import (
    Device,
    Fault,
    SshSettings,
    classify_ssh_error,
    cleanup_script,
    info_script,
    last_line,
    run_script,
    ssh_argv,
    unavailable,
    upload_script,
)

HERE = Path(__file__).resolve().parent.parent / "device"  # the standalone runners copied to a device
RUNNER_FILES = ("device_runner.py", "device_models.py", "device_runner_trt.py")  # standalone: no edgekit on the device
EVENT, EXIT, DIR = b"@@edgekit ", b"@@edgekit-exit ", b"@@edgekit-dir "
SSH_FAILED = 255
REMOTE_FILE = {"openvino-ir": "model.xml", "tensorrt-engine": "model.engine", "tflite": "model.tflite", "ort": "model.ort"}
SIGNALS = {9: "SIGKILL (killed, or out of memory)", 15: "SIGTERM", 11: "SIGSEGV (crashed)", 6: "SIGABRT (aborted)",
           4: "SIGILL (an instruction this CPU lacks)", 7: "SIGBUS"}


@dataclass(frozen=True)
class RemoteOptions:
    ssh: SshSettings = field(default_factory=SshSettings.from_env)
    timeout: float = 600.0  # seconds one step on the device may take before the device counts as hung
    retries: int = 2  # extra attempts after a dropped connection
    retry_delay: float = 1.0
    show_progress: bool = True  # off for fleets: one progress display at a time


@dataclass
class JobResult:
    result: dict  # the runner's result.json
    files: Path  # local folder holding what came back (outputs.npz, model.engine, ...)
    attempts: int = 1  # more than one when a dropped connection was retried


class _Dropped(Exception):
    def __init__(self, fault: Fault):
        super().__init__(fault.cause)
        self.fault = fault


# ---- the public operations ----

def device_check(device: Device, options: RemoteOptions | None = None) -> dict:
    """The device's CPU, memory, OS, Python, numpy and runtimes; nothing is written on the device."""
    options = options or RemoteOptions()
    script = (HERE / "device_runner.py").read_bytes()
    proc = _Ssh(device, options, info_script(device), feed=script)
    events, rc = proc.events_until_exit()
    info = next((e["info"] for e in events if e.get("event") == "info"), None)
    if info is None:
        error = _failure(device, proc, rc, events)
        raise unavailable(device, error.fault) if isinstance(error, _Dropped) else error
    return info


def run_job(device: Device, job: dict, files: dict[str, Path], dest: Path, options: RemoteOptions,
            progress: tuple[str, int] | None = None) -> JobResult:
    """Upload `files` (remote name -> local path) and the job, run it, fetch ./out into `dest`."""
    job = {**job, "deadline_seconds": options.timeout + 60}
    attempts = 0
    while True:
        attempts += 1
        try:
            return _attempt(device, job, files, dest, options, progress, attempts)
        except _Dropped as e:
            if attempts > options.retries:
                raise unavailable(device, e.fault, attempts) from None
            time.sleep(options.retry_delay * attempts)
        except TargetUnavailableError as e:
            if attempts > 1:  # reconnecting after a drop failed: say both
                e.message += f", after the connection dropped mid-run ({attempts} attempts)"
            raise


def _attempt(device, job, files, dest, options, progress, attempts) -> JobResult:
    run_dir = _upload(device, job, files, options)
    proc = _Ssh(device, options, run_script(device, run_dir))  # stdin stays open: the runner watches it
    try:
        events, rc = proc.events_until_exit(progress if options.show_progress else None)
        if rc == 0:
            _untar(proc.stdout, dest)
        proc.finish()
    except BaseException:
        proc.kill()
        raise
    finally:
        if proc.timed_out:
            _cleanup(device, options, run_dir)
    if rc != 0 or proc.timed_out:
        raise _failure(device, proc, rc, events)
    result_path = dest / "result.json"
    if not result_path.exists():
        raise _Dropped(Fault("the connection dropped while results were coming back", "run again", transient=True))
    return JobResult(json.loads(result_path.read_text()), dest, attempts)


def _upload(device: Device, job: dict, files: dict[str, Path], options: RemoteOptions) -> str:
    proc = _Ssh(device, options, upload_script(device))
    try:
        with tarfile.open(fileobj=proc.stdin, mode="w|") as tar:
            for name in RUNNER_FILES:
                tar.add(HERE / name, arcname=name)
            _add_bytes(tar, "job.json", json.dumps(job).encode())
            for name, path in files.items():
                tar.add(path, arcname=name)
        proc.stdin.close()
    except (BrokenPipeError, ConnectionResetError, ValueError):
        pass  # ssh has gone; its stderr says why
    out, rc = proc.communicate()
    run_dir = next((line[len(DIR):].decode() for line in out.splitlines() if line.startswith(DIR)), None)
    if rc == 0 and run_dir:
        return run_dir
    if proc.timed_out:
        raise TargetUnavailableError(f"device {device.label}: copying files timed out after {options.timeout:.0f} s",
                                     hint="a slow link or a hung device; --device-timeout sets the limit")
    if rc == SSH_FAILED:
        fault = classify_ssh_error(proc.stderr_text())
        raise _Dropped(fault) if fault.transient else unavailable(device, fault)
    cause = {96: "its workdir does not exist", 95: "could not create a temporary folder (disk full or read-only?)",
             94: "could not unpack the files (disk full? is tar installed?)"}.get(rc, f"upload failed (exit {rc})")
    raise TargetUnavailableError(f"device {device.label}: {cause}: {last_line(proc.stderr_text())}",
                                 hint="set the folder with ?workdir=/path or [connection] workdir")


def _cleanup(device: Device, options: RemoteOptions, run_dir: str) -> None:
    """Best effort after a timeout: stop a runner still in its folder, remove the folder."""
    try:
        proc = _Ssh(device, RemoteOptions(ssh=options.ssh, timeout=min(30.0, options.timeout)),
                    cleanup_script(run_dir))
        proc.communicate()
    except OSError:
        pass


def _failure(device: Device, proc: "_Ssh", rc: int | None, events: list[dict]) -> Exception:
    """The one-line error for a run that did not succeed (a _Dropped when it is worth retrying)."""
    if proc.timed_out:
        return TargetUnavailableError(
            f"device {device.label}: timed out after {proc.timeout:.0f} s (the device or the runner hung)",
            hint="--device-timeout SECONDS raises the limit for slow devices")
    error = next((e for e in events if e.get("event") == "error"), None)
    if error is not None:
        return _runner_error(device, error)
    if rc is None or rc == SSH_FAILED:
        fault = classify_ssh_error(proc.stderr_text())
        if fault.transient:
            return _Dropped(fault)
        return unavailable(device, fault)
    if rc == 127:
        return TargetUnavailableError(f"device {device.label}: python '{device.python}' was not found on the device",
                                      hint="set it with ?python=/path/to/python or [connection] python")
    if rc > 128:
        sig = rc - 128
        return BackendError(f"device {device.label}: the runner was killed by signal {sig} {SIGNALS.get(sig, '')}".rstrip(),
                            hint="check the device's memory (dmesg) and run again")
    detail = last_line(proc.stderr_text()) or "no message"
    return BackendError(f"device {device.label}: the runner failed (exit {rc}): {detail}",
                        hint="run with --debug; the device may need a newer numpy or runtime")


def _runner_error(device: Device, error: dict) -> EdgekitError:
    message = f"device {device.label}: {error.get('message', 'runner error')}"
    if error.get("kind") == "missing-dependency":
        package = error.get("package")
        hint = error.get("hint") or (f"on the device: {device.python} -m pip install {package}" if package else None)
        return TargetUnavailableError(message, hint=hint)
    if error.get("kind") == "bad-job":
        return InvalidInputError(message, hint=error.get("hint"))
    return BackendError(message, hint=error.get("hint"))


# ---- one ssh process: stdin kept open (the runner watches it), stderr collected, a hard deadline ----

class _Ssh:
    def __init__(self, device: Device, options: RemoteOptions, script: str, feed: bytes | None = None):
        self.device, self.timeout, self.timed_out, self._rc, self.status = device, options.timeout, False, None, None
        argv = ssh_argv(device, options.ssh, script)
        try:
            self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        except FileNotFoundError as e:
            raise TargetUnavailableError("the OpenSSH client `ssh` is not installed on this machine",
                                         hint="apt-get install openssh-client (or your OS's OpenSSH package)") from e
        self.stdin, self.stdout = self.proc.stdin, self.proc.stdout
        if feed is not None:  # a script for `python -`, then EOF
            threading.Thread(target=self._feed, args=(feed,), daemon=True).start()
        self._stderr = collections.deque(maxlen=200)
        self._stderr_thread = threading.Thread(target=self._drain_stderr, daemon=True)
        self._stderr_thread.start()
        self._timer = threading.Timer(options.timeout, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def _feed(self, data: bytes) -> None:
        try:
            self.stdin.write(data)
            self.stdin.close()
        except (BrokenPipeError, OSError, ValueError):
            pass

    def _drain_stderr(self) -> None:
        for line in iter(self.proc.stderr.readline, b""):
            self._stderr.append(line.decode(errors="replace"))

    def _expire(self) -> None:
        self.timed_out = True
        self.kill()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()

    def stderr_text(self) -> str:
        self._stderr_thread.join(timeout=5)
        return "".join(self._stderr)

    def communicate(self) -> tuple[bytes, int]:
        out = self.stdout.read()
        return out, self.finish()

    def finish(self) -> int:
        """Wait for ssh to end (idempotent); its exit status."""
        if self._rc is None:
            try:
                self.stdout.read()  # nothing more is expected: let ssh exit
                self._rc = self.proc.wait()
            finally:
                self._timer.cancel()
                for pipe in (self.stdin, self.stdout):
                    try:
                        pipe.close()
                    except (OSError, ValueError):
                        pass
        return self._rc

    def events_until_exit(self, progress: tuple[str, int] | None = None) -> tuple[list[dict], int]:
        """Read protocol lines until the runner's exit status line, else until ssh ends: (events, status)."""
        events: list[dict] = []
        self.status = None
        units = self._units(events)
        if progress:
            description, total = progress
            for _ in progress_iter(units, total=total, description=f"{self.device.label}: {description}"):
                pass
        else:
            collections.deque(units, maxlen=0)
        if self.status is None:  # no status line: ssh's own status (a drop, a refusal, a timeout, `device check`)
            self.status = self.finish()
        return events, self.status

    def _units(self, events: list[dict]) -> Iterator[None]:
        """One item per unit of runner progress, so edgekit.core.progress can draw a bar."""
        done = 0
        for line in iter(self.stdout.readline, b""):
            if line.startswith(EXIT):
                self.status = int(line[len(EXIT):].strip() or -1)
                return
            if not line.startswith(EVENT):
                continue  # library noise on the device
            try:
                event = json.loads(line[len(EVENT):])
            except json.JSONDecodeError:
                continue
            events.append(event)
            if event.get("event") == "progress":
                for _ in range(max(0, int(event.get("done", 0)) - done)):
                    yield None
                done = max(done, int(event.get("done", 0)))


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    import io

    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o600, int(time.time())
    tar.addfile(info, io.BytesIO(data))


def _untar(stream, dest: Path) -> None:
    """Unpack the runner's ./out: plain files only, no paths (the device is not trusted with our disk)."""
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                name = member.name[2:] if member.name.startswith("./") else member.name
                if not member.isfile() or not name or "/" in name or name in (".", ".."):
                    continue
                with tar.extractfile(member) as src, open(dest / name, "wb") as dst:
                    shutil.copyfileobj(src, dst)
    except (tarfile.TarError, OSError, EOFError) as e:
        raise _Dropped(Fault(f"the results were cut off ({e})", "run again", transient=True)) from e


# ---- inputs and outputs as NPZ, written and read one sample at a time ----

def write_samples(path: Path, feeds, names: list[str]) -> int:
    """Feeds (dicts by input name) -> inputs.npz with keys s{i}_{k}; returns the count."""
    count = 0
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        for i, feed in enumerate(feeds):
            for k, name in enumerate(names):
                with zf.open(f"s{i}_{k}.npy", "w", force_zip64=True) as f:
                    np.lib.format.write_array(f, np.asarray(feed[name], order="C"), allow_pickle=False)  # a scalar stays 0-d
            count += 1
    return count


def read_outputs(path: Path, samples: int, n_outputs: int) -> list[list[np.ndarray]]:
    with np.load(path) as data:
        return [[data[f"s{i}_{k}"] for k in range(n_outputs)] for i in range(samples)]


def artifact_job(artifact, threads: int | None, options: dict | None = None) -> tuple[dict, dict[str, Path]]:
    """The job fields and files that describe the model to the runner."""
    from edgekit.backends.registry import target_for_format

    remote = REMOTE_FILE.get(artifact.format, "model.onnx")
    files = {remote: artifact.path}
    if artifact.format == "openvino-ir":
        files["model.bin"] = artifact.path.with_suffix(".bin")
    job = {"model": remote, "format": artifact.format, "precision": artifact.precision, "threads": threads,
           "runtime": artifact.target or target_for_format(artifact.format),
           "inputs": [s.to_dict() for s in artifact.inputs], "outputs": list(artifact.outputs),
           "options": dict(options or {})}
    return job, files

