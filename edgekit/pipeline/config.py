"""edgekit.toml: a project's model, data, pruning, profiles, budgets and CI-check settings.

`edgekit deploy -c edgekit.toml` runs it; options given on the command line override it. Paths
are relative to the file. An unknown key or a bad value is exit 2 naming the key, the file and
the line: tomllib gives no positions, so `key_lines` finds each key's line in the text itself.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Callable

from edgekit.core.errors import EdgekitError, InvalidInputError

PRECISIONS = ("fp32", "fp16", "int8")
METHODS = ("auto", "minmax", "entropy", "percentile")
PREPROCESS_KEYS = ("preset", "size", "resize", "crop", "mean", "std", "layout", "order")


# ---- value checkers: return the cleaned value or raise ValueError saying what was expected ----

def _str(v):
    if not isinstance(v, str) or not v.strip():
        raise ValueError("a non-empty string")
    return v


def _bool(v):
    if not isinstance(v, bool):
        raise ValueError("true or false")
    return v


def _number(minimum: float = 0.0, integer: bool = False, below: float | None = None):
    def check(v):
        ok = isinstance(v, int) if integer else isinstance(v, (int, float))
        if isinstance(v, bool) or not ok or v < minimum or (below is not None and v >= below):
            kind = "an integer" if integer else "a number"
            raise ValueError(f"{kind} >= {minimum:g}" + (f" and < {below:g}" if below is not None else ""))
        return v
    return check


def _str_list(choices: tuple[str, ...] | None = None):
    def check(v):
        if isinstance(v, str):
            v = [v]
        if not isinstance(v, list) or not v or not all(isinstance(x, str) and x for x in v):
            raise ValueError("a list of strings")
        bad = [x for x in v if choices and x not in choices]
        if bad:
            raise ValueError(f"each one of {', '.join(choices)} (got '{bad[0]}')")
        return tuple(v)
    return check


def _number_list(minimum: float = 0.0, below: float | None = None):
    one = _number(minimum, below=below)

    def check(v):
        if not isinstance(v, list) or not v:
            raise ValueError("a list of numbers")
        return tuple(one(x) for x in v)
    return check


def _choice(*choices: str):
    def check(v):
        if v not in choices:
            raise ValueError(f"one of {', '.join(choices)}")
        return v
    return check


def _increase(v):
    from edgekit.report.gate import parse_increase

    if isinstance(v, bool) or not isinstance(v, (str, int, float)):
        raise ValueError("a percentage such as \"10%\"")
    try:
        return parse_increase(v)
    except InvalidInputError as e:
        raise ValueError(f"a percentage such as \"10%\" ({e.message})") from None


def _preprocess(v):
    if isinstance(v, str):
        return v
    if not isinstance(v, dict):
        raise ValueError("a spec string such as \"inception,crop=none\" or a table")
    unknown = [k for k in v if k not in PREPROCESS_KEYS]
    if unknown:
        raise ValueError(f"known keys ({', '.join(PREPROCESS_KEYS)}), not '{unknown[0]}'")
    parts = [str(v["preset"])] if "preset" in v else []
    for k, x in v.items():
        if k != "preset":
            parts.append(f"{k}={':'.join(map(str, x)) if isinstance(x, list) else x}")
    return ",".join(parts)


SCHEMA: dict[str, dict[str, Callable[[Any], Any]]] = {
    "model": {"source": _str, "weights": _str, "inputs": _str_list(), "trust_pickle": _bool, "task": _str},
    "data": {"calib": _str, "val": _str, "labels": _str, "masks": _str, "preprocess": _preprocess,
             "val_limit": _number(1, integer=True)},
    "prune": {"ratio": _number(0.0, below=1.0)},
    "quantize": {"method": _choice(*METHODS), "per_channel": _bool, "max_samples": _number(1, integer=True),
                 "exclude": _str_list()},
    "deploy": {"profiles": _str_list(), "precisions": _str_list(PRECISIONS), "output": _str},
    "budgets": {"max_accuracy_drop": _number()},
    "bench": {"warmup": _number(0, integer=True), "min_runs": _number(1, integer=True),
              "min_seconds": _number(), "max_seconds": _number()},
    "check": {"baseline": _str, "max_accuracy_drop": _number(), "max_latency_increase": _increase},
    # `edgekit sweep -c` (edgekit.pipeline.sweep.config reads it; checked here so `deploy -c` takes the file too)
    "sweep": {"profiles": _str_list(), "prune": _number_list(0.0, below=1.0), "precisions": _str_list(PRECISIONS),
              "calib_methods": _str_list(METHODS), "distill": _str, "search": _bool, "accuracy_budget": _number(),
              "min_seconds": _number(), "val_limit": _number(1, integer=True), "ray": _str,
              "workers": _number(1, integer=True), "output": _str},
}
PATH_KEYS = {("model", "weights"), ("data", "calib"), ("data", "val"), ("data", "labels"), ("data", "masks"),
             ("deploy", "output"), ("sweep", "distill"), ("sweep", "output"),
             ("check", "baseline")}


@dataclass(frozen=True)
class CheckSettings:
    """[check]: what `edgekit check -c edgekit.toml` compares against, and how strictly."""

    baseline: Path | None = None
    max_accuracy_drop: float | None = None
    max_latency_increase: float | None = None


@dataclass(frozen=True)
class ProjectConfig:
    path: Path
    values: dict  # section -> key -> cleaned value (paths already resolved against the file)
    lines: dict  # (section, key) -> line number

    def get(self, section: str, key: str, default=None):
        return self.values.get(section, {}).get(key, default)

    @property
    def model(self) -> str | None:
        return self.get("model", "source")

    @property
    def output(self) -> Path | None:
        out = self.get("deploy", "output")
        return Path(out) if out else None

    @property
    def check(self) -> CheckSettings:
        baseline = self.get("check", "baseline")
        return CheckSettings(Path(baseline) if baseline else None, self.get("check", "max_accuracy_drop"),
                             self.get("check", "max_latency_increase"))


def load_config(path: str | Path) -> ProjectConfig:
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"config file not found: {path}", hint="see examples/ci/edgekit.toml")
    text = path.read_text(encoding="utf-8")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise InvalidInputError(f"{path}: invalid TOML: {e}") from e
    lines = key_lines(text)
    values: dict[str, dict] = {}
    for section, table in data.items():
        where = f"{path}:{lines.get((section,), '?')}"
        if section not in SCHEMA:
            raise InvalidInputError(f"{where}: unknown section '{section}'", hint="sections: " + ", ".join(SCHEMA))
        if not isinstance(table, dict):
            raise InvalidInputError(f"{where}: '{section}' must be a table [{section}]")
        values[section] = {}
        for key, value in table.items():
            line = lines.get((section, key), lines.get((section,), "?"))
            where = f"{path}:{line}"
            if key not in SCHEMA[section]:
                raise InvalidInputError(f"{where}: unknown key '{section}.{key}'",
                                        hint=f"allowed in [{section}]: " + ", ".join(SCHEMA[section]))
            try:
                clean = SCHEMA[section][key](value)
            except ValueError as e:
                raise InvalidInputError(f"{where}: '{section}.{key}' = {value!r} is not valid: expected {e}") from None
            if (section, key) in PATH_KEYS:
                clean = str(relative_to_config(path, clean))
            values[section][key] = clean
    config = ProjectConfig(path, values, lines)
    _check_semantics(config)
    return config


def relative_to_config(config_path: Path, value: str) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else (config_path.parent / p)


def resolve_model(config_path: Path, spec: str) -> str:
    """`model.py:factory`, `net.onnx`, `model.pt2` are files (relative to the config); `pkg.mod:factory` is not."""
    file_part, colon, attr = spec.rpartition(":") if ":" in spec else (spec, "", "")
    if colon and not file_part.endswith(".py"):  # pkg.module:factory
        return spec
    candidate = relative_to_config(config_path, file_part)
    return f"{candidate}{colon}{attr}"


def _check_semantics(config: ProjectConfig) -> None:
    """Values that parse but are wrong: unknown profiles, bad input specs, bad preprocessing."""
    from edgekit.backends.registry import load_profile
    from edgekit.core.data import parse_preprocess
    from edgekit.core.tensors import parse_input_spec

    def fail(section, key, e: EdgekitError):
        line = config.lines.get((section, key), "?")
        raise InvalidInputError(f"{config.path}:{line}: '{section}.{key}': {e.message}", hint=e.hint) from None

    if source := config.get("model", "source"):
        config.values["model"]["source"] = resolve_model(config.path, source)
    try:
        config.values.get("model", {}).update(
            inputs=tuple(parse_input_spec(s) for s in config.get("model", "inputs", ())))
    except EdgekitError as e:
        fail("model", "inputs", e)
    profiles = []
    for name in config.get("deploy", "profiles", ()):
        candidate = relative_to_config(config.path, name)
        ref = str(candidate) if name.endswith(".toml") or candidate.exists() else name
        try:
            load_profile(ref)
        except EdgekitError as e:
            fail("deploy", "profiles", e)
        profiles.append(ref)
    if profiles:
        config.values["deploy"]["profiles"] = tuple(profiles)
    if (spec := config.get("data", "preprocess")) is not None:
        try:
            config.values["data"]["preprocess"] = parse_preprocess(spec)
        except EdgekitError as e:
            fail("data", "preprocess", e)


# ---- config + command line -> DeployOptions ------------------------------------------------------

# An option of `deploy` -> (DeployOptions field, sub-field of a nested options object)
OPTION_FIELDS = {"profiles": ("profiles", None), "output": ("out_dir", None), "calib": ("calib", None),
                 "val": ("val", None), "preprocess": ("preprocess", None), "labels": ("labels", None),
                 "inputs": ("inputs", None), "weights": ("weights", None), "trust_pickle": ("trust_pickle", None),
                 "precisions": ("precisions", None), "accuracy_budget": ("accuracy_budget", None),
                 "method": ("quant", "method"), "min_seconds": ("bench", "min_seconds"), "prune": ("prune", None)}


def config_fields(config: ProjectConfig) -> dict:
    """The DeployOptions fields this config sets (only those it names)."""
    from edgekit.backends.base import QuantOptions
    from edgekit.stages.bench import BenchOptions

    g = config.get
    out = {"inputs": g("model", "inputs") or None, "weights": g("model", "weights"),
           "trust_pickle": g("model", "trust_pickle"), "calib": g("data", "calib"), "val": g("data", "val"),
           "labels": g("data", "labels"), "preprocess": g("data", "preprocess"), "val_limit": g("data", "val_limit"),
           "prune": g("prune", "ratio"), "profiles": g("deploy", "profiles"), "precisions": g("deploy", "precisions"),
           "out_dir": config.output, "accuracy_budget": g("budgets", "max_accuracy_drop"),
           "task": g("model", "task"), "masks": g("data", "masks")}
    out = {k: v for k, v in out.items() if v is not None}
    if q := config.values.get("quantize"):
        out["quant"] = QuantOptions(**{k: v for k, v in q.items()})
    if b := config.values.get("bench"):
        out["bench"] = BenchOptions(**b)
    return out


def merge_deploy_options(config: ProjectConfig | None, model: str | None, cli_options, explicit: set[str]):
    """(model, DeployOptions): the config's values, except the options given explicitly (`explicit`)."""
    from edgekit.pipeline.deploy_run import DeployOptions

    opts = cli_options
    if config is not None:
        known = {f.name for f in fields(DeployOptions)}
        explicit_fields: dict[str, set] = {}
        for param in explicit:
            field_name, sub = OPTION_FIELDS.get(param, (param, None))
            explicit_fields.setdefault(field_name, set()).add(sub)
        updates = {}
        for name, value in config_fields(config).items():
            if name not in known:
                continue
            subs = explicit_fields.get(name, set())
            if None in subs:
                continue  # given on the command line as a whole: it wins
            if subs:  # nested options: the command line's sub-fields win, the rest comes from the file
                value = replace(value, **{s: getattr(getattr(cli_options, name), s) for s in subs})
            updates[name] = value
        opts = replace(cli_options, **updates)
        model = model or config.model
    if not model:
        raise InvalidInputError("no model given", hint="pass MODEL or set [model] source in edgekit.toml (-c)")
    if not opts.profiles:
        raise InvalidInputError("no device profile given", hint="pass --profile NAME or set [deploy] profiles")
    if opts.out_dir is None:
        raise InvalidInputError("no output folder given", hint="pass -o DIR or set [deploy] output")
    return model, opts


