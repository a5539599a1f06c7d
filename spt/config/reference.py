"""The settings reference (docs/configuration.md), written from the schema so it cannot drift:
``spt config --reference > docs/configuration.md`` regenerates it (the sections here plus each
registered method's config class), and tests/test_config.py fails when the committed file
differs."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Literal

from spt.config.schema import fields, hints, is_section, walk
from spt.config.sections import SuiteConfig

HEADER = """# Configuration reference

Every knob lives in `params.yaml`; every command reads it through one loader (`spt/config/`)
that checks each section against a frozen, typed dataclass. What the loader refuses, with a
one-line error naming the file and the dotted key:

- a key the schema does not know, at any level, including top-level sections and
  `methods.<name>` naming no registered method (a close match is suggested);
- a key given twice in one mapping (YAML would silently keep the last);
- a value of another kind: no number is read from text (`"0.5"`), no integer from a fraction
  (`1.9`) or a boolean (`true`), no boolean from a number, no path from a list; NaN and inf are
  not numbers;
- a value out of its range, an empty list where one name is needed, a pair out of order.

A lone name where a list is expected is a one-item list. Command-line options that override a
setting (`--seed`, `--epochs`, `--prompt-modes`, ...) are checked the same way, last, and their
message names the option. `null` means "not set" where the type says `or null`.

Method params (`methods.<name>.*`) are declared and checked by each method (docs/spt.md,
docs/baselines.md); `methods.<name>.train` overrides `train` for that method key by key
(`augment: {hflip: 0}` keeps the other augment settings). Dataset entries
(`data.datasets.<name>`) are checked against their layout's reader (docs/data.md).

`spt config` prints the settings a params file gives once checked and defaults filled in
(`spt config --params my.yaml`). This file is generated from the schema:
`spt config --reference > docs/configuration.md`.
"""


def _type(hint: Any) -> str:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint in (int, float, bool, str):
        return {int: "integer", float: "number", bool: "boolean", str: "string"}[hint]
    if origin is Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"list of {_type(args[0])}"
        return f"[{', '.join(_type(a) for a in args)}]"
    if origin is dict:
        return "mapping"
    if len(args) == 2 and type(None) in args:
        return f"{_type(next(a for a in args if a is not type(None)))} or null"
    return str(hint)


def _default(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return "[" + ", ".join(map(str, value)) + "]"
    if isinstance(value, dict):
        return "{}" if not value else str(value)
    return str(value)


def _bounds(meta: typing.Mapping[str, Any]) -> str:
    low, high = meta.get("minimum"), meta.get("maximum")
    parts = []
    if low is not None:
        parts.append(f"{'>' if meta.get('min_open') else '>='} {low}")
    if high is not None:
        parts.append(f"{'<' if meta.get('max_open') else '<='} {high}")
    if meta.get("nonempty"):
        parts.append("not empty")
    return ", ".join(parts)


def _table(cls: type, prefix: str) -> list[str]:
    """One row per setting of ``cls`` (nested sections inline), keys under ``prefix``."""
    defaults = cls()
    lines = ["| key | type | default | range | meaning |", "|---|---|---|---|---|"]
    for key, field, field_hint in walk(cls, prefix):
        value: Any = defaults
        for part in key[len(prefix) + 1 :].split("."):
            value = getattr(value, part)
        if is_section(field_hint):
            row = (f"`{key}`", "section", "", "", field.metadata["doc"])
        else:
            row = (
                f"`{key}`", _type(field_hint), f"`{_default(value)}`",
                _bounds(field.metadata), field.metadata["doc"],
            )  # fmt: skip
        lines.append("| " + " | ".join(row) + " |")
    return [*lines, ""]


def reference_markdown(methods: typing.Mapping[str, type] | None = None) -> str:
    """The reference: one table per section, then one per method of ``methods`` (name ->
    config class), a row per setting."""
    defaults = SuiteConfig()
    lines = [HEADER]
    for section in fields(SuiteConfig):
        hint = hints(SuiteConfig)[section.name]
        lines.append(f"## `{section.name}`\n")
        lines.append(section.metadata["doc"][0].upper() + section.metadata["doc"][1:] + ".\n")
        if not is_section(hint):
            lines.append(f"A mapping; default `{_default(getattr(defaults, section.name))}`.\n")
            continue
        lines += _table(hint, section.name)
    for name, cls in sorted((methods or {}).items()):
        lines.append(f"## `methods.{name}`\n")
        lines.append((cls.__doc__ or "").strip().splitlines()[0].replace("``", "`") + "\n")
        lines += _table(cls, f"methods.{name}") if dataclasses.fields(cls) else ["No params.\n"]
    return "\n".join(lines).rstrip() + "\n"
