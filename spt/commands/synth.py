"""``spt synth``: write the synthetic twins of every dataset layout."""

from __future__ import annotations

import argparse
from pathlib import Path

from spt.params import add_params_option, command_params

NAME = "synth"


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = sub.add_parser(
        NAME,
        help="write miniature synthetic copies of every dataset layout",
        description=(
            "Write a synthetic twin of each native layout (mvtec, visa, mpdd, btad, ksdd2, mtd,\n"
            "spt_archive, folder) to <out>/<layout>: textured surfaces with procedural defects\n"
            "(scratches, cracks, blobs, stains, missing pieces), true to each publisher's file\n"
            "names, extensions and mask conventions. The files are a pure function of the seed\n"
            "and sizes: a rerun writes byte-identical files. An earlier twin at the same place\n"
            "is replaced; any other non-empty folder is refused. Prepare them with\n"
            "`spt prepare --synthetic <out>`."
        ),
    )
    parser.add_argument("--out", type=Path, default=Path("work/synthetic"), help="output folder")
    add_params_option(parser, "params file (for data.seed)")
    parser.add_argument(
        "--seed",
        type=int,
        default=argparse.SUPPRESS,
        help="seed (default: data.seed in params.yaml, or 0)",
    )
    parser.add_argument(
        "--layouts",
        nargs="+",
        metavar="LAYOUT",
        default=argparse.SUPPRESS,
        help="only these layouts (default: all)",
    )
    parser.add_argument("--normal-train", type=int, default=3, help="normal train images/category")
    parser.add_argument("--normal-test", type=int, default=2, help="normal test images/category")
    parser.add_argument(
        "--defects-per-type", type=int, default=3, help="defect images per category and type"
    )
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from spt.data.synthetic import TWIN_LAYOUTS, TwinSize, write_twin
    from spt.errors import SuiteError

    seed = command_params(args, {"data.seed": "seed"}).data.seed
    # Checked here so that the message names the flag at fault, before anything is written.
    for flag, value, least in (
        ("--normal-train", args.normal_train, 1),
        ("--normal-test", args.normal_test, 1),
        ("--defects-per-type", args.defects_per_type, 2),
    ):
        if value < least:
            raise SuiteError(
                f"{flag} {value}: give at least {least} (each twin needs normal train and test "
                "images and defect images on both sides of the split)"
            )
    size = TwinSize(args.normal_train, args.normal_test, args.defects_per_type)
    layouts = getattr(args, "layouts", None) or list(TWIN_LAYOUTS)
    unknown = [layout for layout in layouts if layout not in TWIN_LAYOUTS]
    if unknown:
        raise SuiteError(f"--layouts: unknown {unknown}; use some of {', '.join(TWIN_LAYOUTS)}")
    for layout in layouts:
        root = write_twin(layout, args.out / layout, seed, size)
        files = sum(1 for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))
        print(f"{layout}: {files} files in {root}")
    return 0
