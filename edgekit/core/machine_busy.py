"""How busy other processes kept the machine while a benchmark ran, from /proc/stat.

The machine-speed probe cancels a CPU that got slower, but not contention it does not feel: a CPU
hog beside the run thrashes the caches of a tiny model far more than the probe's (measured on the
2-core VM: an unchanged 0.036 ms model +18.7% relative to the probe, with the probe +6%). So the
benchmark records the share of the machine's CPU time that other processes used during the timed
runs, and `check` widens its latency allowance by it (gate.BUSY_RESIDUAL).
"""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True)
class CpuSnapshot:
    busy_s: float  # all processes' non-idle CPU time since boot (/proc/stat)
    self_s: float  # this process's CPU time, every thread
    wall_s: float


def cpu_snapshot() -> CpuSnapshot | None:
    """None where /proc/stat cannot be read (not Linux): then nothing is recorded."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    ticks = [int(v) for v in fields[1:]]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    busy = sum(ticks[:8]) - idle  # guest time is already inside user time
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return CpuSnapshot(busy / _TICKS, usage.ru_utime + usage.ru_stime, time.monotonic())


def others_share(before: CpuSnapshot | None, after: CpuSnapshot | None, cores: int | None = None) -> float | None:
    """The share (0..1) of all cores' time between the snapshots that other processes used."""
    if before is None or after is None:
        return None
    wall = after.wall_s - before.wall_s
    capacity = wall * (cores or os.cpu_count() or 1)
    if capacity <= 0:
        return None
    others = (after.busy_s - before.busy_s) - (after.self_s - before.self_s)
    return round(min(1.0, max(0.0, others / capacity)), 3)
