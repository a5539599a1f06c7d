"""``spt evaluate``: score a method on prepared datasets under every prompt mode."""

from __future__ import annotations

import argparse

from spt.errors import SuiteError
from spt.params import (
    add_pipeline_options,
    load_params,
    pipeline_datasets,
    pipeline_options,
    section,
)

NAME = "evaluate"


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from spt.cli import HelpFormatter
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
            "Defaults come from params.yaml: evaluate.* (prompt_modes, seed, resize, instances,\n"
            "mask_prompt_logit, datasets) and methods.<method>.* (the method's own params);\n"
            "options given here override them. Protocol details: docs/harness.md."
        ),
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--method", default="zero_shot", help="registered method name")
    add_pipeline_options(parser)
    parser.add_argument(
        "--datasets",
        nargs="+",
        default=argparse.SUPPRESS,
        help="dataset names under the prepared roots (default: evaluate.datasets, else "
        "pipeline.datasets plus the prepared ones of pipeline.optional_datasets)",
    )
    parser.add_argument(
        "--prompt-modes",
        nargs="+",
        default=argparse.SUPPRESS,
        help="box, points-K, points-pn, coarse, coarse-box (default: params "
        f"evaluate.prompt_modes, else {' '.join(DEFAULT_PROMPT_MODES)})",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=argparse.SUPPRESS,
        help="prompt seed (default: params evaluate.seed, else 0)",
    )
    parser.add_argument(
        "--limit",
        type=int,
        default=argparse.SUPPRESS,
        help="first N images per dataset, in image-id order (default: all)",
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    parser.add_argument(
        "--trained",
        default=None,
        help="trained.pt written by `spt train` for this method and backbone (default: none)",
    )
    parser.add_argument("--out", default=str(DEFAULT_OUT_ROOT), help="output root")
    parser.add_argument("--params", default="params.yaml", help="params file")
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
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(func=run)
    return parser


def _pick(args: argparse.Namespace, params: dict, key: str, default):
    """Command-line value, else params.yaml evaluate.<key>, else ``default``."""
    if hasattr(args, key):
        return getattr(args, key)
    return section(params, "evaluate", key, default=default)


def run(args: argparse.Namespace) -> int:
    from spt.harness.evaluate import EvaluationConfig, evaluate
    from spt.harness.prompts import DEFAULT_MASK_PROMPT_LOGIT, DEFAULT_PROMPT_MODES
    from spt.sam import get_spec, resolve_device

    params = load_params(args.params)
    backbone, checkpoint, roots = pipeline_options(args, params)
    get_spec(backbone)
    device = resolve_device(args.device)
    limit = getattr(args, "limit", None)
    if limit is not None and limit < 1:
        raise SuiteError(f"--limit {limit}: give a positive number of images")
    datasets = _pick(args, params, "datasets", None) or pipeline_datasets(params, roots)
    if not datasets:
        raise SuiteError("no datasets: pass --datasets NAME [NAME ...] or set evaluate.datasets")
    method_params = section(params, "methods", args.method, default={}) or {}
    if not isinstance(method_params, dict):
        raise SuiteError(f"{args.params}: methods.{args.method} must be a mapping")
    try:
        config = EvaluationConfig(
            method=args.method,
            backbone=backbone,
            datasets=tuple(str(d) for d in datasets),
            checkpoint=checkpoint,
            trained=args.trained,
            prompt_modes=tuple(_pick(args, params, "prompt_modes", DEFAULT_PROMPT_MODES)),
            seed=int(_pick(args, params, "seed", 0)),
            limit=limit,
            device=str(device),
            prepared_roots=tuple(roots),
            out_root=args.out,
            method_params=method_params,
            resize=str(_pick(args, params, "resize", "square")),
            instances=bool(_pick(args, params, "instances", False)),
            mask_prompt_logit=float(
                section(params, "evaluate", "mask_prompt_logit", default=DEFAULT_MASK_PROMPT_LOGIT)
            ),
        )
    except (TypeError, ValueError) as exc:
        raise SuiteError(f"{args.params}: bad evaluate setting ({exc})") from None
    records = evaluate(config, progress=not args.no_progress)
    print(f"records: {records}")
    print(f"summary: {records.parent / 'summary.md'}")
    return 0
