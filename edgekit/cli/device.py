"""`edgekit device check`, and the `--device` halves of bench / validate / compile / deploy.

Only click is imported at the top: the work happens in edgekit.remote.jobs*, loaded when a command runs.
"""

from __future__ import annotations

import sys

import click

from edgekit.cli.options import handle_errors, json_option

RUNTIME_NAMES = ("onnxruntime", "openvino", "ai-edge-litert", "tflite-runtime", "tensorrt")


@click.group()
def device():
    """Devices reached over SSH (Raspberry Pi, Jetson, any Linux box with Python)."""


@device.command()
@click.argument("targets", nargs=-1, metavar="[ssh://USER@HOST[:PORT] | PROFILE]...")
@click.option("--devices", "devices_file", type=click.Path(), help="File of devices (one per line, or TOML [[device]]).")
@click.option("--accept-new-host-key", is_flag=True, help="Trust an unknown host key on first use.")
@click.option("--device-timeout", type=float, default=60.0, show_default=True, metavar="SECONDS")
@json_option
@handle_errors
def check(targets, devices_file, accept_new_host_key, device_timeout, as_json):
    """CPU, cores, memory, OS, Python, numpy and runtimes of each device; on a Jetson its power mode and clocks."""
    from edgekit.core.console import echo_json, error
    from edgekit.core.errors import InvalidInputError
    from edgekit.remote.fleet import DeviceArgs, run_fleet
    from edgekit.remote.jobs import device_check

    args = DeviceArgs(tuple(targets), devices_file, accept_new_host_key, device_timeout)
    if not args.given:
        raise InvalidInputError("no device given", hint="edgekit device check ssh://user@host[:port]")
    fleet = args.fleet()
    outcomes = run_fleet(fleet, lambda d, opts: {"info": device_check(d, opts)})
    if as_json:
        echo_json({"results": [o.row() for o in outcomes]})
    elif len(outcomes) == 1:
        if outcomes[0].error is None:
            _print_info(outcomes[0].value["info"])
    else:
        _print_fleet_table(outcomes, ("cpu", "cores", "memory", "python", "runtimes"), _check_cells)
    raise_single_or_exit(outcomes, printed_errors=not as_json and len(outcomes) > 1, error=error)


def _print_info(info: dict) -> None:
    from edgekit.core.console import print_kv, warn

    runtimes = info.get("runtimes") or {}
    pairs = [("device", info.get("model") or info.get("hostname") or "-"),
             ("cpu", f"{info['cpu']} ({info['cores']} cores, {info['arch']})"),
             ("cpu features", " ".join(info.get("cpu_flags") or []) or "-"),
             ("memory", f"{_mb(info.get('memory_mb'))} ({_mb(info.get('memory_available_mb'))} available)"),
             ("os", f"{info['os']} (kernel {info.get('kernel')})"),
             ("python", f"{info['python']}  {info.get('python_path')}"), ("numpy", info.get("numpy") or "MISSING")]
    pairs += [(f"runtime {name}", runtimes.get(name, "-")) for name in RUNTIME_NAMES]
    if info.get("trtexec"):
        pairs.append(("trtexec", info["trtexec"]))
    pairs.append(("cpu governor", info.get("cpu_governor") or "not readable"))
    if info.get("cpu_mhz"):
        pairs.append(("cpu clock", " / ".join(f"{k} {v} MHz" for k, v in info["cpu_mhz"].items())))
    temps = info.get("temperatures_c") or {}
    pairs.append(("temperature", ", ".join(f"{k} {v:.1f} C" for k, v in temps.items()) or "not readable"))
    if jetson := info.get("jetson"):
        pairs += [("jetson", jetson.get("l4t")), ("power mode (nvpmodel -q)", _oneline(jetson.get("nvpmodel"))),
                  ("jetson_clocks --show", _oneline(jetson.get("jetson_clocks")))]
    if info.get("throttled"):
        pairs.append(("throttling (vcgencmd)", info["throttled"]))
    print_kv([(k, str(v)) for k, v in pairs])
    if not info.get("numpy"):
        warn("the device has no numpy: pip install numpy there (the runner needs it)")
    if not any(name in runtimes for name in RUNTIME_NAMES):
        warn("no inference runtime on the device: pip install onnxruntime (or ai-edge-litert, openvino) there")
    if info.get("cpu_governor") not in (None, "performance"):
        warn(f"cpu governor is '{info['cpu_governor']}': latency varies with the clock; 'performance' gives "
             "steadier numbers")


