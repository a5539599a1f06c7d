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


DEFAULT_PREPARED_ROOTS = ("work/prepared",)


def add_pipeline_options(parser: Any) -> None:
    """--backbone, --checkpoint and --prepared-root, whose defaults come from ``pipeline.*``
    (read them back with :func:`pipeline_options`)."""
    import argparse

    parser.add_argument(
        "--backbone",
        default=argparse.SUPPRESS,
        help="SAM backbone (default: pipeline.backbone, else tiny)",
    )
    parser.add_argument(
        "--checkpoint",
        default=argparse.SUPPRESS,
        help="SAM checkpoint (default: pipeline.sam_checkpoint, else random init; tiny only)",
    )
    parser.add_argument(
        "--prepared-root",
        nargs="+",
        default=argparse.SUPPRESS,
        help="folders holding <dataset>/manifest.csv (from `spt prepare`), searched in order "
        f"(default: pipeline.prepared_roots, else {' '.join(DEFAULT_PREPARED_ROOTS)})",
    )


def pipeline_options(args: Any, params: dict[str, Any]) -> tuple[str, str | None, list[str]]:
    """(backbone, SAM checkpoint or None, prepared roots) from the command line or params."""
    backbone = str(pipeline_setting(args, params, "backbone", "backbone", "tiny"))
    checkpoint = pipeline_setting(args, params, "checkpoint", "sam_checkpoint", None)
    roots = pipeline_setting(
        args, params, "prepared_root", "prepared_roots", DEFAULT_PREPARED_ROOTS
    )
    return backbone, None if checkpoint is None else str(checkpoint), [str(r) for r in roots]


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
