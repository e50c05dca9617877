"""The benchmark's record of how busy other processes kept the machine (edgekit.core.machine_busy)."""

from __future__ import annotations

import subprocess
import sys
import time

from edgekit.core.machine_busy import CpuSnapshot, cpu_snapshot, others_share


def test_share_counts_other_processes_not_this_one():
    before = CpuSnapshot(busy_s=100.0, self_s=10.0, wall_s=50.0)
    # 2 s of wall time on 2 cores = 4 core-seconds; 3 busy, 1 of them ours -> others used half
    after = CpuSnapshot(busy_s=103.0, self_s=11.0, wall_s=52.0)
    assert others_share(before, after, cores=2) == 0.5
    assert others_share(before, CpuSnapshot(100.5, 11.0, 52.0), cores=2) == 0.0  # tick rounding: never negative
    assert others_share(None, after) is None


def test_a_spinning_process_beside_us_is_seen():
    spin = "import time\nt = time.time()\nwhile time.time() - t < 1.5: pass\n"
    child = subprocess.Popen([sys.executable, "-c", spin])
    try:
        time.sleep(0.3)  # let it start
        before = cpu_snapshot()
        time.sleep(0.8)
        after = cpu_snapshot()
    finally:
        child.wait()
    # counted in units of one core: the child spun on one all along (on a loaded machine, at least
    # the 2/3 of a core a fair scheduler gives each of three spinners on two cores)
    assert others_share(before, after, cores=1) >= 0.5