def _mb(value) -> str:
    return f"{value / 1024:.1f} GB" if value else "?"


def _oneline(text) -> str:
    return " | ".join(line.strip() for line in str(text or "-").splitlines() if line.strip())[:200]


def _check_cells(row: dict) -> tuple[str, ...]:
    info = row.get("info") or {}
    return (str(info.get("cpu", "-")), str(info.get("cores", "-")), _mb(info.get("memory_mb")),
            str(info.get("python", "-")), " ".join(f"{k} {v}" for k, v in (info.get("runtimes") or {}).items()) or "-")


def _print_fleet_table(outcomes, columns: tuple[str, ...], cells) -> None:
    from edgekit.core.console import print_table

    rows = []
    for o in outcomes:
        row = o.row()
        status = "ok" if o.error is None else "FAILED"
        rows.append((o.device.label, status, *(cells(row) if o.error is None else ("-",) * len(columns))))
    print_table(None, ("device", "status", *columns), rows)


def raise_single_or_exit(outcomes, printed_errors: bool, error=None) -> None:
    """One device: its error is the command's error. A fleet: every failure on stderr, worst exit code."""
    from edgekit.remote.fleet import fleet_exit_code

    failed = [o for o in outcomes if o.error is not None]
    if len(outcomes) == 1 and failed:
        raise failed[0].error
    if printed_errors:
        for o in failed:
            error(o.error.message, o.error.hint)
    if failed:
        sys.exit(fleet_exit_code(outcomes))


# ---- the --device halves of the main commands (called from edgekit.cli.main) ----

def bench_on_devices(artifact, args, threads, options, feed, as_json, profile=None) -> None:
    from edgekit.core.console import echo_json, error
    from edgekit.remote.bench import bench_on_device
    from edgekit.remote.fleet import run_fleet

    fleet = args.fleet()

    def job(device, remote):
        got = bench_on_device(artifact, device, threads, options, feed, remote,
                              dict(profile.runtime.options) if profile else None)
        return {"latency_ms": got["latency_ms"], "environment": got["environment"]}

    outcomes = run_fleet(fleet, job)
    if as_json:
        echo_json({"results": [o.row() for o in outcomes]})
    elif len(outcomes) == 1:
        if outcomes[0].error is None:
            _print_bench(outcomes[0].value)
    else:
        _print_fleet_table(outcomes, ("p50 ms", "p90 ms", "cv", "runs", "cpu"), _bench_cells)
    raise_single_or_exit(outcomes, printed_errors=not as_json and len(outcomes) > 1, error=error)


def _print_bench(value: dict) -> None:
    from edgekit.core.console import print_kv, warn
    from edgekit.core.latency import cv_warning

    block, env = value["latency_ms"], value["environment"]
    keys = ("p50", "p90", "p95", "p99", "mean", "std", "min", "max")
    print_kv([(k, f"{block[k]:.3f} ms") for k in keys] + [
        ("cv", f"{block['cv']:.1%}"), ("runs", block["runs"]), ("first inference", f"{block['first_ms']:.2f} ms"),
        ("load", f"{block['load_ms']:.1f} ms"), ("peak RSS", f"{block['peak_rss_mb']} MB"),
        ("threads", block["threads"] or "runtime default"), ("where", block["where"]),
        ("device", f"{env.get('model') or env['cpu']} ({env['cores']} cores, {env['arch']}), {env['os']}"),
        ("runtimes", " ".join(f"{k} {v}" for k, v in env.get("runtimes", {}).items())),
    ] + ([("effective precision", block["effective_precision"])] if block.get("effective_precision") else []))
    if w := cv_warning(block):
        warn(w)


