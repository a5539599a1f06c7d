"""Reading params.yaml into a :class:`~spt.config.sections.SuiteConfig`: one loader for every
command. YAML is safe-loaded with duplicate keys refused (a second ``evaluate:`` would silently
win); every section is checked against its schema, unknown keys included, and command-line
values are laid over the result as a last, equally typed, step (:func:`override`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml

from spt.config.schema import BadSetting, bad, build, convert, hints, is_section, message, overlay
from spt.config.sections import SuiteConfig, TrainSection
from spt.errors import SuiteError

DEFAULT_PARAMS = Path("params.yaml")
#: Bounds a params file must keep before it is expanded: a params file is a few kilobytes, and
#: YAML's aliases and nesting can make a small file expand to gigabytes or overflow the stack.
MAX_BYTES = 1 << 20
MAX_ALIASES = 100
MAX_DEPTH = 32


class _StrictLoader(yaml.SafeLoader):
    """A safe loader that refuses a key given twice in one mapping."""


def _mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, yaml.Node] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} is given twice (first on line "
                f"{seen[key].start_mark.line + 1}); keep one", key_node.start_mark,
            )  # fmt: skip
        seen[key] = key_node
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def _check_bounds(text: str, path: Path) -> None:
    """Refuse, from the event stream (nothing is built yet), a file with more aliases or deeper
    nesting than any params file needs."""
    aliases = depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.AliasEvent):
            aliases += 1
            if aliases > MAX_ALIASES:
                raise SuiteError(
                    f"{path} line {event.start_mark.line + 1}: more than {MAX_ALIASES} YAML "
                    "aliases (*name); write the values out"
                )
        elif isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise SuiteError(
                    f"{path} line {event.start_mark.line + 1}: nested more than {MAX_DEPTH} "
                    "levels deep; no setting needs that, fix the file"
                )
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def read_yaml(path: Path) -> Any:
    """The parsed file, or a one-line SuiteError naming it (and the line, for YAML errors).
    Files over :data:`MAX_BYTES`, :data:`MAX_ALIASES` aliases or :data:`MAX_DEPTH` levels are
    refused before anything is built."""
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise SuiteError(
            f"{path}: {size:,} bytes, more than a params file holds ({MAX_BYTES:,}); "
            "is it the right file? fix --params"
        )
    try:
        text = path.read_text(encoding="utf-8")
        _check_bounds(text, path)
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506
    except UnicodeDecodeError as exc:
        raise SuiteError(
            f"{path}: not UTF-8 text (byte {exc.start}); save the file as UTF-8"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = " ".join(str(getattr(exc, "problem", None) or exc).split())  # one line
        raise SuiteError(f"{path}{where}: not valid YAML ({problem[:160]}); fix the file") from None


def parse_config(raw: Any, source: str = str(DEFAULT_PARAMS)) -> SuiteConfig:
    """Check a parsed params mapping (``None``: every default) against the schema."""
    config = build(SuiteConfig, raw, source, "")
    for name, spec in config.methods.items():
        key = f"methods.{name}"
        if spec is None:
            spec = {}
        if not isinstance(spec, dict):
            raise SuiteError(message(source, key, "must be a mapping of the method's params"))
        overlay(TrainSection(), spec.get("train"), source, f"{key}.train")  # checked once, here
    methods = {str(k): dict(v or {}) for k, v in config.methods.items()}
    return dataclasses.replace(config, methods=methods, source=source)


def load_config(path: str | Path = DEFAULT_PARAMS, required: bool = False) -> SuiteConfig:
    """The checked params of ``path``; an absent optional file gives every default."""
    path = Path(path)
    if path.is_dir():
        raise SuiteError(f"{path}: is a folder, not a params file; fix --params")
    if path.exists() and not path.is_file():  # a FIFO or a device would block or never end
        raise SuiteError(f"{path}: not a regular file (a pipe or a device?); fix --params")
    if not path.is_file():
        if required:
            raise SuiteError(f"{path}: params file not found; fix --params")
        return dataclasses.replace(SuiteConfig(), source=str(path))
    return parse_config(read_yaml(path), str(path))


def override(config: Any, key: str, value: Any, option: str) -> Any:
    """``config`` with the setting at dotted ``key`` replaced by a command-line ``value``,
    checked like the file's (the message names ``option``, e.g. ``--seed``)."""
    head, _, rest = key.partition(".")
    cls = type(config)
    hint = hints(cls)[head]
    if rest:
        if not is_section(hint):
            raise KeyError(key)
        return dataclasses.replace(
            config, **{head: override(getattr(config, head), rest, value, option)}
        )
    meta = next(f.metadata for f in dataclasses.fields(cls) if f.name == head)
    try:
        checked = convert(value, hint, meta)
    except BadSetting as exc:
        raise bad(None, option, exc.expected, exc.value) from None
    return dataclasses.replace(config, **{head: checked})
