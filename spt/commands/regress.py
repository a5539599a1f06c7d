"""``spt regress``: compare evaluation metrics with the committed reference (CI's check).

Bit-for-bit within a tolerance when the numerics match the reference's, else within its seed
spread (see :mod:`spt.reports.regression`)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from spt.errors import SuiteError

NAME = "regress"
DEFAULT_REFERENCE = "reports/reference/embedded_metrics.json"
RECORDS_FILE = "records.parquet"
#: Where the pipeline (dvc.yaml) writes the records the reference is made from: the main
#: evaluation, then the robustness, label-efficiency and transfer evaluations.
PIPELINE_RECORDS = ("work/eval", "work/robust", "work/label_efficiency_eval", "work/transfer_eval")


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from spt.reports.regression import DEFAULT_TOLERANCE, REFERENCE_SEEDS_COMMAND, SPREAD_K

    tolerance = ", ".join(f"{m} {t:g}" for m, t in DEFAULT_TOLERANCE.items())
    parser = sub.add_parser(
        NAME,
        help="fail when metrics move beyond the committed reference (tolerance or seed spread)",
        description=(
            "Summarise evaluation records (mean IoU and boundary IoU and the number of scorable\n"
            "records per method, backbone, prompt mode, stage and dataset, per seed, plus the\n"
            "unweighted mean over datasets) and compare them with a committed reference file.\n"
            "Inputs: --records, parquet files written by `spt evaluate` or folders searched\n"
            f"recursively for {RECORDS_FILE}; --reference, the JSON reference. The numerics the\n"
            "records were computed with are read from their files (all must agree).\n"
            "Record sets: records in a sub-folder of their own below a folder argument (the\n"
            "analyses' evaluations: work/robust/seed0/spt/tiny/images/jpeg-3) keep rows of their\n"
            "own, their prompt mode prefixed with the folder name and the sub-folder\n"
            "(robust/images/jpeg-3/box); the others are the main evaluation. Reference rows of a\n"
            "record set not among --records are not expected and are counted on a last line;\n"
            "`nox -s regress` passes work/eval and the three analysis folders.\n"
            "Mode: with the reference's numerics (bit-identical: same fingerprint, see `spt\n"
            "numerics`) each row is compared with the reference's values for the same seeds\n"
            "within the absolute tolerance; with other or unknown numerics (another CPU in\n"
            "native mode, no FMA, other library builds) a first line says so and each row's\n"
            "mean is compared with the reference's mean over its seeds within\n"
            "max(tolerance, k x the seed-to-seed sd pooled over the dataset's rows), k the\n"
            f"Bonferroni bound for the number of values compared (at least {SPREAD_K}; 8.0 for\n"
            "the embedded default's 3288), which needs a reference of at least 2 seeds. n is\n"
            "compared exactly in both modes.\n"
            "Output: the rows that differ (metric beyond the allowed difference in either\n"
            "direction, n changed, row missing or new) with both values, then a summary line\n"
            "naming the mode.\n"
            "Exit status: 0 when everything matches, 1 on any difference, 2 on bad input\n"
            "(e.g. a missing or malformed reference, a seed the reference lacks).\n"
            'The tolerance is stated in the reference file under "tolerance" (written as\n'
            f"{tolerance} when a reference is first created); edit it there.\n"
            "--update rewrites the reference from the records (their seeds, per-seed values and\n"
            "numerics), keeping its tolerance, after printing what changed; make it from 3 seeds\n"
            f"(`{REFERENCE_SEEDS_COMMAND}`, then `spt regress --update`) so other platforms can\n"
            "be checked, and commit it after reviewing the diff."
        ),
    )
    parser.add_argument(
        "--records",
        nargs="+",
        default=None,
        metavar="PATH",
        help=f"records parquet file(s) or folder(s) holding {RECORDS_FILE} files (default: the "
        f"pipeline's {', '.join(PIPELINE_RECORDS)}, those that exist)",
    )
    parser.add_argument("--reference", default=DEFAULT_REFERENCE, help="reference JSON file")
    parser.add_argument(
        "--update", action="store_true", help="rewrite the reference from these records"
    )
    parser.set_defaults(func=run)
    return parser


def records_files(paths: list[str]) -> list[tuple[Path, Path | None]]:
    """``(file, folder)`` for the parquet files named by ``paths``: folders searched
    recursively (``folder`` the one given), files as given (``folder`` None)."""
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
            files += [(file, path) for file in found]
        elif path.is_file():
            files.append((path, None))
        else:
            raise SuiteError(f"{path}: no such records file or folder; check --records")
    return files


def read_all_records(files: list[tuple[Path, Path | None]]) -> tuple[pd.DataFrame, set[str]]:
    """Every records file of ``files`` (:func:`records_files`), and the record sets they make
    up: records in a sub-folder of their own below a folder argument (an analysis's:
    ``prompts``, ``k1``...) have ``<folder name>/<sub-folder>/`` prefixed to their prompt modes
    (their record set is the folder's name); the others are the main evaluation (set "")."""
    from spt.harness.records import read_records
    from spt.reports.regression import labelled, record_set_name, record_set_of, variant_of

    frames = []
    for file, folder in files:
        records = read_records(file)
        if folder is not None:
            variant = variant_of(file.parent.relative_to(folder), records)
            records = labelled(records, record_set_name(folder), variant)
        frames.append(records)
    records = pd.concat(frames, ignore_index=True)
    return records, {record_set_of(mode) for mode in records["prompt_mode"].unique()}


def _update(reference_path: Path, current: dict, numerics: dict, record_sets: set[str]) -> int:
    from spt.reports.regression import (
        MIN_SPREAD_SEEDS,
        REFERENCE_SEEDS_COMMAND,
        check_regression,
        kept_tolerance,
        load_reference,
        record_set_of,
        record_sets_text,
        write_reference,
    )

    kept_tolerance(reference_path)  # a malformed hand-set tolerance stops the update here
    if reference_path.is_file():
        try:
            previous = load_reference(reference_path)
        except SuiteError as exc:
            print(f"previous reference unusable ({exc}); rewriting it, keeping its tolerance")
        else:
            try:
                result = check_regression(current, previous, numerics, record_sets)
                dropped = {
                    record_set_of(row["prompt_mode"]) for row in previous["metrics"]
                } - record_sets
            except SuiteError as exc:
                print(f"not compared with the previous reference: {exc}")
            else:
                changes = result.diff_table() or "no metric changed beyond the allowed difference"
                print("\n".join(part for part in (result.note, changes) if part))
                if dropped:
                    print(
                        f"dropped from the reference: the rows of {record_sets_text(dropped)} "
                        "(not among --records)"
                    )
    write_reference(reference_path, current, numerics=numerics)  # keeps the file's tolerance
    seeds = current["seeds"]
    print(
        f"updated {reference_path}: {len(current['metrics'])} rows, seed(s) "
        f"{', '.join(map(str, seeds))}; review and commit it"
    )
    if len(seeds) < MIN_SPREAD_SEEDS:
        print(
            f"note: with {len(seeds)} seed this reference can be checked only with the same "
            f"numerics; for other platforms make it from 3 seeds (`{REFERENCE_SEEDS_COMMAND}`)"
        )
    return 0


def pipeline_records() -> list[str]:
    """The pipeline's records folders that exist here (:data:`PIPELINE_RECORDS`)."""
    found = [name for name in PIPELINE_RECORDS if Path(name).is_dir()]
    if not found:
        raise SuiteError(
            f"no records: none of {', '.join(PIPELINE_RECORDS)} exists here; run `dvc repro` "
            "(or `spt evaluate`) first, or pass --records PATH"
        )
    return found


def run(args: argparse.Namespace) -> int:
    from spt.harness.records import read_numerics
    from spt.reports.regression import (
        check_regression,
        common_numerics,
        load_reference,
        summarise_for_reference,
    )

    files = records_files(pipeline_records() if args.records is None else args.records)
    records, record_sets = read_all_records(files)
    current = summarise_for_reference(records)
    per_file = [(path, read_numerics(path)) for path, _ in files]
    reference_path = Path(args.reference)
    if args.update:
        numerics = common_numerics(per_file, for_update=True)
        return _update(reference_path, current, numerics, record_sets)
    numerics = common_numerics(per_file)
    result = check_regression(current, load_reference(reference_path), numerics, record_sets)
    print(result.report())
    return 0 if result.passed else 1
