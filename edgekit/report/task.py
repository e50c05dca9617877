"""The task section of report.md / report.html: accuracy in the task's own units (mAP, mIoU, nearest-
neighbour agreement...), the FP32 model's value beside it, and how the task was chosen."""

from __future__ import annotations

from edgekit.report.tables import html_section, markdown_section

COLUMNS = ("profile", "precision", "task", "metric", "value", "FP32", "drop (points)", "details")
# the few numbers a reader of each task looks for; any other task shows its scalar metrics
DETAILS = {
    "detect": ("map50_vs_fp32", "map_vs_fp32", "mean_iou_vs_fp32", "recall_vs_fp32", "map", "reference_map"),
    "segment": ("miou_vs_fp32", "pixel_agreement", "pixel_accuracy"),
    "embed": ("cosine_mean", "cosine_min", "recall_at_1", "recall_at_5"),
    "classify": ("top1_agreement", "top5_accuracy"),
}
MAX_DETAILS = 6


def task_rows(results: list[dict]) -> list[tuple[str, ...]]:
    """One row per validated result whose accuracy is judged in a task's units."""
    rows = []
    for r in results:
        acc = r.get("accuracy") or {}
        metric = acc.get("task_metric")
        if not metric:  # a classifier without labels: the main table's agreement already says it
            continue
        task = acc.get("task", "")
        if acc.get("task_source"):
            task += f" ({acc['task_source']})"
        rows.append((r["profile"], r["precision"], task, metric["name"], _number(metric.get("value")),
                     _number(metric.get("reference")), _number(metric.get("drop"), 2),
                     details(acc.get("task"), acc.get("task_metrics") or {})))
    return rows


def details(task: str | None, metrics: dict) -> str:
    keys = DETAILS.get(task or "") or [k for k, v in metrics.items() if _scalar(v)]
    shown = [f"{k} {_number(metrics[k])}" for k in keys if _scalar(metrics.get(k))]
    return ", ".join(shown[:MAX_DETAILS])


def _scalar(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _number(value, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def task_markdown(results: list[dict]) -> list[str]:
    return markdown_section("Task accuracy", COLUMNS, task_rows(results))


def task_html(results: list[dict]) -> str:
    return html_section("Task accuracy", COLUMNS, task_rows(results))
