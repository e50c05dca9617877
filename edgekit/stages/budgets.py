"""Budget verdicts of one result row: size, latency where it was really measured, and accuracy vs FP32."""

from __future__ import annotations

from edgekit.core.profiles import Budgets, Profile


def check_budgets(profile: Profile, row: dict, accuracy_budget: float | None) -> list[str]:
    """Budget violations of one row, each a sentence naming the metric, value and limit."""
    b, found = profile.budgets, []
    size_mb = row["artifact"]["size_bytes"] / 1e6
    if b.max_model_mb is not None and size_mb > b.max_model_mb:
        found.append(f"model size {size_mb:.2f} MB > max_model_mb {b.max_model_mb}")
    lat = row.get("latency_ms") or {}
    # a host standing in for another device says nothing about that device's latency; the device itself does
    # an emulated device (qemu) runs the device's kernels 40-500x slower: its accuracy counts, its latency does not
    measured_there = lat.get("where") == "host" or str(lat.get("where", "")).startswith("ssh://")
    measured_there = measured_there and not lat.get("emulated")
    if b.latency_p90_ms is not None and measured_there and lat["p90"] > b.latency_p90_ms:
        found.append(f"latency p90 {lat['p90']:.2f} ms > latency_p90_ms {b.latency_p90_ms}")
    if acc := row.get("accuracy"):
        found += profile_accuracy_violations(acc, b, accuracy_budget)
    return found


def profile_accuracy_violations(acc: dict, budgets: Budgets, accuracy_budget: float | None) -> list[str]:
    """A profile's accuracy budgets; `accuracy_budget` (--accuracy-budget), when given, replaces max_accuracy_drop."""
    max_drop = accuracy_budget if accuracy_budget is not None else budgets.max_accuracy_drop
    return accuracy_violations(acc, budgets.min_top1_agreement, max_drop, budgets.min_cosine, budgets.min_task_metric,
                               budgets.min_output_cosine)


def accuracy_violations(acc: dict, min_agreement: float | None, max_drop: float | None,
                        min_cosine: float | None = None, min_task_metric: float | None = None,
                        min_output_cosine: float | None = None) -> list[str]:
    found = []
    if acc.get("error"):
        return [acc["error"]]
    if acc.get("constant_output"):
        found.append("output is the same for every input (a broken quantization)")
    if min_agreement is not None and acc.get("top1_agreement") is not None and acc["top1_agreement"] < min_agreement:
        found.append(f"top-1 agreement {acc['top1_agreement']:.3f} < min_top1_agreement {min_agreement}")
    if max_drop is not None:
        drop, what = accuracy_drop(acc)
        if drop is not None and drop > max_drop:
            found.append(f"accuracy drop {drop:.2f} points ({what}) > budget {max_drop}")
    if min_cosine is not None and acc.get("cosine_mean") is not None and acc["cosine_mean"] < min_cosine:
        found.append(f"logit cosine {acc['cosine_mean']:.4f} < min_cosine {min_cosine}")
    tm = acc.get("task_metric") or {}
    if min_task_metric is not None and tm.get("value") is not None and tm["value"] < min_task_metric:
        found.append(f"{tm['name']} {tm['value']:.4f} < min_task_metric {min_task_metric}")
    if min_output_cosine is not None:
        found += output_cosine_violations(acc.get("outputs") or {}, min_output_cosine)
    return found


def output_cosine_violations(outputs: dict, min_output_cosine: float) -> list[str]:
    found = []
    for name, out in outputs.items():
        if out.get("error"):
            found.append(f"output {name}: {out['error']}")
        elif out.get("cosine_mean") is not None and out["cosine_mean"] < min_output_cosine:
            found.append(f"output {name} cosine {out['cosine_mean']:.4f} < min_output_cosine {min_output_cosine}")
    return found


def accuracy_drop(acc: dict) -> tuple[float | None, str]:
    """Points lost: the task metric (mAP points for detect, mIoU for segment, nn agreement for embed,
    top-1 accuracy with labels for classify), else disagreement on the confident samples."""
    if acc.get("task_metric"):
        return acc["task_metric"]["drop"], acc["task_metric"]["name"]
    agreement = acc.get("top1_agreement_confident")
    if agreement is None:
        agreement = acc.get("top1_agreement")
    if agreement is None:
        return None, ""
    return round((1 - agreement) * 100, 3), "top-1 disagreement with FP32 on confident samples"
