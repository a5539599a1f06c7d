"""``spt analysis``: the report of one analysis beyond the anchors (docs/analyses.md)."""

from __future__ import annotations

import argparse
from pathlib import Path

from spt.params import add_params_option, command_params

NAME = "analysis"
ANALYSES = ("robustness", "label_efficiency", "transfer")


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = sub.add_parser(
        NAME,
        help="tables, figure, paired tests and reading of one analysis (robustness, ...)",
        description=(
            "Write one analysis's section (docs/analyses.md) from its evaluations:\n"
            "  robustness        <records-root>/[seed<N>/]<method>/<backbone>/{prompts,images/*}\n"
            "                    (`spt robustness`): mean IoU per prompt-perturbation level and\n"
            "                    per corruption severity, the change from clean, paired tests;\n"
            "  label_efficiency  <records-root>/seed<N>/k<K>/<method>/<backbone> (`spt\n"
            "                    evaluate` of `spt train --images-per-category K`) and the main\n"
            "                    evaluations (<eval-root>, k = all): IoU against k;\n"
            "  transfer          <records-root>/seed<N>/without_<dataset>/<method>/<backbone>\n"
            "                    (`spt train --hold-out`) against the main evaluations on the\n"
            "                    held-out dataset: in-domain vs held-out IoU.\n"
            "Outputs in --out: <analysis>.md (figure, reading, tables, tests), <analysis>*.csv,\n"
            "<analysis>*.png. Knobs: params analyses.<analysis>.*, report.reference_method,\n"
            "report.seed, report.figure_n_boot (intervals and tests' bootstrap resamples)."
        ),
    )
    parser.add_argument("analysis", choices=ANALYSES, help="which analysis")
    parser.add_argument(
        "--records-root",
        default=None,
        help="the analysis's evaluations (default: work/robust, work/label_efficiency_eval or "
        "work/transfer_eval)",
    )
    parser.add_argument("--eval-root", default="work/eval", help="the main evaluations")
    parser.add_argument(
        "--train-root", default="work/train", help="the main training runs (training image counts)"
    )
    parser.add_argument(
        "--subset-train-root",
        default="work/label_efficiency",
        help="the label-efficiency training runs (training image counts)",
    )
    parser.add_argument(
        "--out", default=None, help="output folder (default reports/analyses/<backbone>/<analysis>)"
    )
    parser.add_argument(
        "--metrics",
        default=None,
        help="also write the analysis's DVC metrics (flat JSON) to this file (the pipeline: "
        "metrics/analyses/<analysis>.json)",
    )
    parser.add_argument("--backbone", default=argparse.SUPPRESS, help="default: pipeline.backbone")
    add_params_option(parser)
    parser.set_defaults(func=run)
    return parser


DEFAULT_ROOTS = {
    "robustness": "work/robust",
    "label_efficiency": "work/label_efficiency_eval",
    "transfer": "work/transfer_eval",
}


def run(args: argparse.Namespace) -> int:
    from spt.reports.analyses import (
        StatsSettings,
        label_efficiency_report,
        robustness_report,
        transfer_report,
    )

    params = command_params(args, {"pipeline.backbone": "backbone"})
    backbone = params.pipeline.backbone
    root = Path(args.records_root or DEFAULT_ROOTS[args.analysis])
    out = Path(args.out or f"reports/analyses/{backbone}/{args.analysis}")
    settings = StatsSettings(
        reference=params.report.reference_method,
        seed=params.report.seed,
        n_boot=params.report.figure_n_boot,
    )
    section = getattr(params.analyses, args.analysis)
    metrics = Path(args.metrics) if args.metrics else None
    if args.analysis == "robustness":
        produced = robustness_report(root, section, backbone, settings, out, metrics)
    elif args.analysis == "label_efficiency":
        produced = label_efficiency_report(
            root, Path(args.eval_root), (Path(args.train_root), Path(args.subset_train_root)),
            section, backbone, settings, out, metrics,
        )  # fmt: skip
    else:
        produced = transfer_report(
            root, Path(args.eval_root), section, backbone, settings, out, metrics
        )
    for path in produced:
        print(f"wrote {path}")
    return 0
