"""The ``data:`` section of params.yaml, checked once into plain objects.

``data.datasets.<name>`` needs a ``layout`` (one of :data:`spt.data.readers.READERS`) and takes
an optional ``root`` (default ``<raw_root>/<name>``), ``mask_convention`` (threshold / nonzero;
default the layout's own) and the layout's options (the folder layout's images/masks/...).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spt.data.masks import CONVENTIONS
from spt.data.readers import READERS, get_reader
from spt.data.split import check_fraction
from spt.errors import SuiteError

NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
DEFAULT_TRAIN_FRACTION = 0.5
NATIVE_CONVENTION = {"visa": "nonzero"}  # VisA masks hold class ids; the rest: > 128
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
    convention = str(spec.get("mask_convention", NATIVE_CONVENTION.get(reader.layout, "threshold")))
    if convention not in CONVENTIONS:
        raise SuiteError(
            f"{where}.{name}.mask_convention: {convention!r} is not one of {', '.join(CONVENTIONS)}"
        )
    root = Path(str(spec.get("root", raw_root / name)))
    options = {k: v for k, v in spec.items() if k not in COMMON_KEYS}
    return DatasetConfig(name, reader.layout, root, convention, options)


def check_seed(seed: Any, where: str) -> int:
    """``data.seed`` is an integer (a string would seed different data than its number)."""
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise SuiteError(f"{where}: must be an integer, got {seed!r}; write a whole number")
    return seed


def parse_data_config(section: Any, where: str = "params.yaml data") -> DataConfig:
    """Check the ``data:`` section. ``where`` starts every message: the params file and the
    section (``my.yaml data``), so errors name the file that was actually read."""
    if section is None:
        section = {}
    if not isinstance(section, dict):
        raise SuiteError(f"{where}: expected a mapping")
    raw_root = Path(str(section.get("raw_root", "data")))
    seed = check_seed(section.get("seed", 0), f"{where}.seed")
    workers = section.get("workers", 0)
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 0:
        raise SuiteError(f"{where}.workers: must be an integer >= 0 (0 = one per CPU core)")
    fraction = check_fraction(section.get("train_fraction", DEFAULT_TRAIN_FRACTION), where)
    specs = section.get("datasets") or {}
    if not isinstance(specs, dict):
        raise SuiteError(f"{where}.datasets: expected a mapping name -> {{root, layout}}")
    datasets = {
        str(name): _dataset(str(name), spec, raw_root, f"{where}.datasets")
        for name, spec in specs.items()
    }
    return DataConfig(
        prepared_root=Path(str(section.get("prepared_root", "work/prepared"))),
        seed=seed,
        train_fraction=fraction,
        workers=workers,
        datasets=datasets,
    )
