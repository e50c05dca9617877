"""How a command run on several devices prints: one table row per device, every failure on stderr."""

from __future__ import annotations

import sys


def print_fleet_table(outcomes, columns: tuple[str, ...], cells) -> None:
    """`cells(row)` gives a device row's cells for `columns` (a failed device gets dashes)."""
    from edgekit.core.console import print_table

    rows = []
    for o in outcomes:
        status = "ok" if o.error is None else "FAILED"
        rows.append((o.place.label, status, *(cells(o.row()) if o.error is None else ("-",) * len(columns))))
    print_table(None, ("device", "status", *columns), rows)


def show_at_places(result, as_json: bool, one, table: tuple) -> None:
    """Print a result measured at places (edgekit.remote.fleet.PlacesResult): `one(result)` for one place, a
    table of `table` = (columns, cells) for a fleet, followed by every failed device's error on stderr. Then
    the result's exit code (the worst failure, or 1 for a missed budget)."""
    from edgekit.cli.options import show
    from edgekit.core.console import error

    fleet = len(result.outcomes) > 1
    show(result, as_json, (lambda r: print_fleet_table(r.outcomes, *table)) if fleet else one)
    if fleet and not as_json:
        for o in result.failures:
            error(o.error.message, o.error.hint)
    if result.exit_code:
        sys.exit(result.exit_code)
