"""Typed YAML configs with `key=value` overrides and errors that name the file, line and field.

Every stage's config is a pydantic model with `extra="forbid"`. `load_config` reads a YAML file, applies
overrides given on the command line, validates, and turns any problem into an `InputError` whose message a
user can act on without a traceback: `configs/x.yaml:12: field 'rules.2.check.n': Input should be > 0`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

DEFAULT_MODEL = "smollm2-135m-instruct"
"""The embedded default model (SmolLM2-135M-Instruct, shipped in a PyPI package): every config's `model`
default. Here rather than in `promptbake.core.models` so that configs name it without importing torch."""


class InputError(Exception):
    """Something the user gave (a file, a field, an argument) is wrong. The CLI prints it and exits 2."""


class FieldError(ValueError):
    """A validator's problems with keys below the model it validates that pydantic cannot place itself (the keys
    of an open section, checked against another library's schema): each is (loc below the model, message), and
    `format_validation_error` reports each at its own line."""

    def __init__(self, problems: list[tuple[tuple[str | int, ...], str]]):
        super().__init__("; ".join(f"{'.'.join(map(str, loc))}: {msg}" for loc, msg in problems))
        self.problems = problems


class StrictModel(BaseModel):
    """Base for every config section: unknown keys are errors, never silently ignored."""

    model_config = ConfigDict(extra="forbid", validate_default=True)


Config = TypeVar("Config", bound=BaseModel)
Path_ = tuple[str | int, ...]


def _record_lines(node: yaml.Node, path: Path_, lines: dict[Path_, int]) -> None:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            _record_lines(value, path + (key.value,), lines)
            # an error about a field points at its key, not at where its value starts
            lines[path + (key.value,)] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _record_lines(item, path + (i,), lines)


def read_yaml(path: str | Path) -> tuple[dict[str, Any], dict[Path_, int]]:
    """Read a YAML mapping and the line of every key in it (for error messages)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not valid UTF-8 ({e.reason} at byte {e.start})") from None
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e)
        raise InputError(f"{path}{where}: invalid YAML: {problem}") from None
    if data is None:
        raise InputError(f"{path}: file is empty")
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a mapping of fields at the top level, got {type(data).__name__}")
    lines: dict[Path_, int] = {}
    _record_lines(node, (), lines)
    return data, lines


def apply_overrides(data: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> None:
    """Apply `a.b.c=value` overrides in place; values are parsed as YAML scalars (`3`, `true`, `[1, 2]`)."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise InputError(f"override {item!r}: expected key=value, e.g. training.num_train_epochs=2")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise InputError(f"override {item!r}: value is not valid YAML") from None
        parts = key.split(".")
        target = data
        for part in parts[:-1]:
            if isinstance(target, list) and part.isdigit() and int(part) < len(target):
                target = target[int(part)]
                continue
            if not isinstance(target, dict):
                raise InputError(f"override {item!r}: {part!r} is not a section")
            target = target.setdefault(part, {})
        last = parts[-1]
        if isinstance(target, list) and last.isdigit() and int(last) < len(target):
            target[int(last)] = value
        elif isinstance(target, dict):
            target[last] = value
        else:
            raise InputError(f"override {item!r}: cannot set {last!r} there")


def _line_for(loc: tuple, lines: dict[Path_, int]) -> int | None:
    # pydantic inserts union tags (e.g. the check kind) into `loc`; skip elements that are not YAML keys.
    path: Path_ = ()
    for part in loc:
        if path + (part,) in lines:
            path = path + (part,)
    return lines.get(path) if path else None


def format_validation_error(err: ValidationError, source: str, lines: dict[Path_, int]) -> str:
    """One line per problem: `file:line: field 'a.b': what was expected`."""
    out = []
    for problem in err.errors():
        loc = tuple(problem["loc"])
        error = problem.get("ctx", {}).get("error")
        if isinstance(error, FieldError):
            out += [_describe(loc + below, msg, source, lines) for below, msg in error.problems]
            continue
        msg = problem["msg"]
        if problem["type"] == "extra_forbidden":
            msg = "unknown field (check the spelling; see the config's documentation for valid fields)"
        elif problem["type"] == "missing":
            msg = "required field is missing"
        out.append(_describe(loc, msg, source, lines))
    return "\n".join(out)


def _describe(loc: tuple, msg: str, source: str, lines: dict[Path_, int]) -> str:
    field = ".".join(str(p) for p in loc) or "(top level)"
    line = _line_for(loc, lines)
    where = f"{source}:{line}" if line else source
    return f"{where}: field '{field}': {msg}"


def describe_problems(problems: list[tuple[tuple, str]], source: str, lines: dict[Path_, int]) -> str:
    """Problems found after validation (a FieldError's (loc, message) pairs) as `format_validation_error` words
    them: for checks that run when a command starts rather than when its config loads."""
    return "\n".join(_describe(loc, msg, source, lines) for loc, msg in problems)


def validate(model_cls: type[Config], data: dict[str, Any], source: str,
             lines: dict[Path_, int] | None = None) -> Config:
    """Validate `data` read from `source`. Validators see {"source", "lines"} as their context, so that a config
    can keep where it came from for checks made later (sft.recipe.BaseRecipe.trainer_config)."""
    try:
        return model_cls.model_validate(data, context={"source": source, "lines": lines or {}})
    except ValidationError as e:
        raise InputError(format_validation_error(e, source, lines or {})) from None


def load_config(model_cls: type[Config], path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read `path`, apply `overrides`, validate against `model_cls`."""
    data, lines = read_yaml(path)
    apply_overrides(data, overrides)
    return validate(model_cls, data, str(path), lines)
