"""Subcommands of ``spt``: one module each, discovered by :func:`spt.cli.build_parser`."""
