"""Reading ``params.yaml``, the one place that holds every knob of the pipeline."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from spt.errors import SuiteError

DEFAULT_PARAMS = Path("params.yaml")


def load_params(path: str | Path = DEFAULT_PARAMS, required: bool = False) -> dict[str, Any]:
    """Parse params.yaml into a dict; an absent optional file gives ``{}``."""
    path = Path(path)
    if path.is_dir():
        raise SuiteError(f"{path}: is a folder, not a params file; fix --params")
    if not path.is_file():
        if required:
            raise SuiteError(f"{path}: params file not found; fix --params")
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as exc:
        raise SuiteError(
            f"{path}: not UTF-8 text (byte {exc.start}); save the file as UTF-8"
        ) from None
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


def add_params_option(parser: Any, help: str = "params file") -> None:
    """--params: a file the user names must exist; without it ./params.yaml is read when
    present (commands also run outside the suite's root, on defaults). Read it with
    :func:`command_params`."""
    import argparse

    parser.add_argument(
        "--params",
        default=argparse.SUPPRESS,
        help=f"{help} (default: {DEFAULT_PARAMS} when present, else built-in defaults)",
    )


def command_params(args: Any) -> dict[str, Any]:
    """Load the params of a command built with :func:`add_params_option`; sets ``args.params``
    to the file's name, which messages cite."""
    explicit = getattr(args, "params", None) is not None
    if not explicit:
        args.params = str(DEFAULT_PARAMS)
    return load_params(args.params, required=explicit)


def section(params: dict[str, Any], *keys: str, default: Any = None) -> Any:
    """``params[k1][k2]...`` or ``default`` when any level is missing."""
    node: Any = params
    for key in keys:
        if not isinstance(node, dict) or key not in node:
            return default
        node = node[key]
    return node


def _lookup(params: dict[str, Any], where: Any, key: str) -> Any:
    """The value at dotted ``key`` or None when absent; a level that is not a mapping (a list
    where ``train:`` should hold keys) is a SuiteError naming it."""
    node: Any = params
    parts = key.split(".")
    for depth, part in enumerate(parts):
        if node is None:
            return None
        if not isinstance(node, dict):
            _not_a_mapping(where, ".".join(parts[:depth]), node)
        node = node.get(part)
    return node


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _not_a_mapping(where: Any, key: str, value: Any) -> None:
    raise SuiteError(
        f"{where}: {key} expected a mapping (key: value lines), got {_shown(value)}; fix the file"
    )


def check_mapping(value: Any, where: Any, key: str) -> dict[str, Any]:
    """``value`` of setting ``key`` as a mapping (``{}`` when null); else a SuiteError naming
    the key. ``where`` is the params file, for the message."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        _not_a_mapping(where, key, value)
    return value


def check_names(value: Any, where: Any, key: str) -> list[str] | None:
    """``value`` of setting ``key`` as a list of names (datasets, prompt modes, folders): a lone
    string is a one-item list, not its characters; None stays None."""
    if value is None or isinstance(value, str):
        return None if value is None else [value]
    if isinstance(value, list) and all(
        isinstance(v, str | int | float) and not isinstance(v, bool) for v in value
    ):
        return [str(v) for v in value]
    raise SuiteError(
        f"{where}: {key} expected a list of names such as [a, b], got {_shown(value)}; fix the file"
    )


def mapping_setting(params: dict[str, Any], where: Any, key: str) -> dict[str, Any]:
    """The mapping at dotted ``key``; ``{}`` when absent or empty."""
    return check_mapping(_lookup(params, where, key), where, key)


def names_setting(
    params: dict[str, Any], where: Any, key: str, default: list[str] | None = None
) -> list[str] | None:
    """The list of names at dotted ``key`` (see :func:`check_names`); ``default`` when absent."""
    names = check_names(_lookup(params, where, key), where, key)
    return default if names is None else names


def bool_setting(params: dict[str, Any], where: Any, key: str, default: bool) -> bool:
    """A YAML boolean (true/false) at dotted ``key``; absent or null gives ``default``. Strings
    are refused: bool("no") would be True."""
    value = _lookup(params, where, key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise SuiteError(
            f"{where}: {key} expected true or false, got {_shown(value)}; fix the file"
        )
    return value


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
        help="SAM checkpoint (default: pipeline.sam_checkpoint, else the file `spt backbones` "
        "lists for the backbone; tiny without one is randomly initialised)",
    )
    parser.add_argument(
        "--prepared-root",
        nargs="+",
        default=argparse.SUPPRESS,
        help="folders holding <dataset>/manifest.csv (from `spt prepare`), searched in order "
        f"(default: pipeline.prepared_roots, else {' '.join(DEFAULT_PREPARED_ROOTS)})",
    )


def pipeline_options(args: Any, params: dict[str, Any]) -> tuple[str, str | None, list[str]]:
    """(backbone, SAM checkpoint or None, prepared roots) from the command line or params; the
    checkpoint as :func:`resolve_checkpoint` finds it."""
    where = getattr(args, "params", DEFAULT_PARAMS)
    backbone = str(pipeline_setting(args, params, "backbone", "backbone", "tiny"))
    checkpoint = pipeline_setting(args, params, "checkpoint", "sam_checkpoint", None)
    if hasattr(args, "prepared_root"):
        roots = [str(r) for r in args.prepared_root]
    else:
        roots = names_setting(params, where, "pipeline.prepared_roots", [*DEFAULT_PREPARED_ROOTS])
        if not roots:
            raise SuiteError(
                f"{where}: pipeline.prepared_roots is empty; list the folders holding "
                "<dataset>/manifest.csv or pass --prepared-root"
            )
    checkpoint = None if checkpoint is None else str(checkpoint)
    return backbone, resolve_checkpoint(backbone, checkpoint, params, where), roots


def sam_settings(params: dict[str, Any], where: Any) -> tuple[dict[str, str], str | None]:
    """(``sam.checkpoints``, ``sam.checkpoint_dir``) checked: a mapping of paths and a path."""
    configured = mapping_setting(params, where, "sam.checkpoints")
    for name, path in configured.items():
        if path is not None and not isinstance(path, str):
            raise SuiteError(
                f"{where}: sam.checkpoints.{name} expected a file path, got {_shown(path)}; "
                "fix the file"
            )
    folder = _lookup(params, where, "sam.checkpoint_dir")
    if folder is not None and not isinstance(folder, str):
        raise SuiteError(
            f"{where}: sam.checkpoint_dir expected a folder path, got {_shown(folder)}; fix the file"
        )
    return configured, folder


def resolve_checkpoint(
    backbone: str, checkpoint: str | None, params: dict[str, Any], where: Any
) -> str | None:
    """The SAM checkpoint to load: the one given (--checkpoint, pipeline.sam_checkpoint), else
    the one `spt backbones` lists (sam.checkpoints, then the published file name in the
    checkpoint folder). None only for a backbone without published weights (tiny: random init);
    a published backbone whose file is missing is an error, never a silent random init."""
    if checkpoint is not None:
        return checkpoint
    from spt.sam import choose_checkpoint, get_spec  # imports torch: only when run

    choice = choose_checkpoint(backbone, *sam_settings(params, where))
    if choice.path is None:
        return None
    if not choice.path.is_file():
        url = get_spec(backbone).download_url
        fetch = f"download {url} there" if url else "put the file there"
        raise SuiteError(
            f"{choice.path}: {backbone} checkpoint not found (from {choice.source}); {fetch}, "
            f"or pass --checkpoint, set pipeline.sam_checkpoint or sam.checkpoints.{backbone} in "
            f"{where}, or point sam.checkpoint_dir / $SPT_SAM_CHECKPOINT_DIR at its folder"
        )
    return str(choice.path)


def pipeline_setting(args: Any, params: dict[str, Any], name: str, key: str, default: Any) -> Any:
    """A command-line value when given (argparse.SUPPRESS leaves it absent), else
    ``pipeline.<key>`` from params.yaml, else ``default``: so `dvc repro` stages stay short and
    every knob lives in params.yaml."""
    if hasattr(args, name):
        return getattr(args, name)
    value = _lookup(params, getattr(args, "params", DEFAULT_PARAMS), f"pipeline.{key}")
    return default if value is None else value


def pipeline_datasets(
    params: dict[str, Any], roots: list[str], where: Any = DEFAULT_PARAMS
) -> list[str]:
    """``pipeline.datasets`` plus each of ``pipeline.optional_datasets`` whose manifest exists
    under one of ``roots`` (real data that a clone may or may not have)."""
    datasets = names_setting(params, where, "pipeline.datasets", [])
    for name in names_setting(params, where, "pipeline.optional_datasets", []):
        if any((Path(root) / name / "manifest.csv").is_file() for root in roots):
            datasets.append(name)
        else:
            print(f"note: optional dataset {name} is not prepared; left out")
    return datasets


def distinct_names(names: list[str], where: str) -> list[str]:
    """``names`` unless one is repeated (a dataset given twice would count twice)."""
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise SuiteError(f"dataset(s) {', '.join(repeated)} given more than once in {where}")
    return names


# --- typed readers of one method's params: one-line SuiteErrors naming ``<where>.<key>`` ----

NO_DEFAULT = object()  # a reader called without a default requires the key


def _raw(params: Mapping[str, Any], key: str, default: Any) -> Any:
    value = params.get(key, default)
    if value is NO_DEFAULT:
        raise TypeError(f"params key {key!r} has no default")
    return value


def _bad(where: str, key: str, expected: str, value: Any) -> SuiteError:
    return SuiteError(f"{where}.{key} must be {expected}, got {value!r}; fix it in the params file")


def range_text(noun: str, minimum, maximum, min_open: bool, max_open: bool) -> str:
    if minimum is not None and maximum is not None:
        low, high = "(" if min_open else "[", ")" if max_open else "]"
        return f"{noun} in {low}{minimum}, {maximum}{high}"
    if minimum is not None:
        return f"{noun} {'>' if min_open else '>='} {minimum}"
    if maximum is not None:
        return f"{noun} {'<' if max_open else '<='} {maximum}"
    return noun


def in_range(value, minimum, maximum, min_open: bool, max_open: bool) -> bool:
    if minimum is not None and (value <= minimum if min_open else value < minimum):
        return False
    return maximum is None or (value < maximum if max_open else value <= maximum)


def is_number(
    value: Any,
    integer: bool,
    minimum=None,
    maximum=None,
    min_open: bool = False,
    max_open: bool = False,
) -> bool:
    """Whether ``value`` is an integer (``integer``) or a finite real number within the bounds.
    Bools and text are not numbers, though Python and YAML would let them pass as such."""
    kind = numbers.Integral if integer else numbers.Real
    return (
        isinstance(value, kind)
        and not isinstance(value, bool)
        and (integer or math.isfinite(value))
        and in_range(value, minimum, maximum, min_open, max_open)
    )


def read_int(
    params: Mapping[str, Any],
    where: str,
    key: str,
    default: Any = NO_DEFAULT,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
) -> int:
    """``params[key]`` (else ``default``) as an int in ``[minimum, maximum]``; a bool, a float
    or a string is a SuiteError naming ``<where>.<key>``."""
    value = _raw(params, key, default)
    if not is_number(value, True, minimum, maximum):
        raise _bad(where, key, range_text("an integer", minimum, maximum, False, False), value)
    return value


def read_float(
    params: Mapping[str, Any],
    where: str,
    key: str,
    default: Any = NO_DEFAULT,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    min_open: bool = False,
    max_open: bool = False,
) -> float:
    """``params[key]`` (else ``default``) as a finite float within the bounds (inclusive, or
    exclusive with ``min_open`` / ``max_open``); an int is accepted, a bool or string is not."""
    value = _raw(params, key, default)
    if not is_number(value, False, minimum, maximum, min_open, max_open):
        expected = range_text("a number", minimum, maximum, min_open, max_open)
        raise _bad(where, key, expected, value)
    return float(value)


def read_bool(params: Mapping[str, Any], where: str, key: str, default: Any = NO_DEFAULT) -> bool:
    """``params[key]`` (else ``default``): only a real boolean; ``"maybe"`` or 1 is an error,
    not silently true."""
    value = _raw(params, key, default)
    if not isinstance(value, bool):
        raise _bad(where, key, "true or false", value)
    return value


def read_choice(
    params: Mapping[str, Any], where: str, key: str, default: Any, choices: Sequence[str]
) -> str:
    """``params[key]`` (else ``default``): one of ``choices``."""
    value = _raw(params, key, default)
    if not isinstance(value, str) or value not in choices:
        raise _bad(where, key, f"one of {', '.join(choices)}", value)
    return value


def read_str(
    params: Mapping[str, Any], where: str, key: str, default: str | None = None
) -> str | None:
    """``params[key]`` (else ``default``): a string (a path, say), or None (null, or empty) for
    "not set"."""
    value = _raw(params, key, default)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise _bad(where, key, "a string (or null)", value)
    return value
