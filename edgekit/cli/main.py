"""The `edgekit` command. Each command parses options, calls one edgekit.api function, prints.

The commands live in one module per family; importing them needs no optional runtime.
"""

from __future__ import annotations

import click

from edgekit.cli.convert import compile_cmd, export, quantize
from edgekit.cli.deploy import demo, deploy
from edgekit.cli.device import device
from edgekit.cli.gate import baseline, check
from edgekit.cli.info import doctor, profiles
from edgekit.cli.inspect import inspect_quant
from edgekit.cli.measure import bench, validate
from edgekit.cli.options import CONTEXT
from edgekit.cli.prune import prune
from edgekit.cli.sweep import sweep
from edgekit.core.version import __version__


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, prog_name="edgekit")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars or notes.")
@click.option("-v", "--verbose", is_flag=True,
              help="Also show the libraries' own logs and progress (always kept in OUTPUT/edgekit.log).")
@click.pass_context
def main(ctx, debug, quiet, verbose):
    """Take a trained model to edge devices: export, quantize, compile, validate, benchmark, gate CI."""
    from edgekit.core import runlog
    from edgekit.core.progress import restart_clock, set_quiet

    ctx.obj = {"debug": debug, "quiet": quiet}
    set_quiet(quiet)
    restart_clock()
    runlog.start(verbose)


for command in (export, quantize, compile_cmd, validate, bench, deploy, demo, profiles, doctor, prune, check,
                baseline, device, inspect_quant, sweep):
    main.add_command(command)

if __name__ == "__main__":
    main()
