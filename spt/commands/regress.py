"""``spt regress``: compare evaluation metrics with the committed reference (CI's regression check)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from spt.errors import SuiteError

NAME = "regress"
DEFAULT_REFERENCE = "reports/reference/embedded_metrics.json"
RECORDS_FILE = "records.parquet"


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from spt.reports.regression import DEFAULT_TOLERANCE

    tolerance = ", ".join(f"{m} {t:g}" for m, t in DEFAULT_TOLERANCE.items())
    parser = sub.add_parser(
        NAME,
        help="fail when metrics move beyond the committed reference's tolerance",
        description=(
            "Summarise evaluation records (mean IoU and boundary IoU and the number of scorable\n"
            "records per method, backbone, prompt mode, stage and dataset, plus the unweighted\n"
            "mean over datasets) and compare them with a committed reference file.\n"
            "Inputs: --records, parquet files written by `spt evaluate` or folders searched\n"
            f"recursively for {RECORDS_FILE}; --reference, the JSON reference.\n"
            "Output: the rows that differ (metric beyond its absolute tolerance in either\n"
            "direction, n changed, row missing or new) with both values, then a summary line.\n"
            "Exit status: 0 when everything matches, 1 on any difference, 2 on bad input\n"
            "(e.g. a missing or malformed reference).\n"
            'The tolerance is stated in the reference file under "tolerance" (written as\n'
            f"{tolerance} when a reference is first created); edit it there.\n"
            "--update rewrites the reference from the records, keeping its tolerance, after\n"
            "printing what changed; commit the file after reviewing the diff."
        ),
    )
    parser.add_argument(
        "--records",
        nargs="+",
        required=True,
        metavar="PATH",
        help=f"records parquet file(s) or folder(s) holding {RECORDS_FILE} files",
    )
    parser.add_argument("--reference", default=DEFAULT_REFERENCE, help="reference JSON file")
    parser.add_argument(
        "--update", action="store_true", help="rewrite the reference from these records"
    )
    parser.set_defaults(func=run)
    return parser


def records_files(paths: list[str]) -> list[Path]:
    """The parquet files named by ``paths``: files as given, folders searched recursively."""
    files = []
    for name in paths:
        path = Path(name)
        if path.is_dir():
            found = sorted(path.rglob(RECORDS_FILE))
            if not found:
                raise SuiteError(
                    f"{path}: no {RECORDS_FILE} below this folder; run `spt evaluate` first "
                    "or pass the records file itself"
                )
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise SuiteError(f"{path}: no such records file or folder; check --records")
    return files


def read_all_records(paths: list[str]) -> pd.DataFrame:
    from spt.harness.records import read_records

    frames = [read_records(path) for path in records_files(paths)]
    return pd.concat(frames, ignore_index=True)


def _update(reference_path: Path, current: dict) -> int:
    from spt.reports.regression import (
        check_regression,
        kept_tolerance,
        load_reference,
        write_reference,
    )

    kept_tolerance(reference_path)  # a malformed hand-set tolerance stops the update here
    if reference_path.is_file():
        try:
            previous = load_reference(reference_path)
        except SuiteError as exc:
            print(f"previous reference unusable ({exc}); rewriting it, keeping its tolerance")
        else:
            result = check_regression(current, previous)
            print(result.diff_table() or "no metric changed beyond the tolerance")
    write_reference(reference_path, current)  # keeps the file's own tolerance
    print(f"updated {reference_path}: {len(current['metrics'])} rows; review and commit it")
    return 0


def run(args: argparse.Namespace) -> int:
    from spt.reports.regression import check_regression, load_reference, summarise_for_reference

    current = summarise_for_reference(read_all_records(args.records))
    reference_path = Path(args.reference)
    if args.update:
        return _update(reference_path, current)
    result = check_regression(current, load_reference(reference_path))
    print(result.report())
    return 0 if result.passed else 1
