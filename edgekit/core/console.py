"""Printing: one-line errors, readable tables, --json. Commands print only through here."""

from __future__ import annotations

import json

import click

from edgekit.core.runlog import terminal


def echo_json(data) -> None:
    from edgekit.core.atomic import json_default

    click.echo(json.dumps(data, indent=2, default=json_default))


def print_table(title: str | None, columns, rows) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_lines=False)
    for i, c in enumerate(columns):
        last = i == len(columns) - 1
        table.add_column(c, justify="left" if i < 3 or last else "right", no_wrap=not last)
    for row in rows:
        table.add_row(*[_style(c) for c in row])
    Console(width=max(120, _terminal_width())).print(table)


def _terminal_width() -> int:
    import shutil

    return shutil.get_terminal_size((120, 40)).columns


def _style(cell: str) -> str:
    return {"pass": "[green]pass[/]", "FAIL": "[bold red]FAIL[/]", "FAILED": "[bold red]FAILED[/]",
            "skipped": "[dim]skipped[/]"}.get(cell, cell)


def print_kv(pairs) -> None:
    width = max((len(k) for k, _ in pairs), default=0)
    for k, v in pairs:
        click.echo(f"{k.ljust(width)}  {v}")


def note(message: str) -> None:
    """One line for the user on stderr (stdout stays for tables and --json), also inside a library's capture."""
    click.echo(message, file=terminal())


_noted: set[str] = set()


def note_once(message: str) -> None:
    """`note`, but each distinct line once per process (the accuracy search rebuilds the same model many times)."""
    if message not in _noted:
        _noted.add(message)
        note(message)


def warn(message: str) -> None:
    click.echo(f"warning: {message}", file=terminal())


def error(message: str, hint: str | None = None) -> None:
    click.echo(f"error: {message}", file=terminal())
    if hint:
        click.echo(f"hint: {hint}", file=terminal())
    terminal().flush()


def accuracy_rows(acc: dict) -> list[tuple[str, str]]:
    if acc.get("error"):
        return [("accuracy", acc["error"])]
    rows = [("samples", str(acc["samples"]))]
    if acc.get("task"):
        rows.append(("task", f"{acc['task']} ({acc.get('task_source') or 'given'})"))
    for key in ("top1_agreement", "top1_agreement_confident", "top5_agreement", "cosine_mean", "cosine_min",
                "sqnr_db", "max_abs_err"):
        if acc.get(key) is not None:
            rows.append((key, f"{acc[key]:.4g}"))
    if acc.get("confident_samples") is not None:
        rows.append(("confident_samples", str(acc["confident_samples"])))
    for name, out in (acc.get("outputs") or {}).items():  # every output on its own line
        if out.get("error"):
            rows.append((f"output {name}", out["error"]))
            continue
        sqnr = "exact" if out.get("sqnr_db") is None else f"{out['sqnr_db']:.1f} dB"
        rows.append((f"output {name}", f"cosine {out['cosine_mean']:.4g} (min {out['cosine_min']:.4g}), SQNR {sqnr}, "
                                       f"max abs err {out['max_abs_err']:.4g}"))
    if arm := acc.get("arm_vs_x86"):  # the emulated aarch64 device: ARM kernels vs this host's x86 ones
        same = f", top-1 same {arm['top1_agreement'] * 100:.1f}%" if "top1_agreement" in arm else ""
        rows.append(("ARM vs x86", f"max |diff| {arm['max_abs_diff']:.4g}, mean {arm['mean_abs_diff']:.3g}, "
                                   f"{arm['identical_fraction'] * 100:.1f}% identical{same}"))
    if tm := acc.get("task_metric"):
        rows.append((tm["name"], _task_metric_text(tm)))
    if acc.get("task") not in (None, "classify"):  # the task's other numbers (classify's are the rows above)
        shown = (acc.get("task_metric") or {}).get("name")
        rows += [(k, f"{v:.4g}") for k, v in (acc.get("task_metrics") or {}).items()
                 if k != shown and isinstance(v, (int, float)) and not isinstance(v, bool)]
    return rows


def _task_metric_text(tm: dict) -> str:
    if tm.get("value") is None:
        return "unknown"
    ref = "" if tm.get("reference") is None else f"reference {tm['reference']:.4f}, "
    drop = "" if tm.get("drop") is None else f"drop {tm['drop']:.2f} points"
    return f"{tm['value']:.4f} ({ref}{drop})".replace(", )", ")").replace(" ()", "")
