"""``spt report``: the paper's tables, significance tests and figures from the evaluations."""

from __future__ import annotations

import argparse
from pathlib import Path

from spt.config import ReportSection
from spt.params import add_params_option, command_params

NAME = "report"
DEFAULTS = ReportSection()
#: Options that override report.<same name>.
_REPORT_OPTIONS = ("reference_method", "seed", "n_boot", "figure_n_boot", "examples")


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = sub.add_parser(
        NAME,
        help="write the metric tables, significance tests, figures and their index",
        description=(
            "Build the report from every evaluation below --eval-root.\n"
            "Inputs: <eval-root>/<method>/<backbone>/records.parquet and examples.npz from\n"
            "`spt evaluate`; <train-root>/<method>/<backbone>/trained.pt from `spt train` for\n"
            "trainable parameter counts (zero_shot counts 0; a method without one is left\n"
            "blank); <prepared-root>/<dataset>/manifest.csv for the overlay images and masks.\n"
            "Outputs under --out:\n"
            "  tables/metrics_<backbone>_<mode>.{md,tex,csv}  IoU and boundary IoU per method\n"
            "      and dataset plus their unweighted mean, parameters, dropped records;\n"
            "  significance.{md,json}  the reference method (final stage) against every other\n"
            "      method per backbone, prompt mode and dataset: paired Wilcoxon test, Holm\n"
            "      correction over all comparisons, bootstrap CI, effect sizes, verdict; the\n"
            "      reference's other stages (SPT's draft) are compared as '<ref> (<stage>)';\n"
            "  seed_spread.csv  spread over seeds of each dataset mean (several seeds only);\n"
            "  figures/bars_<backbone>_<mode>.png  IoU bars with bootstrap CIs, every mode;\n"
            "  figures/overlay_<backbone>_<dataset>.png  image, ground truth and every method's\n"
            "      box-prompt mask for up to --examples images all methods kept (skipped with a\n"
            "      note when there are none);\n"
            "  README.md  an index of those files and the headline table: the unweighted mean\n"
            "      IoU over datasets of each method under box prompts.\n"
            "Text outputs are byte-identical for the same inputs and settings. Other files in\n"
            "--out are left alone.\n"
            "Defaults come from params.yaml report.* (reference_method, seed, n_boot,\n"
            "figure_n_boot, examples); options given here override them."
        ),
    )
    parser.add_argument("--eval-root", default="work/eval", help="`spt evaluate` output root")
    parser.add_argument("--train-root", default="work/train", help="`spt train` output root")
    parser.add_argument(
        "--prepared-root",
        nargs="+",
        default=argparse.SUPPRESS,
        help="folders holding <dataset>/manifest.csv, searched in order (default: params "
        "pipeline.prepared_roots, else work/prepared)",
    )
    parser.add_argument("--out", default="reports", help="report folder")
    parser.add_argument(
        "--reference-method",
        default=argparse.SUPPRESS,
        help="method compared against every other one (default: params "
        f"report.reference_method, else {DEFAULTS.reference_method})",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=argparse.SUPPRESS,
        help=f"bootstrap seed (default: params report.seed, else {DEFAULTS.seed})",
    )
    parser.add_argument(
        "--n-boot",
        type=int,
        default=argparse.SUPPRESS,
        help="bootstrap resamples of the significance CIs (default: params report.n_boot, "
        f"else {DEFAULTS.n_boot})",
    )
    parser.add_argument(
        "--figure-n-boot",
        type=int,
        default=argparse.SUPPRESS,
        help="bootstrap resamples of the bar-chart CIs (default: params "
        f"report.figure_n_boot, else {DEFAULTS.figure_n_boot})",
    )
    parser.add_argument(
        "--examples",
        type=int,
        default=argparse.SUPPRESS,
        help="overlay images per dataset, at most those kept by `spt evaluate` (default: "
        f"params report.examples, else {DEFAULTS.examples})",
    )
    add_params_option(parser)
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from spt.reports.pipeline_report import ReportConfig, build_report

    overrides = {f"report.{key}": key for key in _REPORT_OPTIONS}
    params = command_params(args, {**overrides, "pipeline.prepared_roots": "prepared_root"})
    settings = params.report
    config = ReportConfig(
        eval_root=Path(args.eval_root),
        train_root=Path(args.train_root),
        prepared_roots=tuple(Path(p) for p in params.pipeline.prepared_roots),
        out=Path(args.out),
        reference=settings.reference_method,
        seed=settings.seed,
        n_boot=settings.n_boot,
        figure_n_boot=settings.figure_n_boot,
        examples=settings.examples,
    )
    produced = build_report(config)
    print(f"wrote {len(produced)} files; start at {config.out / 'README.md'}")
    return 0