def _bench_cells(row: dict) -> tuple[str, ...]:
    lat, env = row["latency_ms"], row["environment"]
    return (f"{lat['p50']:.3f}", f"{lat['p90']:.3f}", f"{lat['cv']:.1%}", str(lat["runs"]),
            f"{env.get('cpu', '-')} x{env.get('cores', '?')}")


def validate_on_devices(artifact, reference, data, threads, args, min_agreement, accuracy_budget, as_json) -> None:
    """Reference outputs once on the host, the artifact on every device, one accuracy row per device."""
    from edgekit.backends.registry import get_backend
    from edgekit.core.artifact import Artifact
    from edgekit.core.console import echo_json, error
    from edgekit.remote.bench import validate_on_device
    from edgekit.remote.fleet import run_fleet
    from edgekit.stages.budgets import accuracy_violations
    from edgekit.stages.validate import run_reference

    fleet = args.fleet()
    with get_backend("onnxruntime").runner(Artifact.load(reference), threads) as ref_runner:
        ref = run_reference(ref_runner, data)

    def job(device, remote):
        got = validate_on_device(artifact, ref, data, device, threads, remote)
        violations = accuracy_violations(got["accuracy"], min_agreement, accuracy_budget)
        return {**got, "violations": violations, "passed": not violations}

    outcomes = run_fleet(fleet, job)
    if as_json:
        echo_json({"results": [o.row() for o in outcomes]})
    elif len(outcomes) == 1:
        if outcomes[0].error is None:
            _print_validate(outcomes[0].value, fleet.devices[0].url)
    else:
        _print_fleet_table(outcomes, ("samples", "top-1 agr", "cosine", "verdict"), _validate_cells)
    raise_single_or_exit(outcomes, printed_errors=not as_json and len(outcomes) > 1, error=error)
    if any(o.value and o.value["violations"] for o in outcomes):
        sys.exit(1)


def _print_validate(value: dict, url: str) -> None:
    from edgekit.core.console import accuracy_rows, print_kv

    verdict = "FAIL: " + "; ".join(value["violations"]) if value["violations"] else "pass"
    print_kv(accuracy_rows(value["accuracy"]) + [("where", url), ("verdict", verdict)])


def _validate_cells(row: dict) -> tuple[str, ...]:
    acc = row["accuracy"]
    agr = acc.get("top1_agreement")
    return (str(acc.get("samples")), "-" if agr is None else f"{agr:.3f}", f"{acc.get('cosine_mean', 0):.4f}",
            "pass" if row["passed"] else "FAIL: " + "; ".join(row["violations"]))


def compile_on_devices(model, target, precision, inputs, out_dir, args, extra, as_json) -> None:
    """`compile --target tensorrt --device ...`: the engine is built on the device, with its TensorRT."""
    from edgekit.core.artifact import Artifact
    from edgekit.core.console import echo_json, print_kv
    from edgekit.core.errors import InvalidInputError
    from edgekit.remote.compile import compile_on_device

    if target != "tensorrt":
        raise InvalidInputError(f"--device builds TensorRT engines on the device; target '{target}' compiles here",
                                hint="use --target tensorrt, or drop --device and copy the artifact")
    fleet = args.fleet()
    if len(fleet.devices) != 1:
        raise InvalidInputError("an engine is built on one device at a time",
                                hint="engines are not portable: build on each device model with its own -o folder")
    art = compile_on_device(Artifact.load(model), fleet.devices[0], precision, inputs, extra, out_dir, fleet.options)
    if as_json:
        echo_json({"artifact": art.to_dict(), "path": str(art.path), "size_bytes": art.size_bytes()})
        return
    p = art.provenance
    print_kv([("wrote", str(art.path)), ("build log", p.get("build_log", "-")), ("built on", p["built_on"]),
              ("builder", p.get("builder", "-")), ("tensorrt", p.get("tensorrt", "-")), ("cuda", p.get("cuda", "-")),
              ("gpu", f"{p.get('gpu', '-')} (compute capability {p.get('compute_capability', '?')})"),
              ("size", f"{art.size_bytes() / 1e6:.2f} MB")])
