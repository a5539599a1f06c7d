"""``spt train``: train a method (SPT or a trainable baseline) on the prepared training split."""

from __future__ import annotations

import argparse

from spt.config import override
from spt.errors import SuiteError
from spt.params import (
    PIPELINE_OVERRIDES,
    add_compute_options,
    add_params_option,
    add_pipeline_options,
    command_params,
    distinct_names,
    pipeline_datasets,
    pipeline_options,
)

NAME = "train"

_CONFIG_KEYS = (
    "epochs", "batch_size", "lr", "weight_decay", "lr_step_epochs", "lr_gamma", "warmup_steps",
    "grad_clip", "seed", "precision",
)  # fmt: skip


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = sub.add_parser(
        NAME,
        help="train SPT or a trainable baseline on the prepared training split",
        description=(
            "Train a registered method on the train-split defect images of the prepared\n"
            "datasets (manifests from `spt prepare`), with the shared training engine.\n\n"
            "Inputs:  <prepared-root>/<dataset>/manifest.csv; a SAM checkpoint (--checkpoint,\n"
            "         else the file `spt backbones` lists; tiny may have none); knobs from\n"
            "         params.yaml: train.* (epochs, batch_size, lr, lr_step_epochs, lr_gamma,\n"
            "         warmup_steps, seed, prompt_modes, augment, datasets), methods.<method>.*\n"
            "         (the method's own params), methods.<method>.train.* (per-method\n"
            "         overrides of train.*) and evaluate.resize (inputs are prepared as the\n"
            "         evaluation prepares them).\n"
            "Outputs: <out>/<method>/<backbone>/trained.pt (trained tensors + config; give it\n"
            "         to `spt evaluate --trained`), train_log.csv, state/last.pt (resume).\n\n"
            "Samples (augmentation, prompt) are pure functions of (seed, image id, epoch).\n"
            "A checkpoint is written after every epoch; --resume continues exactly.\n"
            "Scale-out: torchrun --nproc_per_node N -m spt.cli train ... (DDP; gloo on CPU,\n"
            "nccl on CUDA); train.batch_size is the global batch, split over the processes."
        ),
    )
    parser.add_argument("--method", default="spt", help="registered method name")
    add_pipeline_options(parser)
    parser.add_argument(
        "--datasets",
        nargs="+",
        default=argparse.SUPPRESS,
        help="datasets to train on (default: train.datasets, else pipeline.datasets)",
    )
    parser.add_argument(
        "--hold-out",
        metavar="DATASET",
        default=None,
        help="leave DATASET out of the training datasets (the transfer analysis: evaluate on it "
        "afterwards); it must be one of them",
    )
    parser.add_argument(
        "--images-per-category",
        metavar="K",
        type=int,
        default=None,
        help="train on K defect images per (dataset, category), chosen in an order keyed by the "
        "training seed, so a smaller K's images are inside a larger K's (the label-efficiency "
        "analysis); all of a category's images where it has fewer",
    )
    parser.add_argument("--out", default="work/train", help="output root")
    add_params_option(parser)
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
    add_compute_options(parser, "train", training=True)
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


def run(args: argparse.Namespace) -> int:
    import os

    import torch

    from spt.artifacts import plain
    from spt.harness.method import build_method, check_trainable, method_class, method_params
    from spt.sam import get_spec, resolve_device
    from spt.sam.attention import set_attention
    from spt.sam.checkpointing import checkpoint_encoder_blocks
    from spt.training.engine import TrainConfig
    from spt.training.run import per_category_subset, train_method, training_rows
    from spt.training.samples import SampleOptions

    params = command_params(args, PIPELINE_OVERRIDES)
    backbone, checkpoint, roots = pipeline_options(params)
    get_spec(backbone)
    device = resolve_device(args.device)
    if device.type == "cuda" and "LOCAL_RANK" in os.environ:
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    if args.limit is not None and args.limit < 1:
        raise SuiteError(f"--limit {args.limit}: give a positive number of images")
    own_params = method_params(params, args.method)  # the method's name and params, checked
    settings = params.train_for(args.method)
    # Laid over the merged settings, so a flag also beats methods.<method>.train.
    for name in ("epochs", "batch_size", "seed", "precision", "attention", "checkpoint_encoder"):
        if hasattr(args, name):
            settings = override(settings, name, getattr(args, name), "--" + name.replace("_", "-"))
    if hasattr(args, "datasets"):
        datasets = distinct_names([str(d) for d in args.datasets], "--datasets")
    elif settings.datasets is not None:
        key = params.train_key(args.method, "datasets")
        datasets = distinct_names(list(settings.datasets), f"{args.params}: {key}")
    else:
        datasets = pipeline_datasets(params, roots)
        datasets = distinct_names(datasets, f"{args.params}: pipeline.datasets")
    if args.hold_out is not None:
        if args.hold_out not in datasets:
            raise SuiteError(
                f"--hold-out {args.hold_out}: not among the training datasets "
                f"({', '.join(map(str, datasets))}); name one of them"
            )
        datasets = [d for d in datasets if d != args.hold_out]
    if not datasets:
        raise SuiteError(
            "no datasets: pass --datasets NAME [NAME ...] or set train.datasets or "
            f"pipeline.datasets in {args.params}"
        )
    if args.images_per_category is not None and args.images_per_category < 1:
        raise SuiteError(
            f"--images-per-category {args.images_per_category}: give a positive number"
        )
    augment = settings.augment
    options = SampleOptions(
        seed=settings.seed,
        prompt_modes=settings.prompt_modes,
        resize=params.evaluate.resize,  # inputs prepared as the evaluation prepares them
        hflip=augment.hflip,
        lsj_prob=augment.lsj_prob,
        lsj_scale=augment.lsj_scale,
    )
    # The sample options shape the weights: in the fingerprint, so --resume refuses a change.
    extra = {"samples": plain(options), "attention": settings.attention}
    if args.images_per_category is not None:  # which images: part of what resume must match
        extra["images_per_category"] = args.images_per_category
    if args.hold_out is not None:
        extra["held_out"] = args.hold_out
    config = TrainConfig(**{k: getattr(settings, k) for k in _CONFIG_KEYS}, extra=extra)
    check_trainable(method_class(args.method))  # before the backbone is loaded
    method = build_method(args.method, backbone, checkpoint, device, own_params)
    set_attention(method.network, settings.attention)
    checkpointed = checkpoint_encoder_blocks(method.network, settings.checkpoint_encoder)
    compute = {
        "attention": settings.attention,
        "checkpoint_encoder": bool(settings.checkpoint_encoder and checkpointed),
    }
    rows = training_rows(roots, [str(d) for d in datasets], args.limit)
    if args.images_per_category is not None:
        rows = per_category_subset(rows, args.images_per_category, settings.seed)
    out_dir = os.path.join(args.out, args.method, backbone)
    from spt.training.run import is_main_process

    say = print if is_main_process() else (lambda *a, **k: None)
    say(
        f"training {args.method} on {backbone}: {len(rows)} images, "
        f"{method.trainable_parameter_count():,} trainable parameters"
    )
    path, result = train_method(
        method, rows, config, options, out_dir, resume=args.resume, restart=args.restart,
        device=device, progress=not args.no_progress, compute=compute,
    )  # fmt: skip
    last = result.history[-1] if result.history else {}
    say(
        f"trained: {path} (epochs {result.epochs_done}, final loss {last.get('loss', float('nan')):.4f})"
    )
    return 0
