"""``spt numerics``: the CPU numerics this process runs with (mode, kernels, versions, threads)."""

from __future__ import annotations

import argparse
import json
import sys

NAME = "numerics"


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = sub.add_parser(
        NAME,
        help="show the numerics mode, kernels and library versions in use",
        description=(
            "Show what decides this machine's numbers: the numerics mode ($SPT_NUMERICS:\n"
            "portable, the default, pins every library to its baseline x86-64 kernels so\n"
            "any x86-64 CPU gives the same bits; native takes each CPU's fastest kernels),\n"
            "the CPU, the ATen capability and NumPy dispatch in use, threads ($SPT_THREADS,\n"
            "1 in portable mode) and the torch / NumPy / MKL / oneDNN / libc versions.\n"
            "Every log, checkpoint, records file and report of the suite records the same.\n"
            "Exit status 1 when portable mode was asked for but does not hold in this process."
        ),
    )
    parser.add_argument("--json", action="store_true", help="one JSON object on one line")
    parser.add_argument("--device", default="cpu", help="device to describe (cpu, cuda:N)")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from spt import numerics

    info = numerics.describe(args.device)
    if args.json:
        # one write of the whole line: print() writes the newline separately, so the lines of
        # torchrun workers sharing one stdout could run together
        sys.stdout.write(json.dumps(info, sort_keys=True) + "\n")
        sys.stdout.flush()
    else:
        width = max(map(len, info))
        for key, value in info.items():
            print(f"{key:<{width}}  {value}")
        print(numerics.summary_line(info))
    asked = numerics.check_mode()
    return 1 if asked == numerics.PORTABLE and info["mode"] != numerics.PORTABLE else 0
