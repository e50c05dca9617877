"""The search's steps as a table on the terminal (`edgekit quantize --accuracy-budget`)."""

from __future__ import annotations


def print_search(record: dict) -> None:
    """The steps of a search as a table, then its verdict."""
    import click

    from edgekit.core.console import print_table

    rows = []
    for i, s in enumerate(record["steps"]):
        if s.get("skipped"):
            continue
        drop = s.get("accuracy_drop")
        rows.append((("* " if i == record["chosen_step"] else "  ") + s["step"], str(len(s["float_layers"])),
                     "-" if drop is None else f"{drop:.2f}",
                     "-" if s.get("cosine_mean") is None else f"{s['cosine_mean']:.4f}",
                     "-" if s.get("latency_p50_ms") is None else f"{s['latency_p50_ms']:.3f}",
                     "yes" if s["met"] else "no"))
    print_table("accuracy search", ("step", "float layers", "drop (points)", "cosine", "p50 ms", "budget met"), rows)
    if record["float_layers"]:
        click.echo("kept in float: " + ", ".join(record["float_layers"]))
    if record["met"]:  # a missed budget was already said as a warning
        click.echo(record["message"])
