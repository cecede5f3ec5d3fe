"""The fields of a trainer's config class (TRL's SFTConfig, DPOConfig, RewardConfig, GRPOConfig; transformers'
TrainingArguments) as data: name, type, default, the choices and help text it documents. A recipe's `training:`
section is checked against them when the recipe loads.

Importing a config class imports TRL, transformers and torch: 5-7 s on 2 CPU cores, longer than any refusal of a
bad recipe should take. So the fields are read from the class once per installed version of TRL, transformers and
accelerate and kept as JSON in `~/.cache/promptbake/trainer-configs/` (`$PROMPTBAKE_CONFIG_CACHE`); later loads
read that file (milliseconds) and import nothing. Nothing is typed by hand: a field TRL adds or renames is in the
next version's file. What only the class itself can say (a value its `__post_init__` refuses, a deprecated name
it warns about) is checked when the trainer's config is built (sft/training.py, check_config).
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import hashlib
import importlib
import importlib.metadata
import json
import logging
import os
import types
import typing
from pathlib import Path
from typing import Any, Literal, NamedTuple

log = logging.getLogger(__name__)

CACHE_ENV = "PROMPTBAKE_CONFIG_CACHE"
FORMAT = 1
"""Bumped when what is stored changes, so that an older file is never read as a newer one."""
LIBRARIES = ("trl", "transformers", "accelerate")
"""Whose versions the fields depend on (accelerate: TrainingArguments' parallelism config)."""
NO_DEFAULT = "<no default>"


class ConfigField(NamedTuple):
    type: Any
    """The field's annotation as JSON (`encode`); `decode` makes it a type pydantic validates with."""
    default: Any
    """The default the class gives (NO_DEFAULT: none)."""
    choices: list | None
    """The choices its metadata lists, if any."""
    help: str


@functools.cache
def config_fields(config_path: str) -> dict[str, ConfigField]:
    """The init fields of the config class at `config_path` (e.g. "trl.SFTConfig"), from the cache or, the first
    time for these library versions, from the class (and then cached)."""
    cache = cache_file(config_path)
    try:
        stored = json.loads(cache.read_text())
    except (OSError, ValueError):
        stored = describe(config_class(config_path))
        save(cache, stored)
    return {name: ConfigField(f["type"], f["default"], f["choices"], f["help"]) for name, f in stored.items()}


def config_class(config_path: str) -> type:
    module, _, name = config_path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def cache_file(config_path: str) -> Path:
    versions = [f"{lib}=={version(lib)}" for lib in LIBRARIES]
    key = hashlib.sha256(json.dumps([FORMAT, *versions]).encode()).hexdigest()[:12]
    root = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "promptbake" / "trainer-configs")
    return root / f"{config_path}-{key}.json"


def version(library: str) -> str:
    try:
        return importlib.metadata.version(library)
    except importlib.metadata.PackageNotFoundError:
        return "none"


def save(cache: Path, stored: dict) -> None:
    from promptbake.core.io import atomic_write_text

    try:
        atomic_write_text(cache, json.dumps(stored, indent=1) + "\n")
    except OSError as e:  # a read-only home: every load reads the class, as it did before the cache
        log.debug("trainer config fields not cached at %s: %s", cache, e)


def describe(cls: type) -> dict[str, dict]:
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = NO_DEFAULT
        choices = f.metadata.get("choices")
        out[f.name] = {"type": encode(hints[f.name]), "default": plain(default),
                       "choices": [plain(c) for c in choices] if choices is not None else None,
                       "help": f.metadata.get("help", "")}
    return out


def plain(value: Any) -> Any:
    """A JSON value: an enum member as its value; anything JSON cannot hold as NO_DEFAULT."""
    if isinstance(value, enum.Enum):
        value = value.value
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return NO_DEFAULT
    return value


SCALARS: dict[str, Any] = {"bool": bool, "int": int, "float": float, "str": str, "none": type(None), "any": Any,
                           "dict": dict, "list": list}


def encode(tp: Any) -> Any:
    """A type annotation as JSON: a scalar's name, or [kind, *arguments] for unions, lists, dicts and literals. An
    enum becomes a literal of its values (a value given as text stays text; the config converts it); another class
    of the library's own (accelerate's ParallelismConfig) is named, and imported only to check a value given."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    for name, scalar in SCALARS.items():
        if tp is scalar:
            return name
    if origin in (typing.Union, types.UnionType):
        return ["union", *map(encode, args)]
    if origin is Literal:
        return ["literal", *args]
    if origin in (list, dict) and args:
        return [origin.__name__, *map(encode, args)]
    if origin in (list, dict):
        return origin.__name__
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return ["literal", *(member.value for member in tp)]
    if isinstance(tp, type):
        return ["class", f"{tp.__module__}.{tp.__qualname__}"]
    return "any"


def decode(node: Any) -> Any:
    if isinstance(node, str):
        return SCALARS[node]
    kind, *args = node
    if kind == "literal":
        return Literal[tuple(args)]
    if kind == "class":
        return config_class(args[0])
    parts = tuple(decode(a) for a in args)
    if kind == "union":
        return typing.Union[parts]  # noqa: UP007 (built from a tuple)
    return list[parts[0]] if kind == "list" else dict[parts[0], parts[1]]
