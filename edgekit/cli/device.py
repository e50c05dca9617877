"""`edgekit device check`: what each device is and which runtimes it has.

Only click is imported at the top: the work happens in edgekit.remote, loaded when the command runs.
"""

from __future__ import annotations

import click

from edgekit.cli.options import json_output
from edgekit.cli.places import show_at_places

RUNTIME_NAMES = ("onnxruntime", "openvino", "ai-edge-litert", "tflite-runtime", "tensorrt")


@click.group()
def device():
    """Devices reached over SSH (Raspberry Pi, Jetson, any Linux box with Python)."""


@device.command()
@click.argument("targets", nargs=-1, metavar="[ssh://USER@HOST[:PORT] | PROFILE]...")
@click.option("--devices", "devices_file", type=click.Path(), help="File of devices (one per line, or TOML [[device]]).")
@click.option("--accept-new-host-key", is_flag=True, help="Trust an unknown host key on first use.")
@click.option("--device-timeout", type=float, default=60.0, show_default=True, metavar="SECONDS")
@json_output
def check(targets, devices_file, accept_new_host_key, device_timeout, as_json):
    """CPU, cores, memory, OS, Python, numpy and runtimes of each device; on a Jetson its power mode and clocks."""
    from edgekit.core.errors import InvalidInputError
    from edgekit.remote.fleet import DeviceArgs, PlacesResult, raise_single_failure, run_at

    args = DeviceArgs(tuple(targets), devices_file, accept_new_host_key, device_timeout)
    if not args.given:
        raise InvalidInputError("no device given", hint="edgekit device check ssh://user@host[:port]")
    outcomes = run_at(args.places(), lambda place: {"info": place.check()})
    raise_single_failure(outcomes)
    show_at_places(PlacesResult(tuple(outcomes), on_devices=True), as_json, lambda r: _print_info(r.value["info"]),
                   (("cpu", "cores", "memory", "python", "runtimes"), _check_cells))


@device.command()
@click.argument("arch", required=False, default="aarch64", metavar="[aarch64]")
@click.option("--runtime", "runtimes", multiple=True, type=click.Choice(["tflite", "onnxruntime"]),
              help="Runtimes in the device (repeat; default: both).")
@click.option("--cpu", default=None, metavar="CPU",
              help="qemu CPU model: cortex-a76 (Raspberry Pi 5, default), cortex-a72 (Pi 4), cortex-a55, ...")
@click.option("--profile", default=None, metavar="PROFILE", help="Take the CPU from a profile's [hardware] emulated_cpu.")
@click.option("--port", type=int, default=None, help="sshd port on 127.0.0.1 (default: a free one).")
@click.option("--stop", is_flag=True, help="Stop the running emulated device (its processes, by their PIDs).")
@click.option("--status", is_flag=True, help="Say whether it runs, and its URL.")
@json_output
def emulate(arch, runtimes, cpu, profile, port, stop, status, as_json):
    """An emulated ARM device on this x86 host (qemu 10, needs root): the real ARM int8 kernels, reached over SSH.

    Builds an arm64 Debian root with Python, numpy and the runtimes once (cached), starts sshd in it on
    127.0.0.1 and prints its ssh:// URL and devices file. Accuracy there is the ARM kernels'; latency is
    40-500x slower than the board and is never judged against a budget.
    """
    from edgekit.core.console import echo_json
    from edgekit.core.errors import InvalidInputError
    from edgekit.remote.emulated import DEFAULT_CPU, emulated_status, stop_emulated
    from edgekit.remote.emulated import emulate as start

    if stop and status:
        raise InvalidInputError("--stop and --status are separate actions: give one")
    if stop or status:
        found = stop_emulated() if stop else emulated_status()
        if as_json:
            echo_json({"running": found is not None and not stop, **({"stopped": found is not None} if stop else {}),
                       "device": found.to_dict() if found else None})
        elif found is None:
            click.echo("emulated device: not running")
        else:
            click.echo(f"emulated device: {'stopped' if stop else 'running'} {found.url} (cpu {found.cpu}, pid {found.pid})")
        return
    if cpu is None and profile:
        from edgekit.backends.registry import load_profile

        cpu = load_profile(profile).hardware.emulated_cpu
        if cpu is None:
            raise InvalidInputError(f"profile '{profile}' has no [hardware] emulated_cpu", hint="give --cpu")
    running = start(arch, tuple(runtimes) or ("tflite", "onnxruntime"), cpu or DEFAULT_CPU, port)
    if as_json:
        echo_json(running.to_dict())
        return
    from edgekit.core.console import print_kv

    print_kv([("url", running.url), ("cpu", f"{running.cpu} (qemu {running.qemu})"), ("pid", str(running.pid)),
              ("devices file", running.devices_file), ("EDGEKIT_SSH_OPTIONS", running.ssh_options_env)])
    click.echo(f"\n  edgekit device check --devices {running.devices_file}\n"
               f"  edgekit validate MODEL --devices {running.devices_file} ...\n"
               "  edgekit device emulate --stop\n"
               "latency there is emulated (40-500x slower than the board): not representative, never judged")


def _print_info(info: dict) -> None:
    from edgekit.core.console import print_kv, warn
    from edgekit.core.int8_cpu import int8_cpu

    runtimes = info.get("runtimes") or {}
    pairs = [("device", info.get("model") or info.get("hostname") or "-"),
             ("cpu", f"{info['cpu']} ({info['cores']} cores, {info['arch']})"),
             ("cpu features", " ".join(info.get("cpu_flags") or []) or "-"),
             ("int8 there", int8_cpu(info.get("cpu_flags") or [], info.get("arch")).summary()),
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
    if (info.get("model") or "").startswith("edgekit emulated aarch64"):
        warn("an emulated device (qemu): its ARM kernels' outputs are real, its latency is not representative")
    elif info.get("cpu_governor") not in (None, "performance"):
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
