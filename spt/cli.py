"""The ``spt`` command line.

Each module in :mod:`spt.commands` contributes one subcommand through two names:
``NAME`` (the subcommand) and ``register(subparsers) -> argparse.ArgumentParser`` whose parser
has ``func`` set as default (``func(args) -> int``). Adding a subcommand touches one new file.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import os
import pkgutil
import sys

from spt import __version__
from spt.errors import SuiteError


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows defaults and keeps the hand-wrapped descriptions as written. On/off flags and
    options without a default get no "(default: ...)": False or None would read as a value."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.nargs == 0 or action.default is None:
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    import spt.commands as commands

    parser = argparse.ArgumentParser(
        prog="spt",
        description=(
            "Reproducibility suite for promptable industrial anomaly segmentation with SAM:\n"
            "SPT (Self-Perception Tuning) and its baselines on one shared harness.\n"
            "Run `spt COMMAND --help` for each command's inputs, outputs and defaults."
        ),
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"spt {__version__}")
    # Every subcommand's parser shows defaults and keeps hand-wrapped descriptions.
    command_parser = functools.partial(argparse.ArgumentParser, formatter_class=HelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=command_parser)
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"spt.commands.{info.name}")
        module.register(sub)
    return parser


def os_error_line(exc: OSError) -> str:
    """One line for a file-system error the commands did not foresee: the path(s), the reason
    and a generic fix."""
    paths = [str(p) for p in (exc.filename, exc.filename2) if p is not None]
    where = f"{' -> '.join(paths)}: " if paths else ""
    reason = " ".join((exc.strerror or str(exc) or type(exc).__name__).split())
    fix = "check the path and its permissions (an output folder must be a folder you can write to)"
    return f"{where}{reason}; {fix}"


def main(argv: list[str] | None = None) -> int:
    from spt.numerics import NumericsError, check_mode

    try:
        check_mode()  # a bad $SPT_NUMERICS / $SPT_THREADS stops every command up front
    except NumericsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # a command may relaunch itself
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except SuiteError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader of stdout went away (`spt ... | head`): not an error
        try:  # and no second BrokenPipeError when Python flushes stdout at exit
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):  # stdout is not a file (captured)
            pass
        return 1
    except OSError as exc:  # an output folder that is a file, read-only, full, ...
        print(f"error: {os_error_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; finished work is kept and a rerun resumes it", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
