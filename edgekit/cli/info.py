"""`edgekit profiles list|show` and `edgekit doctor`: what targets and devices edgekit knows."""

from __future__ import annotations

import click

from edgekit.cli.options import json_output


@click.group()
def profiles():
    """Device profiles: built-in ones and your own TOML files."""


@profiles.command(name="list")
@json_output
def profiles_list(as_json):
    """List the built-in profiles."""
    from edgekit.backends.registry import load_profile
    from edgekit.core.console import echo_json, print_table
    from edgekit.core.profiles import builtin_names

    items = [load_profile(n) for n in builtin_names()]
    if as_json:
        echo_json([{"name": p.name, "target": p.runtime.target, "precision": p.runtime.precision,
                    "description": p.description} for p in items])
        return
    print_table(None, ("name", "target", "precision", "description"),
                [(p.name, p.runtime.target, p.runtime.precision, p.description) for p in items])


@profiles.command(name="show")
@click.argument("name")
@json_output
def profiles_show(name, as_json):
    """Show one profile (a built-in name or a TOML file)."""
    import dataclasses

    from edgekit.backends.registry import load_profile
    from edgekit.core.console import echo_json, print_kv

    p = load_profile(name)
    data = dataclasses.asdict(p)
    if as_json:
        echo_json(data)
        return
    pairs = [("name", p.name), ("description", p.description), ("source", p.source)]
    for section in ("hardware", "runtime", "budgets", "connection"):
        for k, v in (data.get(section) or {}).items():
            if v not in (None, {}, []):
                pairs.append((f"{section}.{k}", str(v)))
    print_kv(pairs)


@click.command()
@json_output
def doctor(as_json):
    """Installed targets and versions, CPU features, GPUs, and what to install for each missing target."""
    from edgekit.core.console import echo_json, print_kv
    from edgekit.pipeline.doctor import doctor as run_doctor

    info = run_doctor()
    if as_json:
        echo_json(info)
        return
    env = info["environment"]
    pairs = [("cpu", f"{env['cpu']} ({env['cores']} cores, {env['arch']})"),
             ("cpu features", " ".join(env["cpu_flags"]) or "-"), ("int8 here", info["int8"]["meaning"]),
             ("int8 defaults", "; ".join(f"{t} " + ", ".join(f"{k} {v}" for k, v in c.items() if v is not None)
                                         for t, c in info["int8"]["defaults"].items())),
             ("os", env["os"]), ("python", env["python"]),
             ("gpus", ", ".join(info["gpus"]) or "none")]
    for name, t in info["targets"].items():
        if t["available"]:
            pairs.append((f"target {name}", "ok  " + " ".join(f"{k} {v}" for k, v in t["versions"].items())))
        else:
            pairs.append((f"target {name}", f"missing: {t['reason']}  ->  {t['install']}"))
    print_kv(pairs)
