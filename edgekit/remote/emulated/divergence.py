"""ARM vs x86: the same artifact's outputs on the emulated device's ARM kernels (XNNPACK, MLAS on NEON)
against this host's x86 kernels, so a user sees when ARM int8 kernels round differently."""

from __future__ import annotations

import numpy as np


def host_outputs(artifact, data, output_names: list[str], threads: int | None) -> list[list[np.ndarray]]:
    """The artifact run over the data on this host, outputs in the reference's order."""
    from edgekit.backends.registry import get_backend, target_for_format
    from edgekit.stages.validate import run_outputs

    backend = get_backend(artifact.target or target_for_format(artifact.format))
    with backend.runner(artifact, threads, None) as runner:
        return run_outputs(runner, data, output_names, f"x86 run of {artifact.path.name} (ARM vs x86)")


def divergence(arm: list[list[np.ndarray]], x86: list[list[np.ndarray]], output_names: list[str],
               arm_accuracy: dict, x86_accuracy: dict) -> dict:
    """The `arm_vs_x86` block: how far ARM outputs are from x86 outputs, and what that does to accuracy."""
    per_output = {}
    all_diff = []
    for i, name in enumerate(output_names):
        diff = np.concatenate([np.abs(np.asarray(a[i], np.float64) - np.asarray(x[i], np.float64)).ravel()
                               for a, x in zip(arm, x86)])
        all_diff.append(diff)
        per_output[name] = {"max_abs_diff": float(diff.max(initial=0.0)), "mean_abs_diff": float(diff.mean()),
                            "identical_fraction": round(float(np.mean(diff == 0)), 6)}
    diff = np.concatenate(all_diff) if all_diff else np.zeros(0)
    block = {"samples": len(arm), "max_abs_diff": float(diff.max(initial=0.0)),
             "mean_abs_diff": float(diff.mean()) if diff.size else 0.0,
             "identical_fraction": round(float(np.mean(diff == 0)), 6) if diff.size else 1.0,
             "outputs": per_output}
    primary_arm = np.stack([s[0].reshape(-1) for s in arm])
    primary_x86 = np.stack([s[0].reshape(-1) for s in x86])
    if primary_arm.shape[1] > 1:  # a classifier-like output: do ARM and x86 pick the same class?
        block["top1_agreement"] = round(float(np.mean(primary_arm.argmax(1) == primary_x86.argmax(1))), 6)
    block["x86"] = {k: x86_accuracy.get(k) for k in ("cosine_mean", "top1_agreement", "sqnr_db", "task_metric")}
    for key in ("cosine_mean", "top1_agreement", "sqnr_db"):
        a, x = arm_accuracy.get(key), x86_accuracy.get(key)
        if isinstance(a, (int, float)) and isinstance(x, (int, float)) and np.isfinite(a) and np.isfinite(x):
            block[f"{key}_diff"] = round(float(a - x), 6)
    tm_arm, tm_x86 = arm_accuracy.get("task_metric") or {}, x86_accuracy.get("task_metric") or {}
    if tm_arm.get("value") is not None and tm_x86.get("value") is not None:
        block["task_metric_diff"] = {"name": tm_arm.get("name"), "arm": tm_arm["value"], "x86": tm_x86["value"],
                                     "diff": round(float(tm_arm["value"] - tm_x86["value"]), 6)}
    return block


def arm_vs_x86(artifact, ref, data, arm: list[list[np.ndarray]], arm_accuracy: dict, threads: int | None) -> dict:
    """The artifact on this host over the same data, compared with the device's outputs."""
    from edgekit.stages.validate import compare

    x86 = host_outputs(artifact, data, ref.output_names, threads)
    return divergence(arm, x86, ref.output_names, arm_accuracy, compare(ref, x86))
