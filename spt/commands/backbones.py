"""``spt backbones``: which SAM backbones exist and which checkpoint each would load."""

from __future__ import annotations

import argparse

from spt.params import add_params_option, command_params

NAME = "backbones"


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = sub.add_parser(
        NAME,
        help="list SAM backbones and the checkpoint each would load",
        description=(
            "List the SAM backbones (vit_b, vit_l, vit_h and the CPU-sized tiny) with their\n"
            "architecture and the checkpoint file each would load, and whether that file exists.\n"
            "Checkpoint lookup order: sam.checkpoints.<name> in params.yaml, then the published\n"
            "file name inside sam.checkpoint_dir (params.yaml), $SPT_SAM_CHECKPOINT_DIR or\n"
            "./checkpoints. tiny has no published weights and is randomly initialised.\n"
            "Nothing is loaded or hashed here; `spt backbones --verify` loads each existing file\n"
            "with the full checks (hash of published names, safe unpickling, architecture)."
        ),
    )
    add_params_option(parser, "params file to read sam.* from")
    parser.add_argument(
        "--verify", action="store_true", help="load every existing checkpoint and check it"
    )
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from spt.sam import BACKBONES, choose_checkpoint  # imports torch: only when run

    sam = command_params(args).sam
    configured, folder = sam.checkpoints, sam.checkpoint_dir
    header = f"{'backbone':<8} {'input':>5} {'width':>5} {'depth':>5}  checkpoint"
    print(header)
    status = 0
    for name, spec in BACKBONES.items():
        choice = choose_checkpoint(name, configured, folder)
        if choice.path is None:
            where = choice.source
        else:
            state = "present" if choice.path.is_file() else "missing"
            where = f"{choice.path} ({state}; from {choice.source})"
            if args.verify and choice.path.is_file():
                from spt.errors import SuiteError
                from spt.sam import load_sam

                try:
                    load_sam(name, choice.path)
                    where += " verified"
                except SuiteError as exc:
                    where += f" INVALID: {exc}"
                    status = 1
        print(
            f"{name:<8} {spec.image_size:>5} {spec.encoder_dim:>5} {spec.encoder_depth:>5}  {where}"
        )
    return status
