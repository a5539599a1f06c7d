"""``spt prepare``: raw datasets in their native layouts -> manifests, masks and a report."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from spt.data.issues import Issue
from spt.params import add_params_option, command_params

NAME = "prepare"
PRINTED_ISSUES = 20  # per dataset; the saved reports hold every entry


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = sub.add_parser(
        NAME,
        help="read raw datasets, write manifests, normalised masks and a prepare report",
        description=(
            "Read every dataset configured under data.datasets in params.yaml (MVTec AD, VisA,\n"
            "MPDD, BTAD, KSDD2, MTD, the SPT archive or a folder of images + masks) from its\n"
            "native layout under data/ (the DVC-tracked raw-data folder) and write, per dataset,\n"
            "<out>/<dataset>/manifest.csv (one row per usable image: id, category, defect type,\n"
            "label, split, sizes, sha256 of image and mask), masks/ (one channel, uint8 0/255)\n"
            "and report.json, plus <out>/prepare_report.{md,json} for the whole run.\n"
            "Defect images are split by the suite's seeded, stratified protocol\n"
            "(data.seed, data.train_fraction; see docs/data.md) unless the publisher's split\n"
            "already holds defect images on both sides (KSDD2). Datasets whose root is missing\n"
            "are named and skipped. Bad files (corrupt, truncated, missing or empty masks, size\n"
            "mismatches, duplicate ids) are listed in the report, never dropped silently.\n"
            "Exit status 1 when a present dataset could not be prepared at all, else 0.\n"
            "--synthetic prepares miniature synthetic twins (written by `spt synth`) instead."
        ),
    )
    add_params_option(parser, "params file to read data.* from")
    parser.add_argument(
        "--datasets",
        nargs="+",
        metavar="NAME",
        default=argparse.SUPPRESS,
        help="prepare only these configured datasets (default: all in data.datasets)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=argparse.SUPPRESS,
        help="output folder (default: data.prepared_root, work/prepared)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=argparse.SUPPRESS,
        help="processes for decoding and hashing; 0 = one per CPU core (default: data.workers)",
    )
    parser.add_argument(
        "--synthetic",
        type=Path,
        metavar="DIR",
        default=argparse.SUPPRESS,
        help="write synthetic twins of every layout to DIR (seeded by data.seed) and prepare "
        "those instead of the configured roots",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from spt.artifacts import folder_lock, write_text_atomically
    from spt.data.config import parse_data_config
    from spt.data.prepare import check_plan, prepare_all
    from spt.data.report import to_json, to_markdown
    from spt.errors import SuiteError

    # Options left out are absent (SUPPRESS) so --help shows where their defaults come from.
    chosen = {
        name: getattr(args, name, None) for name in ("datasets", "out", "workers", "synthetic")
    }
    params = command_params(args)
    config = parse_data_config(params.data, args.params)
    if chosen["workers"] is not None and chosen["workers"] < 0:
        raise SuiteError("--workers must be >= 0 (0 = one per CPU core)")
    if chosen["synthetic"] is not None:
        from spt.data.synthetic import TwinSize, synthetic_data_config, write_all_twins

        sizes = params.data.synthetic
        size = TwinSize(sizes.normal_train, sizes.normal_test, sizes.defects_per_type)
        write_all_twins(chosen["synthetic"], seed=config.seed, size=size)
        config = synthetic_data_config(config, chosen["synthetic"])
    if not config.datasets:  # zero datasets "prepared" would look like success
        found = "" if Path(args.params).is_file() else " (no such file: run from the suite's root)"
        raise SuiteError(
            f"{args.params}{found}: no dataset configured under data.datasets; add one "
            "(docs/data.md), pass --params FILE, or --synthetic DIR for the twins"
        )
    out_root = Path(chosen["out"] or config.prepared_root)
    check_plan(config, chosen["datasets"], out_root)  # before the lock creates the folder
    with folder_lock(out_root, "prepare"):  # a second prepare into one folder: one line
        reports = prepare_all(
            config, chosen["datasets"], out_root, chosen["workers"], not args.no_progress
        )
        # A subset rerun keeps the other datasets' last results in the combined report.
        combined = reports
        if chosen["datasets"] is not None:
            combined = _with_saved_reports(reports, out_root, sorted(config.datasets))
        write_text_atomically(out_root / "prepare_report.json", to_json(combined))
        markdown = to_markdown(combined, config.seed, config.train_fraction)
        write_text_atomically(out_root / "prepare_report.md", markdown)
    _print_summary(reports, out_root)
    return 1 if any(r.status == "failed" for r in reports) else 0


def _with_saved_reports(reports: list, out_root: Path, configured: list[str]) -> list:
    """``reports`` plus, for every other configured dataset, its saved ``report.json`` from an
    earlier run into ``out_root`` (none saved, or unreadable: left out, with a note)."""
    import json

    from spt.data.report import DatasetReport

    fresh = {report.name for report in reports}
    combined = list(reports)
    for name in configured:
        if name in fresh:
            continue
        path = out_root / name / "report.json"
        if not path.is_file():
            continue
        try:
            (entry,) = json.loads(path.read_text())["datasets"]
            combined.append(DatasetReport.from_dict(entry))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            print(
                f"{path.as_posix()}: unreadable ({type(exc).__name__}); {name} is left out of "
                "the combined report; rerun `spt prepare` without --datasets",
                file=sys.stderr,
            )
    return sorted(combined, key=lambda report: report.name)


def _print_summary(reports: list, out_root: Path) -> None:
    for report in reports:
        t = report.totals()
        if report.status == "missing":
            print(f"{report.name}: missing - {report.error}")
            continue
        if report.status == "failed":
            print(f"{report.name}: FAILED - {report.error}", file=sys.stderr)
        else:
            print(
                f"{report.name}: {t.get('in_manifest_defect', 0)} defect images "
                f"(train {t.get('train_defect', 0)} / test {t.get('test_defect', 0)}), "
                f"{t.get('in_manifest_normal', 0)} normal; {report.seconds:.1f} s"
            )
            for category, types in sorted(report.counts.items()):
                cells = ", ".join(
                    f"{d} {c['in_manifest']}/{c['found']}" for d, c in sorted(types.items())
                )
                print(f"  {category}: {cells} (in manifest / found)")
        issues = report.as_dict()["issues"]
        for issue in issues[:PRINTED_ISSUES]:
            print(f"  {Issue(**issue).line()}")
        if len(issues) > PRINTED_ISSUES:
            print(
                f"  ... {len(issues) - PRINTED_ISSUES} more in "
                f"{(out_root / report.name / 'report.json').as_posix()}"
            )
    present = [r for r in reports if r.status != "missing"]
    missing = [r.name for r in reports if r.status == "missing"]
    print(f"prepared {sum(r.status == 'prepared' for r in present)} dataset(s) into {out_root}")
    if missing:
        print(f"missing (not prepared): {', '.join(missing)}")
