"""``spt train``: train a method (SPT or a trainable baseline) on the prepared training split."""

from __future__ import annotations

import argparse

from spt.errors import SuiteError
from spt.params import (
    add_pipeline_options,
    load_params,
    pipeline_datasets,
    pipeline_options,
    section,
)

NAME = "train"

_CONFIG_KEYS = (
    "epochs", "batch_size", "lr", "weight_decay", "lr_step_epochs", "lr_gamma", "warmup_steps",
    "grad_clip", "seed",
)  # fmt: skip


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from spt.cli import HelpFormatter

    parser = sub.add_parser(
        NAME,
        help="train SPT or a trainable baseline on the prepared training split",
        description=(
            "Train a registered method on the train-split defect images of the prepared\n"
            "datasets (manifests from `spt prepare`), with the shared training engine.\n\n"
            "Inputs:  <prepared-root>/<dataset>/manifest.csv; a SAM checkpoint (--checkpoint,\n"
            "         none for tiny); knobs from params.yaml: train.* (epochs, batch_size, lr,\n"
            "         lr_step_epochs, lr_gamma, warmup_steps, seed, prompt_modes, augment,\n"
            "         datasets), methods.<method>.* (the method's own params) and\n"
            "         methods.<method>.train.* (per-method overrides of train.*).\n"
            "Outputs: <out>/<method>/<backbone>/trained.pt (trained tensors + config; give it\n"
            "         to `spt evaluate --trained`), train_log.csv, state/last.pt (resume).\n\n"
            "Samples (augmentation, prompt) are pure functions of (seed, image id, epoch).\n"
            "A checkpoint is written after every epoch; --resume continues exactly.\n"
            "Scale-out: torchrun --nproc_per_node N -m spt.cli train ... (DDP; gloo on CPU,\n"
            "nccl on CUDA); train.batch_size is the global batch, split over the processes."
        ),
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--method", default="spt", help="registered method name")
    add_pipeline_options(parser)
    parser.add_argument(
        "--datasets",
        nargs="+",
        default=argparse.SUPPRESS,
        help="datasets to train on (default: train.datasets, else pipeline.datasets)",
    )
    parser.add_argument("--out", default="work/train", help="output root")
    parser.add_argument("--params", default="params.yaml", help="params file")
    parser.add_argument(
        "--device",
        default="cpu",
        help="cpu, cuda, cuda:N or auto (under torchrun, cuda uses LOCAL_RANK)",
    )
    parser.add_argument(
        "--epochs", type=int, default=argparse.SUPPRESS, help="override train.epochs"
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=argparse.SUPPRESS,
        help="override train.batch_size (global)",
    )
    parser.add_argument("--seed", type=int, default=argparse.SUPPRESS, help="override train.seed")
    parser.add_argument(
        "--limit", type=int, default=None, help="first N training images per dataset (quick look)"
    )
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--resume", action="store_true", help="continue from <out>/.../state/last.pt"
    )
    group.add_argument(
        "--restart", action="store_true", help="discard an earlier run's state and start over"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(func=run)
    return parser


def train_settings(params: dict, method: str) -> dict:
    """train.* with methods.<method>.train.* laid over it."""
    merged = dict(section(params, "train", default={}) or {})
    merged.update(section(params, "methods", method, "train", default={}) or {})
    return merged


def run(args: argparse.Namespace) -> int:
    import os

    import torch

    from spt.harness.method import build_method
    from spt.sam import get_spec, resolve_device
    from spt.training.engine import TrainConfig
    from spt.training.run import train_method, training_rows
    from spt.training.samples import TRAIN_PROMPT_MODES, SampleOptions

    params = load_params(args.params)
    backbone, checkpoint, roots = pipeline_options(args, params)
    get_spec(backbone)
    device = resolve_device(args.device)
    if device.type == "cuda" and "LOCAL_RANK" in os.environ:
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    settings = train_settings(params, args.method)
    for key in ("epochs", "batch_size", "seed"):
        if hasattr(args, key):
            settings[key] = getattr(args, key)
    datasets = (
        getattr(args, "datasets", None)
        or settings.get("datasets")
        or pipeline_datasets(params, roots)
    )
    if not datasets:
        raise SuiteError("no datasets: pass --datasets NAME [NAME ...] or set train.datasets")
    augment = settings.get("augment", {}) or {}
    try:
        config = TrainConfig(**{k: settings[k] for k in _CONFIG_KEYS if k in settings})
        options = SampleOptions(
            seed=int(settings.get("seed", 0)),
            prompt_modes=tuple(settings.get("prompt_modes", TRAIN_PROMPT_MODES)),
            hflip=float(augment.get("hflip", 0.5)),
            lsj_prob=float(augment.get("lsj_prob", 1.0)),
            lsj_scale=tuple(float(v) for v in augment.get("lsj_scale", (0.1, 2.0))),
        )
    except (TypeError, ValueError) as exc:
        raise SuiteError(f"{args.params}: bad train setting ({exc})") from None
    method_params = {
        k: v
        for k, v in (section(params, "methods", args.method, default={}) or {}).items()
        if k != "train"
    }
    method = build_method(args.method, backbone, checkpoint, device, method_params)
    rows = training_rows(roots, [str(d) for d in datasets], args.limit)
    out_dir = os.path.join(args.out, args.method, backbone)
    from spt.training.run import is_main_process

    say = print if is_main_process() else (lambda *a, **k: None)
    say(
        f"training {args.method} on {backbone}: {len(rows)} images, "
        f"{method.trainable_parameter_count():,} trainable parameters"
    )
    path, result = train_method(
        method, rows, config, options, out_dir, resume=args.resume, restart=args.restart,
        device=device, progress=not args.no_progress,
    )  # fmt: skip
    last = result.history[-1] if result.history else {}
    say(
        f"trained: {path} (epochs {result.epochs_done}, final loss {last.get('loss', float('nan')):.4f})"
    )
    return 0
