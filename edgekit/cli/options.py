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
        from edgekit.core import runlog
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
        except BrokenPipeError:  # `edgekit ... | head` closed the pipe: what was asked for was read
            _quiet_stdout()
            sys.exit(0)
        except Exception as e:  # a bug or an untyped library failure: still one line
            if debug:
                traceback.print_exc()
            error(f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
                  "run with --debug for the traceback and report it")
            sys.exit(4)
        finally:
            runlog.finish()  # the libraries' output, in the output folder (an error stays one line + hint)
            runlog.stop()

    return wrapper


def _quiet_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's final flush does not fail on the closed pipe again."""
    import os

    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def input_option(fn):
    return click.option("--input", "inputs", multiple=True, metavar="NAME:DIMS[:DTYPE][@batch=K]",
                        help="Model input, e.g. input:1x3x224x224 (? = dynamic), sr:scalar:int64, or "
                             "state:2x?x128@batch=1 (samples stacked on axis 1 in data files). Repeat for several.")(fn)


def method_option(fn):
    """--method: calibration ranges, for quantize and deploy."""
    return click.option("--method", type=click.Choice(["auto", "minmax", "entropy", "percentile"]), default="auto",
                        show_default=True,
                        help="Calibration ranges. auto: the target's choice for the model (onnxruntime: percentile, "
                             "min/max for a transformer; tflite: mean of per-sample min/max, ranges at run time for "
                             "an encoder; openvino: NNCF's).")(fn)


def json_output(fn):
    """--json, and typed errors as one line + hint with their exit code: what every command has."""
    return click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")(handle_errors(fn))


def device_options(fn):
    """--device/--devices/--accept-new-host-key/--device-timeout: run the command on devices over SSH."""
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
        fn = option(fn)
    return fn


def data_options(fn):
    fn = click.option("--preprocess", metavar="SPEC",
                      help="Image preprocessing: imagenet | inception | raw, plus key=value "
                           "(size=224, resize=256, crop=center|none, mean=a:b:c, std=a:b:c, layout=NCHW|NHWC, order=RGB|BGR).")(fn)
    fn = click.option("--labels", type=click.Path(), help="Labels for an image folder: a FILENAME LABEL file (classify), "
                                                            "a YOLO labels folder or a COCO json (detect).")(fn)
    return const_option(fn)


def const_option(fn):
    return click.option("--const", "consts", multiple=True, metavar="NAME=VALUE",
                        help="An input every sample shares, given once (e.g. sr=16000); repeat for several.")(fn)


def task_options(fn):
    """--task and --masks: judge accuracy in a task's units (default: guessed from the FP32 outputs)."""
    fn = click.option("--masks", type=click.Path(), metavar="FOLDER",
                      help="Segmentation ground truth: masks/NAME.png of class ids beside the images.")(fn)
    fn = click.option("--task", metavar="NAME|pkg.mod:fn",
                      help="classify | detect | segment | embed | generic, or your metric as pkg.mod:fn "
                           "(default: guessed from the FP32 outputs). Detection labels: --labels FOLDER|COCO.json.")(fn)
    return fn


def given_options(options: dict) -> dict:
    """The options the user typed (or set by environment), as opposed to click defaults: what a call
    with keywords would name (deploy lets them win over its edgekit.toml)."""
    from click.core import ParameterSource

    ctx = click.get_current_context()
    given = (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
    return {k: v for k, v in options.items() if ctx.get_parameter_source(k) in given}


def show(result, as_json: bool, text) -> None:
    """What a command prints: with --json the result's to_dict(), else `text(result)`."""
    from edgekit.core.console import echo_json

    if as_json:
        echo_json(result.to_dict())
    else:
        text(result)