# ---- where each key is: tomllib has no positions -------------------------------------------------

_HEADER = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"^\s*((?:[A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*'))*)\s*=")


def _split_key(text: str) -> tuple[str, ...]:
    parts = re.findall(r"\"([^\"]*)\"|'([^']*)'|([A-Za-z0-9_-]+)", text)
    return tuple(a or b or c for a, b, c in parts)


def key_lines(text: str) -> dict[tuple[str, ...], int]:
    """Dotted key path -> the 1-based line that defines it (tables and keys, first occurrence)."""
    found: dict[tuple[str, ...], int] = {}
    table: tuple[str, ...] = ()
    in_string: str | None = None  # inside a multi-line string: its closing quotes
    depth = 0  # open brackets/braces of a multi-line value
    for number, line in enumerate(text.splitlines(), 1):
        if in_string:
            if in_string in line:
                in_string = None
            continue
        if depth == 0:
            if m := _HEADER.match(line):
                table = _split_key(m.group(1))
                found.setdefault(table, number)
                continue
            if m := _KEY.match(line):
                path = table + _split_key(m.group(1))
                for i in range(len(table) + 1, len(path) + 1):
                    found.setdefault(path[:i], number)
                line = line[m.end():]
        depth, in_string = _scan_value(line, depth)
    return found


def _scan_value(line: str, depth: int) -> tuple[int, str | None]:
    """Bracket depth after a value's text, skipping strings and comments; an unclosed ''' or \"\"\"."""
    i = 0
    while i < len(line):
        ch = line[i]
        if ch == "#":
            break
        if line.startswith(('"""', "'''"), i):
            quote = line[i:i + 3]
            end = line.find(quote, i + 3)
            if end < 0:
                return depth, quote
            i = end + 3
            continue
        if ch in "\"'":
            end = i + 1
            while end < len(line) and line[end] != ch:
                end += 2 if ch == '"' and line[end] == "\\" else 1
            i = end + 1
            continue
        depth += ch in "[{"
        depth -= ch in "]}"
        i += 1
    return max(depth, 0), None
