"""The typed schema machinery: a params section is a frozen dataclass whose fields declare
their type (the annotation), default, range and meaning (:func:`setting`); :func:`build` checks
a parsed YAML mapping against it once, refusing unknown keys and values of the wrong type,
and names the dotted key in every message.

Supported field types: ``int``, ``float``, ``bool``, ``str``, ``Literal[...]``, ``X | None``,
``tuple[T, ...]`` (a list; a lone name is a one-item list), ``tuple[float, float]`` (exactly
two), ``dict[str, T]`` and a nested section. ``dict[str, Any]`` is an opaque mapping whose
entries the owning layer checks (``data.datasets``: the readers' options; ``methods``: each
method's declared params).
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Iterator, Mapping
from functools import cache
from typing import Any, Literal, Union

from spt.config.checks import is_number, range_text, shown
from spt.errors import SuiteError

#: The largest seed a setting takes: every seed library (numpy, torch) accepts it, and records
#: store it as a 64-bit integer.
MAX_SEED = 2**32 - 1


def setting(
    default: Any,
    doc: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    min_open: bool = False,
    max_open: bool = False,
    nonempty: bool = False,
) -> Any:
    """A dataclass field with its default, its meaning (``doc``) and its bounds: ``minimum`` and
    ``maximum`` (exclusive with ``min_open`` / ``max_open``) bound a number or every item of a
    list of numbers; ``nonempty`` refuses an empty list."""
    metadata = {
        "doc": doc,
        "minimum": minimum,
        "maximum": maximum,
        "min_open": min_open,
        "max_open": max_open,
        "nonempty": nonempty,
    }
    if isinstance(default, dict):
        frozen = dict(default)
        return dataclasses.field(default_factory=lambda: dict(frozen), metadata=metadata)
    if isinstance(default, type) and dataclasses.is_dataclass(default):
        return dataclasses.field(default_factory=default, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


class BadSetting(Exception):
    """A value that does not fit its field: ``expected`` says what would."""

    def __init__(self, expected: str, value: Any):
        super().__init__(expected)
        self.expected = expected
        self.value = value


def message(where: str | None, key: str, problem: str) -> str:
    """One line naming the params file (``where``, None for a command-line option) and key."""
    if where is None:
        return f"{key} {problem}"
    return f"{where}: {key} {problem}; fix the file"


def bad(where: str | None, key: str, expected: str, value: Any) -> SuiteError:
    return SuiteError(message(where, key, f"must be {expected}, got {shown(value)}"))


@cache
def hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def fields(cls: type) -> tuple[dataclasses.Field, ...]:
    """The settings of a section (not its internal fields, such as the source file's name)."""
    return tuple(f for f in dataclasses.fields(cls) if not f.metadata.get("internal"))


def is_section(hint: Any) -> bool:
    return isinstance(hint, type) and dataclasses.is_dataclass(hint)


def _optional(hint: Any) -> tuple[Any, bool]:
    """(inner type, whether None is allowed) of ``X | None``."""
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(hint)) == 2:
            return args[0], True
    return hint, False


def _bounds(meta: Mapping[str, Any]) -> tuple:
    """(minimum, maximum, min_open, max_open) of a field, as is_number and range_text take them."""
    return (meta.get("minimum"), meta.get("maximum"), meta.get("min_open", False),
            meta.get("max_open", False))  # fmt: skip


def _number(value: Any, integer: bool, meta: Mapping[str, Any]) -> Any:
    bounds = _bounds(meta)
    if not is_number(value, integer, *bounds):
        raise BadSetting(range_text("an integer" if integer else "a number", *bounds), value)
    return int(value) if integer else float(value)


def convert(value: Any, hint: Any, meta: Mapping[str, Any]) -> Any:
    """``value`` (as parsed from YAML or given on the command line) as a value of ``hint``, or
    BadSetting. Never coerces across kinds: ``"0.5"`` is not a number, 1 is not ``true``, 1.9
    is not an integer, NaN is not a number, ``[x]`` is not a path."""
    inner, nullable = _optional(hint)
    if value is None:
        if nullable:
            return None
        raise BadSetting(_expected(hint, meta), value)
    hint = inner
    origin = typing.get_origin(hint)
    if hint is bool:
        if not isinstance(value, bool):
            raise BadSetting("true or false", value)
        return value
    if hint is int or hint is float:
        return _number(value, hint is int, meta)
    if hint is str:
        if not isinstance(value, str) or value == "":
            raise BadSetting("a non-empty string (quote it if it looks like a number)", value)
        return value
    if origin is Literal:
        choices = typing.get_args(hint)
        if not isinstance(value, str) or value not in choices:
            raise BadSetting(f"one of {', '.join(map(str, choices))}", value)
        return value
    if origin is tuple:
        return _sequence(value, typing.get_args(hint), meta)
    if origin is dict:
        if not isinstance(value, Mapping):
            raise BadSetting("a mapping (key: value lines)", value)
        _, item = typing.get_args(hint)
        if item is Any:
            return {str(k): v for k, v in value.items()}
        out = {}
        for k, v in value.items():
            try:
                out[str(k)] = convert(v, item, {})
            except BadSetting as exc:
                raise BadSetting(f"a mapping whose values are {exc.expected}", value) from None
        return out
    raise TypeError(f"unsupported setting type {hint!r}")  # a schema bug, not a user error


