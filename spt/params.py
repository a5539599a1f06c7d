"""Reading ``params.yaml``, the one place that holds every knob of the pipeline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from spt.errors import SuiteError

DEFAULT_PARAMS = Path("params.yaml")


def load_params(path: str | Path = DEFAULT_PARAMS, required: bool = False) -> dict[str, Any]:
    """Parse params.yaml into a dict; an absent optional file gives ``{}``."""
    path = Path(path)
    if not path.is_file():
        if required:
            raise SuiteError(
                f"{path}: params file not found; run from the suite's root or pass --params"
            )
        return {}
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise SuiteError(
            f"{path}{where}: not valid YAML ({getattr(exc, 'problem', exc)}); fix the file"
        ) from None
    if not isinstance(data, dict):
        raise SuiteError(
            f"{path}: expected a mapping at the top level, found {type(data).__name__}"
        )
    return data


def section(params: dict[str, Any], *keys: str, default: Any = None) -> Any:
    """``params[k1][k2]...`` or ``default`` when any level is missing."""
    node: Any = params
    for key in keys:
        if not isinstance(node, dict) or key not in node:
            return default
        node = node[key]
    return node


def pipeline_setting(args: Any, params: dict[str, Any], name: str, key: str, default: Any) -> Any:
    """A command-line value when given (argparse.SUPPRESS leaves it absent), else
    ``pipeline.<key>`` from params.yaml, else ``default``: so `dvc repro` stages stay short and
    every knob lives in params.yaml."""
    if hasattr(args, name):
        return getattr(args, name)
    return section(params, "pipeline", key, default=default)


def pipeline_datasets(params: dict[str, Any], roots: list[str]) -> list[str]:
    """``pipeline.datasets`` plus each of ``pipeline.optional_datasets`` whose manifest exists
    under one of ``roots`` (real data that a clone may or may not have)."""
    datasets = [str(d) for d in section(params, "pipeline", "datasets", default=[]) or []]
    for name in section(params, "pipeline", "optional_datasets", default=[]) or []:
        if any((Path(root) / str(name) / "manifest.csv").is_file() for root in roots):
            datasets.append(str(name))
        else:
            print(f"note: optional dataset {name} is not prepared; left out")
    return datasets
