"""``spt fetch mtd``: the public MTD dataset into data/mtd in its native layout, checked."""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "fetch"
DATASETS = ("mtd",)  # later public datasets are added here and in spt/data/fetch.py
DEFAULT_DEST = Path("data/mtd")  # the root params.yaml gives data.datasets.mtd


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from spt.data.fetch import PUBLIC_FILES, PUBLIC_SOURCE

    parser = sub.add_parser(
        NAME,
        help="download a public dataset (MTD) into data/ in its native layout, checked",
        description=(
            "Bring a public dataset into its native layout under data/ in one command; only MTD\n"
            "(magnetic tile defects) so far. `spt fetch mtd` makes a shallow git fetch of the\n"
            f"publisher's repository ({PUBLIC_SOURCE})\n"
            "into a staging folder beside the destination (data/.mtd.fetching/) and copies only\n"
            "the dataset files, MT_<class>/Imgs/<stem>.jpg and <stem>.png (no .git, README or\n"
            "pictures), into data/mtd/MT_<class>/Imgs/. Then it checks what arrived: the file\n"
            "count per class and in total, and a content hash (sha256 over the `sha256sum` lines\n"
            "of those files in sorted path order; docs/data.md has the shell equivalent). From\n"
            f"the default source they must equal the pinned public copy ({PUBLIC_FILES} files);"
            " from\n"
            "another --source, --expect-files/--expect-sha256 when given, else the count and\n"
            "hash found are printed and no expected hash is checked. Only when every check\n"
            "passes is the staged folder renamed onto the destination: a failed or interrupted\n"
            "fetch leaves the destination as it was and no staging folder. A destination that\n"
            "already holds the same files is left alone (exit 0; with the default source this\n"
            "is checked before any download, so it works offline); one holding other files is\n"
            "refused unless --force.\n"
            "Offline (no network, a bad URL, no git): one line naming git's reason and how to\n"
            "get the data by hand (download the repository or its zip elsewhere, put its MT_*\n"
            "folders under data/mtd/, or pass the unpacked folder as --source).\n"
            "Output: the source and commit, files per class, total, hash, whether it matches the\n"
            "public copy, the destination and the next step (`nox -s reproduce` or `dvc repro`:\n"
            "the prepare stage then includes real MTD). Exit 0 on success, 2 on any error.\n"
        ),
    )
    parser.add_argument("dataset", choices=DATASETS, help="the dataset to fetch")
    parser.add_argument(
        "--source",
        default=PUBLIC_SOURCE,
        metavar="URL_OR_PATH",
        help="git repository (URL or local path) to fetch from, or a plain local folder such as "
        "an unpacked zip of the repository (copied, not fetched)",
    )
    parser.add_argument(
        "--rev",
        default=argparse.SUPPRESS,
        metavar="REV",
        help="branch, tag or full commit id to fetch (default: the repository's HEAD)",
    )
    parser.add_argument(
        "--dest",
        type=Path,
        default=DEFAULT_DEST,
        metavar="DIR",
        help="destination folder, the dataset root (params.yaml reads MTD from data/mtd)",
    )
    parser.add_argument(
        "--expect-sha256",
        default=argparse.SUPPRESS,
        metavar="HEX",
        help="the content hash the files must have; given (or with --expect-files), it replaces "
        "the pinned public values (default: pinned for the default source, else none)",
    )
    parser.add_argument(
        "--expect-files",
        type=int,
        default=argparse.SUPPRESS,
        metavar="N",
        help="the number of dataset files (jpg + png) that must arrive (default: pinned for the "
        "default source, else none)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace a destination that holds other files (after the checks pass)",
    )
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from spt.data.fetch import PUBLIC_NAME, SHOWN_LEFT_OUT, fetch_mtd

    result = fetch_mtd(
        source=args.source,
        dest=args.dest,
        rev=getattr(args, "rev", None),
        expect_sha256=getattr(args, "expect_sha256", None),
        expect_files=getattr(args, "expect_files", None),
        force=args.force,
    )
    tally, dest = result.tally, result.dest.as_posix()
    if result.status == "already there":
        others = f" (and {result.dest_others} other files, left as they are)"
        print(f"{dest}: already there: the same {tally.total} MTD files as {result.matched}")
        print(f"  sha256 {tally.sha256}{others if result.dest_others else ''}; nothing fetched")
        return 0
    at = f" at commit {result.commit}" if result.commit else " (a plain folder, copied)"
    print(f"fetched MTD from {result.source}{at}")
    for name, (jpg, png) in tally.classes.items():
        print(f"  {name}: {jpg} jpg images, {png} png masks")
    left_out = ""
    if result.left_out:
        shown = ", ".join(result.left_out[:SHOWN_LEFT_OUT])
        shown += ", ..." if len(result.left_out) > SHOWN_LEFT_OUT else ""
        left_out = f"; {len(result.left_out)} other files of the source not copied ({shown})"
    print(f"total: {tally.total} files{left_out}")
    expected = result.expected
    if result.public:
        checked = f"matches {PUBLIC_NAME}"
    elif expected.sha256 is not None:
        checked = "matches --expect-sha256"
    else:
        checked = f"no expected hash was checked; not {PUBLIC_NAME}"
        if expected.files is not None:
            checked = f"file count matches --expect-files; {checked}"
    print(f"sha256: {tally.sha256} ({checked})")
    print(f"wrote {dest}")
    print(
        "next: run `nox -s reproduce` (or `dvc repro`): the prepare stage now includes real MTD; "
        "`dvc commit data.dvc` records the data folder in DVC"
    )
    return 0
