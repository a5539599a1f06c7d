"""``spt metrics``: the DVC metrics and plots files of one backbone's evaluations."""

from __future__ import annotations

import argparse
from pathlib import Path

from spt.errors import SuiteError
from spt.params import add_params_option, command_params

NAME = "metrics"


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = sub.add_parser(
        NAME,
        help="write the DVC metrics and plots files (dvc exp show, dvc metrics diff, dvc plots)",
        description=(
            "Summarise every evaluation of one backbone below --eval-root into the files DVC\n"
            "reads (dvc.yaml declares them under metrics: and plots:):\n"
            "  <out>/headline.json  the unweighted mean over datasets of IoU and boundary IoU,\n"
            "      one key per <prompt mode>.<method>.<stage>.<metric> (box.spt.final.iou,\n"
            "      box.lora.final.biou), plus n_seeds and n_datasets: the columns of\n"
            "      `dvc exp show` and the rows of `dvc metrics diff`;\n"
            "  <out>/datasets.json  the per-dataset means, one key per\n"
            "      <prompt mode>.<dataset>.<method>.<stage>.<metric>;\n"
            "  <out>/plots/train_loss.csv  training loss per epoch of every trained method and\n"
            "      seed, from <train-root>/[seed<N>/]<method>/<backbone>/train_log.csv;\n"
            "  <out>/plots/datasets_box.csv  per-dataset and mean IoU per method, box prompts;\n"
            "  <out>/plots/seed_spread.csv  box-prompt mean IoU over datasets per method and seed.\n"
            "The numbers are those of `spt report`'s tables (mean over the images where every\n"
            "metric is finite; over several seeds the mean of the per-seed means), rounded to\n"
            "6 decimals; the files are byte-identical for the same records. A method scored on\n"
            "fewer datasets than the others has no headline key. Plots list the methods in the\n"
            "report's order (zero-shot, the baselines, params report.reference_method)."
        ),
    )
    parser.add_argument("--eval-root", default="work/eval", help="`spt evaluate` output root")
    parser.add_argument("--train-root", default="work/train", help="`spt train` output root")
    parser.add_argument(
        "--backbone",
        default=argparse.SUPPRESS,
        help="the backbone whose records are summarised (default: params pipeline.backbone)",
    )
    parser.add_argument("--out", type=Path, default=Path("metrics"), help="output folder")
    add_params_option(
        parser, "params file to read pipeline.backbone and report.reference_method from"
    )
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from spt.reports.dvc_metrics import write_dvc_metrics
    from spt.reports.pipeline_report import label_order, load_records

    params = command_params(args, {"pipeline.backbone": "backbone"})
    reference = params.report.reference_method
    backbone = params.pipeline.backbone
    records = load_records(Path(args.eval_root))
    mine = records[records["backbone"].astype(str) == backbone]
    if mine.empty:
        found = ", ".join(sorted(records["backbone"].astype(str).unique()))
        raise SuiteError(
            f"{args.eval_root}: no records of backbone {backbone} (found {found}); pass "
            "--backbone or run `spt evaluate` for it"
        )
    mine = mine.reset_index(drop=True)
    order = label_order(mine, reference)
    write_dvc_metrics(mine, Path(args.train_root), args.out, order)
    return 0
