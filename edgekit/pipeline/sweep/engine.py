"""Where sweep jobs run: Ray tasks (a local Ray started for the sweep, or an existing cluster with --ray), or
in-process, one after another, when Ray is not installed or not wanted.

Jobs are submitted in dependency order (sources before the points built from them); Ray starts a point when its
source is done, so both cores stay busy. Results come back as plain dicts in the order they finish.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
from typing import Callable, Iterator

from edgekit.core.errors import InvalidInputError, TargetUnavailableError


class _Job:
    def __init__(self, fn: Callable, args: tuple):
        self.fn, self.args, self.value, self.cancelled = fn, args, None, False


class InProcess:
    """Jobs run one after another in this process, in the order they were submitted, as `results` asks."""

    name = "in-process"
    parallel = False
    workers = 1

    def submit(self, fn: Callable, *args) -> _Job:
        return _Job(fn, args)

    def results(self, handles: list) -> Iterator[tuple[object, dict]]:
        for job in handles:
            if job.cancelled:
                continue
            args = [a.value if isinstance(a, _Job) else a for a in job.args]
            job.value = job.fn(*args)
            yield job, job.value

    def cancel(self, handles: list) -> None:
        for job in handles:
            job.cancelled = True

    def close(self) -> None:
        pass


class RayEngine:
    """Ray tasks of one CPU each; the driver (this process) keeps benchmarks and records."""

    parallel = True

    def __init__(self, address: str | None, workers: int | None):
        import ray

        self._ray = ray
        self._tmp = None
        self._remote: dict = {}
        os.environ["RAY_USAGE_STATS_ENABLED"] = "0"  # no usage report leaves the machine
        env = {"env_vars": {"RAY_USAGE_STATS_ENABLED": "0", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                            "OPENBLAS_NUM_THREADS": "1"}}
        if address:
            check_reachable(address)
            self.name = f"Ray cluster {address}"
            try:
                ray.init(address=address, runtime_env=env, log_to_driver=False, logging_level="CRITICAL")
            except Exception as e:  # ConnectionError, a version mismatch, a cluster that went away
                raise TargetUnavailableError(f"Ray cluster at {address} did not answer: {_first_line(e)}",
                                             hint="check `ray status` there, or drop --ray for a local Ray") from None
        else:
            # each sweep its own temp dir: a dir naming a dead cluster would make ray.init try to join it
            self._tmp = tempfile.mkdtemp(prefix="edgekit-ray-")
            cpus = workers or os.cpu_count() or 1
            self.name = f"local Ray, {cpus} workers"
            ray.init(num_cpus=cpus, include_dashboard=False, _temp_dir=self._tmp, runtime_env=env,
                     log_to_driver=False, logging_level="CRITICAL")
        self.workers = int(ray.cluster_resources().get("CPU", 1))
        try:
            self.warm_s, self.warm_pids = self._warm()
        except BaseException:  # Ctrl-C while warming: the caller never gets the engine to close
            self.close()
            raise

    def _warm(self) -> tuple[float, set]:
        """One cheap task per CPU before any job: Ray reuses its workers (max_calls 0), so each pays its imports and
        thread caps here once, not inside the first point it runs. Best effort: Ray may give two to one worker."""
        from edgekit.pipeline.sweep.workers import warm

        start = time.perf_counter()
        task = self._ray.remote(num_cpus=1, max_retries=0)(warm)
        try:
            done = self._ray.get([task.remote(1) for _ in range(self.workers)])
        except self._ray.exceptions.RayError:  # a worker that cannot start: the jobs will say so
            done = []
        return round(time.perf_counter() - start, 2), {d["pid"] for d in done}

    def submit(self, fn: Callable, *args):
        if fn not in self._remote:  # no retry: a worker that dies fails its point, which the sweep reports
            self._remote[fn] = self._ray.remote(num_cpus=1, max_retries=0)(fn)
        return self._remote[fn].remote(*args)

    def results(self, handles: list) -> Iterator[tuple[object, dict]]:
        pending = list(handles)
        while pending:
            done, pending = self._ray.wait(pending, num_returns=1)
            ref = done[0]
            try:
                value = self._ray.get(ref)
            except self._ray.exceptions.RayError as e:
                value = {"status": "failed", "exit_code": TargetUnavailableError.exit_code, "worker_died": True,
                         "error": f"the Ray worker running it died ({type(e).__name__})"}
            yield ref, value

    def cancel(self, handles: list) -> None:
        for ref in handles:
            try:
                self._ray.cancel(ref, force=True)
            except Exception:  # already finished or gone
                pass

    def close(self) -> None:
        """End what this sweep started: the local cluster's processes and its temp dir."""
        try:
            self._ray.shutdown()
        finally:
            if self._tmp:
                shutil.rmtree(self._tmp, ignore_errors=True)


def open_engine(ray_address: str | None, in_process: bool, workers: int | None):
    """(engine, note): Ray when installed (or asked for with --ray), else in-process, saying so."""
    if in_process:
        return InProcess(), "points run in-process (--in-process)"
    try:
        import ray  # noqa: F401
    except ImportError:
        if ray_address:
            raise TargetUnavailableError("--ray needs Ray", hint="pip install 'edgekit[sweep]'") from None
        return InProcess(), "Ray is not installed: points run in-process, one at a time (pip install 'edgekit[sweep]')"
    engine = RayEngine(ray_address, workers)
    return engine, (f"points run as Ray tasks on {engine.name} ({len(engine.warm_pids)} workers warmed in "
                    f"{engine.warm_s:.1f} s)")


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """A host:port (or ray://host:port) that does not answer: exit 3 at once, not after Ray's long retries."""
    if address == "auto":
        return
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise InvalidInputError(f"--ray '{address}' is not HOST:PORT", hint="--ray 10.0.0.5:6379 or --ray auto")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            pass
    except OSError as e:
        raise TargetUnavailableError(f"Ray cluster at {address} does not answer: {e.strerror or e}",
                                     hint="start it with `ray start --head`, or drop --ray for a local Ray") from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:300] if text else type(e).__name__
