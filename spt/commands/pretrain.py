"""``spt pretrain``: pretrain the tiny SAM on synthetic natural scenes (docs/pretrain.md)."""

from __future__ import annotations

import argparse
from pathlib import Path

from spt.params import add_params_option

NAME = "pretrain"
DEFAULT_OUT = "work/pretrain"


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = sub.add_parser(
        NAME,
        help="pretrain the tiny SAM on synthetic natural-object scenes",
        description=(
            "Train every parameter of the tiny SAM (128 px input) from random init on generated\n"
            "'natural object' scenes: colourful, large-ish objects over smooth cluttered\n"
            "backgrounds, one object per sample, prompted by a box, 1/3/5 points, 5+5 points or\n"
            "a coarse mask (HQ-SAM BCE + Dice loss plus IoU-head MSE). The result makes\n"
            "zero-shot tiny SAM a meaningful baseline that meets a domain shift on the\n"
            "industrial data. Nothing is read from disk but params.yaml.\n"
            "\n"
            "Knobs come from the `pretrain:` section of --params (see spt.pretrain.train\n"
            "PretrainConfig for every key and its default); the flags below override it.\n"
            "\n"
            "Outputs in --out: tiny_sam.pth (a plain SAM state_dict: point sam.checkpoints.tiny\n"
            "at it), pretrain_log.json (params, loss per epoch, seconds, zero-shot mIoU on\n"
            "held-out natural scenes and on industrial-twin images), state/last.pt (per-epoch\n"
            "checkpoint). A rerun with the same params finds the outputs and does nothing;\n"
            "--resume continues an interrupted run from its last finished epoch."
        ),
    )
    add_params_option(parser, "params file with `pretrain:`")
    parser.add_argument("--out", default=DEFAULT_OUT, help="output folder")
    # SUPPRESS: an absent flag leaves the params value alone (and prints no "default: None").
    for flag, meaning in (
        ("--scenes", "training scenes (default: params pretrain.scenes, else 2000)"),
        ("--epochs", "epochs (default: params pretrain.epochs, else 16)"),
        ("--seed", "scene and sample seed (default: params pretrain.seed, else 0)"),
    ):
        parser.add_argument(flag, type=int, default=argparse.SUPPRESS, help=meaning)
    parser.add_argument(
        "--resume", action="store_true", help="continue from --out/state/last.pt if present"
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads; 0 keeps torch's choice. The tiny model's ops are too small to "
        "split: on a busy 2-core machine 2 threads made a step up to 100x slower",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    import torch

    from spt.params import command_params
    from spt.pretrain.train import CHECKPOINT_NAME, PretrainConfig, pretrain
    from spt.sam import resolve_device

    overrides = {f"pretrain.{key}": key for key in ("scenes", "epochs", "seed")}
    config = PretrainConfig.from_params(command_params(args, overrides).pretrain)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    log = pretrain(
        config,
        args.out,
        resume=args.resume,
        device=resolve_device(args.device),
        progress=not args.no_progress,
    )
    checkpoint = Path(args.out) / CHECKPOINT_NAME
    if log.get("skipped"):
        print(f"{checkpoint}: up to date with these params; nothing to do")
    else:
        print(f"pretrained in {log['train_seconds']:.0f} s: {checkpoint}")
    for probe, scores in log["quality"].items():
        numbers = ", ".join(f"{mode} {value:.3f}" for mode, value in scores.items())
        print(f"zero-shot mIoU, {probe}: {numbers}")
    return 0
