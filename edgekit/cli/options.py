"""Options and error handling shared by every edgekit command."""

from __future__ import annotations

import functools
import sys
import traceback

import click

from edgekit.core.errors import EdgekitError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def handle_errors(fn):
    """Typed errors become one line + hint and their exit code; --debug shows the traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from edgekit.core.console import error

        debug = click.get_current_context().find_root().obj.get("debug", False)
        try:
            return fn(*args, **kwargs)
        except EdgekitError as e:
            if debug:
                traceback.print_exc()
            error(e.message, e.hint)
            sys.exit(e.exit_code)
        except KeyboardInterrupt:
            error("interrupted; no partial artifact was kept")
            sys.exit(130)
        except click.exceptions.Exit:
            raise
        except Exception as e:  # a bug or an untyped library failure: still one line
            if debug:
                traceback.print_exc()
            error(f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
                  "run with --debug for the traceback and report it")
            sys.exit(4)

    return wrapper


def input_option(fn):
    return click.option("--input", "inputs", multiple=True, metavar="NAME:DIMS[:DTYPE]",
                        help="Model input, e.g. input:1x3x224x224 (? = dynamic). Repeat for several.")(fn)


def json_option(fn):
    return click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")(fn)


def device_options(fn):
    """--device/--devices/--accept-new-host-key/--device-timeout, given to the command as one `device`
    (edgekit.remote.fleet.DeviceArgs, resolved inside the command so its errors are handled)."""

    @functools.wraps(fn)
    def wrapper(*args, devices, devices_file, accept_new_host_key, device_timeout, **kwargs):
        from edgekit.remote.fleet import DeviceArgs

        return fn(*args, device=DeviceArgs(tuple(devices), devices_file, accept_new_host_key, device_timeout), **kwargs)

    for option in reversed([
        click.option("--device", "devices", multiple=True, metavar="ssh://USER@HOST[:PORT]",
                     help="Run on this device over SSH (or a profile with [connection]). Repeat for a fleet."),
        click.option("--devices", "devices_file", type=click.Path(), metavar="FILE",
                     help="Devices file: one ssh:// URL or profile per line, or TOML [[device]] tables."),
        click.option("--accept-new-host-key", is_flag=True,
                     help="Trust an unknown device host key on first use (default: it must be in known_hosts)."),
        click.option("--device-timeout", type=float, default=600.0, show_default=True, metavar="SECONDS",
                     help="Longest one step on a device may take before the device counts as hung."),
    ]):
        wrapper = option(wrapper)
    return wrapper


def data_options(fn):
    fn = click.option("--preprocess", metavar="SPEC",
                      help="Image preprocessing: imagenet | inception | raw, plus key=value "
                           "(size=224, resize=256, crop=center|none, mean=a:b:c, std=a:b:c, layout=NCHW|NHWC, order=RGB|BGR).")(fn)
    fn = click.option("--labels", type=click.Path(), help="Labels file (FILENAME LABEL per line) for an image folder.")(fn)
    return fn


def parse_inputs(inputs):
    from edgekit.core.tensors import parse_input_spec

    return tuple(parse_input_spec(t) for t in inputs)


def parse_preprocess_text(text):
    from edgekit.core.data import parse_preprocess

    return parse_preprocess(text, base=None) if text else None


def load_profile_option(name):
    from edgekit.backends.registry import load_profile

    return load_profile(name) if name else None


def merge_inputs(model_inputs, overrides):
    from edgekit.pipeline.deploy import resolve_inputs

    return resolve_inputs(list(model_inputs), tuple(overrides)) if model_inputs else list(overrides)
