"""``spt evaluate``: score a method on prepared datasets under every prompt mode."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

from spt.config import override
from spt.errors import SuiteError
from spt.params import (
    PIPELINE_OVERRIDES,
    add_compute_options,
    add_params_option,
    add_pipeline_options,
    command_params,
    compute_overrides,
    distinct_names,
    pipeline_datasets,
    pipeline_options,
)

NAME = "evaluate"
#: Options that override evaluate.<same name> (checked as the params value would be).
_EVALUATE_OPTIONS = ("datasets", "prompt_modes", "seed", "instances", "resize", "processes")


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from spt.harness.prompts import DEFAULT_PROMPT_MODES
    from spt.harness.records import DEFAULT_OUT_ROOT

    parser = sub.add_parser(
        NAME,
        help="evaluate a method on prepared datasets under every prompt mode",
        description=(
            "Evaluate one method (zero-shot SAM, SPT, a baseline) on prepared datasets.\n"
            "Inputs: <prepared-root>/<dataset>/manifest.csv from `spt prepare`; the test-split\n"
            "defect images with a non-empty mask are scored. The encoder runs once per image;\n"
            "every prompt mode reuses that embedding. Prompts are a pure function of\n"
            "(seed, image id, mode), identical for every method.\n"
            "Outputs in <out>/<method>/<backbone>/: records.parquet (one row per image x prompt\n"
            "mode x output stage: IoU, boundary IoU, Dice, seconds, status and reason when no\n"
            "prompt could be built), summary.csv and summary.md (mean per dataset and category,\n"
            "unweighted mean over datasets). Finished chunks are kept under parts/, so an\n"
            "interrupted run resumes; files are written atomically.\n"
            "Several processes: --processes N on one machine, or any torchrun launch (one or\n"
            "several nodes): chunk i goes to rank i mod N, each rank writes its own chunks,\n"
            "rank 0 merges them; the records are the same bytes as one process's, and a rerun\n"
            "after a killed rank redoes only that rank's unfinished chunks.\n"
            "Defaults come from params.yaml: evaluate.* (prompt_modes, seed, resize, instances,\n"
            "mask_prompt_logit, datasets, processes) and methods.<method>.* (the method's own\n"
            "params);\n"
            "options given here override them. Protocol details: docs/harness.md."
        ),
    )
    parser.add_argument("--method", default="zero_shot", help="registered method name")
    add_pipeline_options(parser)
    add_compute_options(parser, "evaluate")
    add_scoring_options(parser)
    parser.add_argument(
        "--prompt-modes",
        nargs="+",
        default=argparse.SUPPRESS,
        help="box, points-K, points-pn, coarse, coarse-box, each optionally perturbed as "
        "<mode>+<family><level>, e.g. box+shift0.2 (docs/analyses.md) (default: params "
        f"evaluate.prompt_modes, else {' '.join(DEFAULT_PROMPT_MODES)})",
    )
    parser.add_argument(
        "--analysis",
        choices=("label_efficiency", "transfer"),
        default=None,
        help="score the prompt modes of params analyses.<analysis>.prompt_modes instead (the "
        "analysis's evaluate stages; docs/analyses.md)",
    )
    parser.add_argument("--out", default=str(DEFAULT_OUT_ROOT), help="output root")
    add_params_option(parser)
    parser.add_argument(
        "--instances",
        action="store_true",
        default=argparse.SUPPRESS,
        help="one prompt per connected defect region, predictions merged by union (default: "
        "params evaluate.instances, else one prompt set per image, the official protocol)",
    )
    parser.add_argument(
        "--resize",
        choices=("square", "longest-side"),
        default=argparse.SUPPRESS,
        help="input protocol: square = official, longest-side = SAM predictor (default: "
        "params evaluate.resize, else square)",
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=argparse.SUPPRESS,
        help="score with N processes on this machine: relaunches itself under `torchrun "
        "--standalone --nproc_per_node N`; the records are the same bytes as with one "
        "(default: params evaluate.processes, else 1). Under torchrun (one or several "
        "nodes) the launcher's processes share the chunks and this is not needed",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(func=run)
    return parser


def add_scoring_options(parser: argparse.ArgumentParser) -> None:
    """The options of every command that scores a method through :func:`build_config`
    (``spt evaluate``, ``spt robustness``): which images, which prompts' seed, which device
    and weights, and the resumable chunk size."""
    from spt.harness.records import DEFAULT_CHUNK_SIZE

    parser.add_argument(
        "--datasets",
        nargs="+",
        default=argparse.SUPPRESS,
        help="dataset names under the prepared roots (default: evaluate.datasets, else "
        "pipeline.datasets plus the prepared ones of pipeline.optional_datasets)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=argparse.SUPPRESS,
        help="prompt seed, also keying prompt perturbations and image corruptions (default: "
        "params evaluate.seed, else 0)",
    )
    parser.add_argument(
        "--limit",
        type=int,
        default=argparse.SUPPRESS,
        help="first N images per dataset, in image-id order (default: all)",
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    trained = parser.add_mutually_exclusive_group()
    trained.add_argument(
        "--trained",
        metavar="FILE",
        default=argparse.SUPPRESS,
        help="trained.pt written by `spt train` for this method and backbone (it writes "
        "work/train/<method>/<backbone>/trained.pt); required for a trainable method unless "
        "--untrained",
    )
    trained.add_argument(
        "--untrained",
        action="store_true",
        help="score a trainable method with its initial weights (no --trained)",
    )
    parser.add_argument(
        "--chunk-size",
        type=int,
        default=DEFAULT_CHUNK_SIZE,
        help="images per resumable part file, the unit a killed run resumes from and that "
        "processes share out",
    )


def _check_trained(args: argparse.Namespace, method_params: dict, backbone: str) -> None:
    """A trainable method without --trained would silently score its initial weights."""
    from spt.harness.method import TrainableMethod, method_class

    if (
        getattr(args, "trained", None) is not None
        or args.untrained
        or method_params.get("official_checkpoint")
    ):
        return  # weights given, the initial ones asked for, or SPT's official checkpoint
    cls = method_class(args.method)
    if not issubclass(cls, TrainableMethod):
        return  # not trainable (zero_shot): nothing to load
    raise SuiteError(
        f"--method {args.method} is trainable: pass --trained <path to trained.pt> (written by "
        f"`spt train`, by default work/train/{args.method}/{backbone}/trained.pt), or "
        "--untrained to score its initial weights"
    )


def build_config(args: argparse.Namespace):
    """The :class:`~spt.harness.evaluate.EvaluationConfig` and the checked params of a parsed
    command line (this command's options, or any command's that declares the same ones)."""
    from spt.harness.evaluate import EvaluationConfig
    from spt.harness.method import method_params
    from spt.sam import get_spec, resolve_device

    overrides = {f"evaluate.{key}": key for key in _EVALUATE_OPTIONS}
    overrides |= compute_overrides("evaluate")
    params = command_params(args, {**PIPELINE_OVERRIDES, **overrides})
    backbone, checkpoint, roots = pipeline_options(params)
    get_spec(backbone)
    device = resolve_device(args.device)
    limit = getattr(args, "limit", None)
    if limit is not None and limit < 1:
        raise SuiteError(f"--limit {limit}: give a positive number of images")
    if args.chunk_size < 1:
        raise SuiteError(f"--chunk-size {args.chunk_size}: give a positive number of images")
    if getattr(args, "analysis", None) is not None:
        if hasattr(args, "prompt_modes"):
            raise SuiteError("--analysis names the prompt modes: drop --prompt-modes")
        modes = getattr(params.analyses, args.analysis).prompt_modes
        params = override(params, "evaluate.prompt_modes", list(modes), "--analysis")
    settings = params.evaluate
    if hasattr(args, "datasets"):
        datasets, where = list(settings.datasets), "--datasets"
    elif settings.datasets is not None:
        datasets, where = list(settings.datasets), f"{args.params}: evaluate.datasets"
    else:
        datasets = pipeline_datasets(params, roots)
        if not datasets:
            raise SuiteError(
                "no datasets: pass --datasets NAME [NAME ...] or set evaluate.datasets or "
                f"pipeline.datasets in {args.params}"
            )
        where = f"{args.params}: pipeline.datasets"
    distinct_names(datasets, where)
    own_params = method_params(params, args.method)
    _check_trained(args, own_params, backbone)
    config = EvaluationConfig(
        method=args.method,
        backbone=backbone,
        datasets=tuple(datasets),
        checkpoint=checkpoint,
        trained=getattr(args, "trained", None),
        prompt_modes=settings.prompt_modes,
        seed=settings.seed,
        limit=limit,
        device=str(device),
        prepared_roots=tuple(roots),
        out_root=args.out,
        method_params=own_params,
        resize=settings.resize,
        instances=settings.instances,
        mask_prompt_logit=settings.mask_prompt_logit,
        chunk_size=args.chunk_size,
        precision=settings.precision,
        attention=settings.attention,
    )
    return config, params


def run(args: argparse.Namespace) -> int:
    from spt.harness.evaluate import evaluate
    from spt.harness.records import read_records
    from spt.harness.shards import current_shard
    from spt.harness.summary import headline_line

    config, params = build_config(args)
    settings = params.evaluate
    if settings.processes > 1 and "WORLD_SIZE" not in os.environ:
        return relaunch(args.argv, settings.processes)
    records = evaluate(config, progress=not args.no_progress)
    if current_shard().is_main:
        print(headline_line(read_records(records)))
        print(f"records: {records}")
        print(f"summary: {records.parent / 'summary.md'}")
    return 0


def relaunch(argv: list[str], processes: int) -> int:
    """This evaluation again, as ``processes`` torchrun workers on this machine."""
    rest, skip = [], False
    for item in argv:  # drop --processes N: each worker is one of the N
        if skip:
            skip = False
        elif item == "--processes":
            skip = True
        elif not item.startswith("--processes="):
            rest.append(item)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    launcher += [f"--nproc_per_node={processes}", "-m", "spt.cli", *rest]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    return subprocess.run(launcher, env=env).returncode
