"""The ``data:`` section of params.yaml, checked once into plain objects.

``data.datasets.<name>`` needs a ``layout`` (one of :data:`spt.data.readers.READERS`) and takes
an optional ``root`` (default ``<raw_root>/<name>``), ``mask_convention`` (threshold / nonzero;
default the layout's own) and the layout's options (the folder layout's images/masks/...).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spt.config import DataSection
from spt.config.checks import is_number, shown
from spt.config.schema import build
from spt.data.masks import CONVENTIONS
from spt.data.readers import READERS, get_reader
from spt.errors import SuiteError

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
DEFAULT_TRAIN_FRACTION = 0.5
# VisA masks hold class ids; KSDD2's authors count any pixel > 0 as defect; the rest: > 128.
NATIVE_CONVENTION = {"visa": "nonzero", "ksdd2": "nonzero"}
COMMON_KEYS = {"root", "layout", "mask_convention"}


@dataclass(frozen=True)
class DatasetConfig:
    name: str
    layout: str
    root: Path
    mask_convention: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DataConfig:
    prepared_root: Path
    seed: int
    train_fraction: float
    workers: int
    datasets: dict[str, DatasetConfig]
    min_defect_pixels: int = 10


def _dataset(name: str, spec: Any, raw_root: Path, where: str) -> DatasetConfig:
    if not NAME_PATTERN.match(name):
        raise SuiteError(
            f"{where}.{name}: dataset names use lower-case letters, digits, _ and -; rename it"
        )
    if not isinstance(spec, dict) or "layout" not in spec:
        raise SuiteError(f"{where}.{name}: needs a mapping with a layout ({', '.join(READERS)})")
    reader = get_reader(str(spec["layout"]), f"{where}.{name}.layout")
    unknown = set(spec) - COMMON_KEYS - set(reader.option_names)
    if unknown:
        raise SuiteError(
            f"{where}.{name}: unknown keys {sorted(unknown)} for layout {reader.layout}; "
            f"allowed: {sorted(COMMON_KEYS | set(reader.option_names))}"
        )
    for key in ("root", *reader.option_names):  # paths and names: text, never a coerced number
        if key in spec and not isinstance(spec[key], str):
            raise SuiteError(
                f"{where}.{name}.{key} must be a string (quote it), got {shown(spec[key])}; "
                "fix the file"
            )
    for key, choices in reader.option_choices.items():
        if key in spec and spec[key] not in choices:
            raise SuiteError(
                f"{where}.{name}.{key}: {shown(spec[key])} is not one of {', '.join(choices)}; "
                "fix the file"
            )
    convention = str(spec.get("mask_convention", NATIVE_CONVENTION.get(reader.layout, "threshold")))
    if convention not in CONVENTIONS:
        raise SuiteError(
            f"{where}.{name}.mask_convention: {convention!r} is not one of {', '.join(CONVENTIONS)}"
        )
    root = Path(str(spec.get("root", raw_root / name)))
    options = {k: v for k, v in spec.items() if k not in COMMON_KEYS}
    return DatasetConfig(name, reader.layout, root, convention, options)


def check_seed(seed: Any, where: str) -> int:
    """A seed is an integer >= 0 (a string would seed different data than its number)."""
    if not is_number(seed, True, 0):
        raise SuiteError(f"{where}: must be an integer >= 0, got {seed!r}; write a whole number")
    return int(seed)


def parse_data_config(
    section: DataSection | Mapping[str, Any] | None, where: str = "params.yaml"
) -> DataConfig:
    """The ``data:`` section as plain objects: its scalar settings as the schema checked them
    (:class:`spt.config.DataSection`; a raw mapping is checked here), each dataset entry
    checked against its layout's reader. ``where`` is the params file, which every message
    names, with the dotted key (``my.yaml: data.datasets.x.layout ...``)."""
    if not isinstance(section, DataSection):
        section = build(DataSection, section, where, "data")
    raw_root = Path(section.raw_root)
    key = f"{where}: data.datasets"
    datasets = {
        str(name): _dataset(str(name), spec, raw_root, key)
        for name, spec in section.datasets.items()
    }
    return DataConfig(
        prepared_root=Path(section.prepared_root),
        seed=section.seed,
        train_fraction=section.train_fraction,
        workers=section.workers,
        datasets=datasets,
        min_defect_pixels=section.min_defect_pixels,
    )