def _sequence(value: Any, args: tuple[Any, ...], meta: Mapping[str, Any]) -> tuple[Any, ...]:
    variadic = len(args) == 2 and args[1] is Ellipsis
    item = args[0]
    if variadic and isinstance(value, str) and item is str:
        value = [value]  # a lone name is a one-item list, not its characters
    expected = _expected(tuple[args], meta)  # type: ignore[valid-type]
    if not isinstance(value, list | tuple):
        raise BadSetting(expected, value)
    if not variadic and len(value) != len(args):
        raise BadSetting(expected, value)
    if meta.get("nonempty") and not value:
        raise BadSetting(expected + " (at least one; leave the key out for the default)", value)
    try:
        return tuple(convert(v, item if variadic else args[i], meta) for i, v in enumerate(value))
    except BadSetting:
        raise BadSetting(expected, value) from None


def _number_example(kind: type, meta: Mapping[str, Any]) -> str:
    """Two values inside a list field's bounds, for its message (never an example the field
    itself would refuse)."""
    low, high = meta.get("minimum"), meta.get("maximum")
    step = 1 if kind is int else 0.5
    first = 0 if low is None else low + (step if meta.get("min_open") else 0)
    second = first + step
    if high is not None and (second > high or (meta.get("max_open") and second >= high)):
        second = first
    values = [first, second] if second != first else [first]
    return "[" + ", ".join(f"{v:g}" for v in values) + "]"


def _expected(hint: Any, meta: Mapping[str, Any]) -> str:
    inner, nullable = _optional(hint)
    origin = typing.get_origin(inner)
    bounds = _bounds(meta)
    if origin is tuple:
        args = typing.get_args(inner)
        noun = {str: "names", int: "integers", float: "numbers"}.get(args[0], "values")
        example = "[a, b]" if args[0] is str else _number_example(args[0], meta)
        if len(args) == 2 and args[1] is Ellipsis:
            text = f"a list of {range_text(noun, *bounds)} such as {example}"
        else:
            text = f"a list of {len(args)} {range_text(noun, *bounds)}"
    elif inner is int or inner is float:
        text = range_text("an integer" if inner is int else "a number", *bounds)
    elif inner is bool:
        text = "true or false"
    elif origin is Literal:
        text = f"one of {', '.join(map(str, typing.get_args(inner)))}"
    elif origin is dict:
        text = "a mapping (key: value lines)"
    else:
        text = "a non-empty string"
    return f"{text} or null" if nullable else text


def _unknown(where: str | None, key: str, name: str, known: list[str]) -> SuiteError:
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    dotted = f"{key}.{name}" if key else name
    return SuiteError(
        message(
            where, dotted, f"is not a known setting{hint}; the known ones are {', '.join(known)}"
        )
    )


def _mapping(raw: Any, where: str | None, key: str) -> Mapping[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise SuiteError(
            message(
                where,
                key or "the top level",
                f"must be a mapping (key: value lines), got {shown(raw)}",
            )
        )
    return raw


def overlay(base: Any, raw: Any, where: str | None, key: str) -> Any:
    """``base`` (a section instance) with the keys of ``raw`` laid over it, each checked against
    its field; a nested section is overlaid key by key, so ``augment: {hflip: 0}`` keeps the
    base's other augment settings. Unknown keys are refused."""
    cls = type(base)
    raw = _mapping(raw, where, key)
    known = [f.name for f in fields(cls)]
    changes: dict[str, Any] = {}
    for name, value in raw.items():
        name = str(name)
        if name not in known:
            raise _unknown(where, key, name, known)
        dotted = f"{key}.{name}" if key else name
        hint = hints(cls)[name]
        if is_section(hint):
            changes[name] = overlay(getattr(base, name), value, where, dotted)
            continue
        meta = next(f.metadata for f in fields(cls) if f.name == name)
        try:
            changes[name] = convert(value, hint, meta)
        except BadSetting as exc:
            raise bad(where, dotted, exc.expected, exc.value) from None
    result = dataclasses.replace(base, **changes)
    check_section(result, where, key)
    return result


def build(cls: type, raw: Any, where: str | None, key: str) -> Any:
    """A ``cls`` section from ``raw`` (a parsed mapping, or None for all defaults)."""
    return overlay(cls(), raw, where, key)


def check_section(section: Any, where: str | None, key: str) -> None:
    """Run a section's cross-field checks: ``problems()`` yields (field, what it must be)."""
    problems = getattr(section, "problems", None)
    for name, problem in problems() if problems else ():
        raise SuiteError(message(where, f"{key}.{name}" if key else name, problem))


def walk(cls: type, prefix: str = "") -> Iterator[tuple[str, dataclasses.Field, Any]]:
    """(dotted key, field, type) of every setting of ``cls``, nested sections included (the
    section itself, then its fields)."""
    for f in fields(cls):
        dotted = f"{prefix}.{f.name}" if prefix else f.name
        hint = hints(cls)[f.name]
        yield dotted, f, hint
        if is_section(hint):
            yield from walk(hint, dotted)
