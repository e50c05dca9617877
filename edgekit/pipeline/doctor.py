"""`edgekit doctor`: which targets work here, their versions, CPU features, GPUs, what to install."""

from __future__ import annotations

import shutil
import subprocess

from edgekit.backends.registry import BACKENDS, EXTRAS, available_targets, get_backend
from edgekit.core.hostinfo import environment
from edgekit.core.int8_cpu import int8_cpu


def doctor() -> dict:
    status = available_targets()
    targets = {}
    for name in BACKENDS:
        reason = status[name]
        entry = {"available": reason is None}
        if reason is None:
            entry["versions"] = get_backend(name).versions()
        else:
            entry["reason"] = reason
            extra = EXTRAS[name]
            entry["install"] = f"pip install 'edgekit[{extra}]'" if extra else "pip install onnxruntime"
        targets[name] = entry
    cpu = int8_cpu()
    int8 = {"kind": cpu.kind, "accumulates": cpu.accumulates, "meaning": cpu.summary(), "defaults": cpu.choices()}
    return {"environment": environment(), "int8": int8, "gpus": nvidia_gpus(), "targets": targets}


def nvidia_gpus() -> list[str]:
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,compute_cap", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip()] if out.returncode == 0 else []
