"""`[sweep]` of an edgekit.toml (with the model and data of its [model] and [data]): what `edgekit sweep -c FILE`
reads; options given on the command line win.

    [sweep]
    profiles = ["x86-onnxruntime-cpu", "x86-openvino-cpu"]
    prune = [0, 0.25, 0.5]
    precisions = ["fp32", "int8"]
    calib_methods = ["minmax", "entropy"]
    output = "sweep-out"
"""

from __future__ import annotations

import tomllib
from dataclasses import fields, replace
from pathlib import Path

from edgekit.core.errors import InvalidInputError
from edgekit.pipeline.config import SCHEMA, relative_to_config, resolve_model

# keys of [sweep] -> SweepRequest fields; [model] and [data] keys the sweep takes from the same file
SWEEP_KEYS = tuple(SCHEMA["sweep"])
MODEL_KEYS = {"source": "model", "inputs": "inputs", "weights": "weights", "trust_pickle": "trust_pickle",
              "task": "task"}
DATA_KEYS = {"calib": "calib", "val": "val", "labels": "labels", "masks": "masks", "preprocess": "preprocess",
             "val_limit": "val_limit"}
PATHS = {"distill", "output", "weights", "calib", "val", "labels", "masks"}


def sweep_config(path) -> dict:
    """The request fields (and "model") the file sets; a [sweep] key it does not know is exit 2, naming it."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"config file not found: {path}")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise InvalidInputError(f"{path}: invalid TOML: {e}") from None
    table = data.get("sweep", {})
    if not isinstance(table, dict):
        raise InvalidInputError(f"{path}: 'sweep' must be a table [sweep]")
    unknown = sorted(set(table) - set(SWEEP_KEYS))
    if unknown:
        raise InvalidInputError(f"{path}: unknown key 'sweep.{unknown[0]}'", hint="allowed in [sweep]: " + ", ".join(SWEEP_KEYS))
    found = {}
    for section, keys in (("model", MODEL_KEYS), ("data", DATA_KEYS)):
        for key, name in keys.items():
            if key in data.get(section, {}):
                found[name] = data[section][key]
    for key, value in table.items():  # the checks `deploy -c` makes of the same file
        try:
            found[key] = SCHEMA["sweep"][key](value)
        except ValueError as e:
            raise InvalidInputError(f"{path}: 'sweep.{key}' is not valid: expected {e}") from None
    for name in PATHS & set(found):
        found[name] = str(relative_to_config(path, found[name]))
    if isinstance(found.get("model"), str):
        found["model"] = resolve_model(path, found["model"])
    if isinstance(found.get("preprocess"), dict):  # a table is edgekit.toml's spelling of a spec string
        try:
            found["preprocess"] = SCHEMA["data"]["preprocess"](found["preprocess"])
        except ValueError as e:
            raise InvalidInputError(f"{path}: 'data.preprocess' is not valid: expected {e}") from None
    return found


def merge_config(model, request, given: set[str]):
    """(model, request): the file's values except those given explicitly."""
    if not request.config:
        return model, request
    found = sweep_config(request.config)
    known = {f.name for f in fields(request)}
    updates = {k: (tuple(v) if isinstance(v, list) else v) for k, v in found.items()
               if k in known and k not in given}
    return model or found.get("model"), replace(request, **updates)
