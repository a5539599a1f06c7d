"""The command-line side of params.yaml: the ``--params`` option, the pipeline options every
command shares (``--backbone``, ``--checkpoint``, ``--prepared-root``) and the lookups built on
the checked configuration (:mod:`spt.config`, which owns the schema and the one loader)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from spt.config import DEFAULT_PARAMS, SuiteConfig, load_config, override
from spt.errors import SuiteError


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


def command_params(args: Any, overrides: dict[str, str] | None = None) -> SuiteConfig:
    """The checked params of a command built with :func:`add_params_option`, with the
    command-line values laid over them: ``overrides`` maps a dotted params key to the
    ``args`` attribute that overrides it (``{"evaluate.seed": "seed"}``), used when given
    (argparse.SUPPRESS leaves an absent option absent). Sets ``args.params`` to the file's
    name, which messages cite."""
    explicit = getattr(args, "params", None) is not None
    if not explicit:
        args.params = str(DEFAULT_PARAMS)
    config = load_config(args.params, required=explicit)
    for key, name in (overrides or {}).items():
        if hasattr(args, name):
            option = "--" + name.replace("_", "-")
            config = override(config, key, getattr(args, name), option)
    return config


DEFAULT_PREPARED_ROOTS = ("work/prepared",)


def add_pipeline_options(parser: Any) -> None:
    """--backbone, --checkpoint and --prepared-root, whose defaults come from ``pipeline.*``
    (read them back with :data:`PIPELINE_OVERRIDES` and :func:`pipeline_options`)."""
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


#: The params keys that :func:`add_pipeline_options`' options override.
PIPELINE_OVERRIDES = {
    "pipeline.backbone": "backbone",
    "pipeline.sam_checkpoint": "checkpoint",
    "pipeline.prepared_roots": "prepared_root",
}


def pipeline_options(config: SuiteConfig) -> tuple[str, str | None, list[str]]:
    """(backbone, SAM checkpoint or None, prepared roots) of a config that has the command
    line laid over it (:data:`PIPELINE_OVERRIDES`); the checkpoint as
    :func:`resolve_checkpoint` finds it."""
    pipeline = config.pipeline
    checkpoint = resolve_checkpoint(pipeline.backbone, pipeline.sam_checkpoint, config)
    return pipeline.backbone, checkpoint, list(pipeline.prepared_roots)


def resolve_checkpoint(backbone: str, checkpoint: str | None, config: SuiteConfig) -> str | None:
    """The SAM checkpoint to load: the one given (--checkpoint, pipeline.sam_checkpoint), else
    the one `spt backbones` lists (sam.checkpoints, then the published file name in the
    checkpoint folder). None only for a backbone without published weights (tiny: random init);
    a published backbone whose file is missing is an error, never a silent random init."""
    if checkpoint is not None:
        return checkpoint
    from spt.sam import choose_checkpoint, get_spec  # imports torch: only when run

    sam = config.sam
    choice = choose_checkpoint(backbone, sam.checkpoints, sam.checkpoint_dir)
    if choice.path is None:
        return None
    if not choice.path.is_file():
        url = get_spec(backbone).download_url
        fetch = f"download {url} there" if url else "put the file there"
        raise SuiteError(
            f"{choice.path}: {backbone} checkpoint not found (from {choice.source}); {fetch}, "
            f"or pass --checkpoint, set pipeline.sam_checkpoint or sam.checkpoints.{backbone} in "
            f"{config.source}, or point sam.checkpoint_dir / $SPT_SAM_CHECKPOINT_DIR at its folder"
        )
    return str(choice.path)


def pipeline_datasets(config: SuiteConfig, roots: list[str]) -> list[str]:
    """``pipeline.datasets`` plus each of ``pipeline.optional_datasets`` whose manifest exists
    under one of ``roots`` (real data that a clone may or may not have)."""
    datasets = list(config.pipeline.datasets)
    for name in config.pipeline.optional_datasets:
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


def add_compute_options(parser: Any, section: str, training: bool = False) -> None:
    """--precision and --attention (and --checkpoint-encoder when ``training``), overriding
    ``<section>.precision`` etc.; read them back with :func:`compute_overrides`."""
    import argparse

    parser.add_argument(
        "--precision",
        choices=("fp32", "bf16", "fp16"),
        default=argparse.SUPPRESS,
        help=f"autocast precision (default: {section}.precision, else fp32; docs/scale.md)",
    )
    parser.add_argument(
        "--attention",
        choices=("sam", "sdpa"),
        default=argparse.SUPPRESS,
        help=f"image-encoder attention kernel (default: {section}.attention, else sam)",
    )
    if training:
        parser.add_argument(
            "--checkpoint-encoder",
            action="store_true",
            default=argparse.SUPPRESS,
            help="recompute the encoder blocks in backward: less memory, same gradients "
            "(default: train.checkpoint_encoder)",
        )


def compute_overrides(section: str, training: bool = False) -> dict[str, str]:
    """The ``overrides`` mapping of :func:`command_params` for :func:`add_compute_options`."""
    keys = {f"{section}.precision": "precision", f"{section}.attention": "attention"}
    if training:
        keys[f"{section}.checkpoint_encoder"] = "checkpoint_encoder"
    return keys
