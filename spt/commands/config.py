"""``spt config``: the checked settings of a params file, or the settings reference."""

from __future__ import annotations

import argparse

from spt.params import add_params_option, command_params

NAME = "config"


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = sub.add_parser(
        NAME,
        help="check a params file and print its settings, or the settings reference",
        description=(
            "Check --params against the schema every command uses (unknown keys, keys given\n"
            "twice, values of the wrong type or range are one-line errors naming the key) and\n"
            "print the settings it gives, defaults filled in, as YAML. Method params are\n"
            "checked by their method's config class.\n"
            "--reference prints the reference of every setting and method param as Markdown\n"
            "(docs/configuration.md is this output)."
        ),
    )
    add_params_option(parser)
    parser.add_argument(
        "--reference", action="store_true", help="print the settings reference (Markdown)"
    )
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    import yaml

    from spt.artifacts import plain
    from spt.config.reference import reference_markdown
    from spt.config.schema import build
    from spt.data.config import parse_data_config
    from spt.harness.method import available_methods, method_class, method_params

    if args.reference:
        classes = {name: method_class(name).config_class for name in available_methods()}
        print(reference_markdown(classes), end="")
        return 0
    config = command_params(args)
    parse_data_config(config.data, config.source)  # dataset entries: their layouts' options
    settings = plain(config)
    methods = {}
    for name in available_methods():  # every method's params with its defaults filled in
        given = method_params(config, name)
        own = build(method_class(name).config_class, given, config.source, f"methods.{name}")
        methods[name] = plain(own)
        if "train" in config.methods.get(name, {}):
            methods[name]["train"] = plain(config.train_for(name))
    settings["methods"] = methods
    print(f"# {config.source}: checked; every setting, defaults filled in")
    print(yaml.safe_dump(settings, sort_keys=False), end="")
    return 0
