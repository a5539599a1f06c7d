"""``spt rehearse``: the whole pipeline at a published backbone's size on a few images, timed,
and the cost of the paper protocol extrapolated from those timings."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from spt.artifacts import write_text_atomically
from spt.errors import SuiteError
from spt.params import add_params_option, command_params

NAME = "rehearse"
TRAINED_METHODS = ("spt", "lora", "adapter", "wesam")
PAPER_EPOCHS = 16
#: Defect images of the six datasets (the ones the protocol trains and scores on), used where a
#: dataset is not prepared here: (total, train) where the publisher fixes the split, else
#: (total, None) and the suite's split trains on data.train_fraction of them. MVTec AD and VisA
#: as their papers state; KSDD2 as docs give it; MTD as prepared here; MPDD and BTAD approximate.
PAPER_DEFECTS: dict[str, tuple[int, int | None, str]] = {
    "mvtec": (1258, None, "MVTec AD paper"),
    "visa": (1200, None, "VisA paper"),
    "mpdd": (282, None, "approximate"),
    "btad": (290, None, "approximate"),
    "ksdd2": (356, 246, "publisher's split: 246 train, 110 test"),
    "mtd": (386, None, "real MTD prepared by this suite"),
}


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = sub.add_parser(
        NAME,
        help="time the whole pipeline at a published backbone's size and extrapolate its cost",
        description=(
            "A scale rehearsal to run before renting GPUs: prepare -> train (1 epoch on a few\n"
            "images, every trainable method) -> evaluate (every method, every prompt mode) ->\n"
            "report, at --backbone (vit_b by default; inputs resized to its 1024 px), each step\n"
            "its own `spt` process. Data: real MTD when data/mtd exists, else the MTD twin.\n"
            "Weights: --checkpoint, else the published file `spt backbones` lists, else a random\n"
            "initialisation written to <out>/<backbone>_random_init.pth (said in the output: the\n"
            "timings hold, the metrics mean nothing).\n"
            "Prints and writes <out>/rehearsal.{md,json}: seconds per image to encode and per\n"
            "prompt to decode (from the records), seconds per training step per method (from\n"
            "the run's 'training ...' line, after start-up and model building, to its end,\n"
            "over its steps), the peak memory of\n"
            "each step (resident set size of the process), and the extrapolated cost of the\n"
            "paper protocol (six datasets, 16 epochs, batch 1, every method, every prompt mode)\n"
            "in device-hours on this device, with its assumptions stated. Step logs:\n"
            "<out>/logs/. Runs in the numerics mode of $SPT_NUMERICS (portable: one thread)."
        ),
    )
    parser.add_argument("--backbone", default="vit_b", help="SAM backbone to rehearse")
    parser.add_argument(
        "--checkpoint", help="SAM checkpoint (default: the published file, else random weights)"
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument(
        "--train-images", type=int, default=2, help="training images (one step each)"
    )
    parser.add_argument("--eval-images", type=int, default=2, help="images each method scores")
    parser.add_argument(
        "--methods",
        nargs="+",
        metavar="METHOD",
        help="trainable methods to train and score; zero-shot is always scored (default: "
        + " ".join(TRAINED_METHODS)
        + ")",
    )
    parser.add_argument(
        "--prompt-modes",
        nargs="+",
        metavar="MODE",
        default=argparse.SUPPRESS,
        help="prompt modes to score (default: every mode)",
    )
    parser.add_argument("--out", type=Path, default=Path("work/rehearsal"), help="output folder")
    add_params_option(parser)
    parser.set_defaults(func=run)
    return parser


class _Steps:
    """Runs `spt` subcommands as child processes: wall seconds and peak resident memory each."""

    def __init__(self, out: Path, total: int) -> None:
        self.logs = out / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.total, self.done = total, 0
        self.timings: list[dict] = []

    def run(self, label: str, argv: list[str], marker: str | None = None) -> dict:
        """Run ``spt argv``; with ``marker``, also the seconds from the first output line that
        starts with it to the end (the work after start-up and model building)."""
        self.done += 1
        log = self.logs / f"{self.done:02d}_{label.replace(' ', '_')}.log"
        print(f"[{self.done}/{self.total}] {label} ...", flush=True)
        start = time.perf_counter()
        marked = None
        child = subprocess.Popen(
            [sys.executable, "-m", "spt.cli", *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            env={**os.environ, "PYTHONUNBUFFERED": "1"},  # each line as it is printed
        )
        lines = []
        for line in child.stdout:
            lines.append(line)
            if marker and marked is None and line.startswith(marker):
                marked = time.perf_counter()
        _, status, usage = os.wait4(child.pid, 0)  # with the child's own peak memory
        child.returncode = os.waitstatus_to_exitcode(status)
        child.stdout.close()
        end = time.perf_counter()
        write_text_atomically(log, "".join(lines))
        if child.returncode != 0:
            raise SuiteError(f"rehearsal step `spt {' '.join(argv[:3])} ...` failed; see {log}")
        timing = {"step": label, "seconds": end - start, "peak_rss_gb": usage.ru_maxrss / 1e6}
        if marked is not None:
            timing["work_seconds"] = end - marked
        print(f"      {end - start:8.1f} s, peak memory {timing['peak_rss_gb']:.2f} GB", flush=True)
        self.timings.append(timing)
        return timing


def _weights(args: argparse.Namespace, params, out: Path) -> tuple[str | None, str]:
    """(checkpoint path or None, one sentence on what the weights are)."""
    from spt.sam import choose_checkpoint

    if args.checkpoint:
        return args.checkpoint, f"checkpoint {args.checkpoint}"
    choice = choose_checkpoint(args.backbone, params.sam.checkpoints, params.sam.checkpoint_dir)
    if choice.path is not None and choice.path.is_file():
        return str(choice.path), f"published checkpoint {choice.path}"
    if choice.path is None:
        return None, f"{args.backbone} has no published weights: random initialisation"
    from spt.artifacts import save_torch
    from spt.sam.backbones import build_sam

    path = out / f"{args.backbone}_random_init.pth"
    if not path.is_file():
        save_torch(build_sam(args.backbone, seed=0).state_dict(), path)
    return str(path), (
        f"RANDOM weights ({choice.path} not found): the timings hold, the metrics mean nothing"
    )


def _data_steps(args, out: Path) -> tuple[list[tuple[str, list[str]]], str, str]:
    """The prepare steps, the dataset name and a sentence on the data."""
    prepared = str(out / "prepared")
    params = ["--params", args.params]
    if (Path("data") / "mtd").is_dir():
        step = ["prepare", *params, "--datasets", "mtd", "--out", prepared, "--no-progress"]
        return [("prepare mtd", step)], "mtd", "real MTD (data/mtd)"
    raw = str(out / "raw")
    steps = [
        ("synth mtd twin", ["synth", *params, "--out", raw, "--layouts", "mtd"]),
        (
            "prepare mtd twin",
            ["prepare", *params, "--synthetic", raw, "--out", prepared, "--datasets", "mtd_twin"]
            + ["--no-progress"],
        ),
    ]
    return steps, "mtd_twin", "the MTD twin (no data/mtd here)"


def measured_rates(records, timings: list[dict], train_steps: int) -> dict[str, dict]:
    """Per method: encode seconds per image, decode seconds per prompt, training seconds per
    step (where trained) and the peak memory of its steps."""
    rates: dict[str, dict] = {}
    ok = records[records["status"] == "ok"]
    for method, part in records.groupby("method", sort=True):
        per_image = part.drop_duplicates(["image_id"])["encode_seconds"].astype(float)
        prompts = ok[ok["method"] == method].drop_duplicates(["image_id", "prompt_mode"])
        rates[str(method)] = {
            "encode_s_per_image": float(per_image.mean()),
            "decode_s_per_prompt": float(prompts["seconds"].astype(float).mean()),
            "modes": int(part["prompt_mode"].nunique()),
        }
    for timing in timings:
        kind, _, method = timing["step"].partition(" ")
        if method in rates and kind in ("train", "evaluate"):
            rates[method][f"{kind}_peak_rss_gb"] = timing["peak_rss_gb"]
            if kind == "train":
                work = timing.get("work_seconds", timing["seconds"])
                rates[method]["train_s_per_step"] = work / train_steps
    return rates


def protocol_images(prepared_counts: dict[str, tuple[int, int]], train_fraction: float) -> dict:
    """(train, test) defect images per dataset of the paper protocol: the prepared counts where
    a real dataset is prepared, else :data:`PAPER_DEFECTS` under the suite's split."""
    images = {}
    for name, (total, train, source) in PAPER_DEFECTS.items():
        if name in prepared_counts:
            images[name] = (*prepared_counts[name], "prepared here")
            continue
        train = round(total * train_fraction) if train is None else train
        images[name] = (train, total - train, source)
    return images


def extrapolate(rates: dict[str, dict], images: dict, epochs: int, modes: int) -> dict:
    """Device-hours of the paper protocol per method: training (train images x epochs steps)
    plus evaluation (test images x (encode + modes x decode))."""
    train_images = sum(train for train, _, _ in images.values())
    test_images = sum(test for _, test, _ in images.values())
    cost = {}
    for method, rate in rates.items():
        train_s = rate.get("train_s_per_step", 0.0) * train_images * epochs
        eval_s = test_images * (rate["encode_s_per_image"] + modes * rate["decode_s_per_prompt"])
        cost[method] = {"train_h": train_s / 3600, "eval_h": eval_s / 3600}
        cost[method]["total_h"] = cost[method]["train_h"] + cost[method]["eval_h"]
    return {
        "train_images": train_images,
        "test_images": test_images,
        "epochs": epochs,
        "prompt_modes": modes,
        "methods": cost,
        "total_h": sum(c["total_h"] for c in cost.values()),
    }


def _prepared_counts(*roots: Path) -> dict[str, tuple[int, int]]:
    """(train, test) defect images of each real dataset prepared under one of ``roots`` (the
    first that has it)."""
    import pandas as pd

    counts = {}
    for name in PAPER_DEFECTS:
        manifest = next(
            (r / name / "manifest.csv" for r in roots if (r / name / "manifest.csv").is_file()),
            None,
        )
        if manifest is not None:
            rows = pd.read_csv(manifest)
            defects = rows[(rows["label"] == "defect") & (rows["mask_pixels"] > 0)]
            counts[name] = (
                int((defects["split"] == "train").sum()),
                int((defects["split"] == "test").sum()),
            )
    return counts


def markdown(summary: dict) -> str:
    lines = [
        f"# Scale rehearsal: {summary['backbone']} on {summary['device']}",
        "",
        f"- Weights: {summary['weights']}.",
        f"- Data: {summary['data']}; {summary['train_images']} training image(s) (1 epoch, batch "
        f"1), {summary['eval_images']} scored image(s) per method, "
        f"{summary['modes']} prompt mode(s).",
        f"- Numerics: {summary['numerics']}.",
        f"- Wall time of the whole rehearsal: {summary['seconds'] / 60:.1f} min.",
        "- Peak memory: the resident host memory of each step's process (on CUDA the GPU's "
        "own peak is not measured here).",
        "",
        "| method | encode s / image | decode s / prompt | train s / step | peak host memory train"
        " / evaluate (GB) |",
        "|---|---:|---:|---:|---|",
    ]
    for method, rate in summary["rates"].items():
        step = rate.get("train_s_per_step")
        peaks = " / ".join(
            f"{rate[k]:.2f}" if k in rate else "-"
            for k in ("train_peak_rss_gb", "evaluate_peak_rss_gb")
        )
        lines.append(
            f"| {method} | {rate['encode_s_per_image']:.3g} | {rate['decode_s_per_prompt']:.3g} "
            f"| {'-' if step is None else f'{step:.3g}'} | {peaks} |"
        )
    cost = summary["protocol"]
    lines += [
        "",
        f"## Extrapolated paper protocol on this device: {cost['total_h']:.1f} device-hours",
        "",
        f"{cost['train_images']} training and {cost['test_images']} test defect images over the "
        f"six datasets, {cost['epochs']} epochs at batch 1, {cost['prompt_modes']} prompt modes "
        "per test image, one seed. Assumptions: a training step and an encode cost the same "
        "on every image (the input is always the backbone's square size); decode time is the "
        "mean over the rehearsal's prompts; a training step is timed from the run's "
        "'training ...' line (after model building) to its end, so the run's fixed work "
        "(screening the images, saving trained.pt) is shared out over its few steps: "
        "negligible next to a published backbone's step, an overestimate for tiny; no data "
        "loading or report time.",
        "",
        "| method | train h | evaluate h | total h |",
        "|---|---:|---:|---:|",
    ]
    for method, c in cost["methods"].items():
        lines.append(f"| {method} | {c['train_h']:.2f} | {c['eval_h']:.2f} | {c['total_h']:.2f} |")
    lines += ["", "| dataset | train images | test images | count from |", "|---|---:|---:|---|"]
    for name, (train, test, source) in summary["images"].items():
        lines.append(f"| {name} | {train} | {test} | {source} |")
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    import pandas as pd

    from spt import numerics
    from spt.harness.prompts import DEFAULT_PROMPT_MODES
    from spt.sam import get_spec

    params = command_params(args)
    get_spec(args.backbone)
    for name in ("train_images", "eval_images"):
        if getattr(args, name) < 1:
            raise SuiteError(f"--{name.replace('_', '-')} must be at least 1")
    args.methods = list(args.methods or TRAINED_METHODS)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    modes = list(getattr(args, "prompt_modes", DEFAULT_PROMPT_MODES))
    checkpoint, weights = _weights(args, params, out)
    print(f"rehearsal of {args.backbone} on {args.device}: {weights}", flush=True)
    data_steps, dataset, data = _data_steps(args, out)
    steps = _Steps(out, len(data_steps) + 2 * len(args.methods) + 2)
    started = time.perf_counter()
    for label, argv in data_steps:
        steps.run(label, argv)
    common = ["--params", args.params, "--backbone", args.backbone, "--device", args.device]
    common += ["--datasets", dataset, "--prepared-root", str(out / "prepared"), "--no-progress"]
    if checkpoint is not None:
        common += ["--checkpoint", checkpoint]
    train_root, eval_root = out / "train", out / "eval"
    for method in args.methods:
        steps.run(
            f"train {method}",
            ["train", "--method", method, *common, "--out", str(train_root), "--epochs", "1"]
            + ["--batch-size", "1", "--limit", str(args.train_images), "--restart"],
            marker="training ",
        )
    evaluate = ["--limit", str(args.eval_images), "--prompt-modes", *modes, "--out", str(eval_root)]
    steps.run("evaluate zero_shot", ["evaluate", "--method", "zero_shot", *common, *evaluate])
    for method in args.methods:
        trained = train_root / method / args.backbone / "trained.pt"
        steps.run(
            f"evaluate {method}",
            ["evaluate", "--method", method, *common, *evaluate, "--trained", str(trained)],
        )
    steps.run(
        "report",
        ["report", "--params", args.params, "--eval-root", str(eval_root), "--train-root",
         str(train_root), "--prepared-root", str(out / "prepared"), "--out", str(out / "report"),
         "--n-boot", "200", "--figure-n-boot", "50", "--examples", "1",
         "--reference-method", "spt" if "spt" in args.methods else "zero_shot"],
    )  # fmt: skip
    records = pd.concat(
        pd.read_parquet(path)
        for path in sorted(eval_root.glob(f"*/{args.backbone}/records.parquet"))
    )
    rates = measured_rates(records, steps.timings, args.train_images)
    images = protocol_images(
        _prepared_counts(out / "prepared", Path(params.data.prepared_root)),
        params.data.train_fraction,
    )
    summary = {
        "backbone": args.backbone,
        "device": args.device,
        "weights": weights,
        "data": data,
        "train_images": args.train_images,
        "eval_images": args.eval_images,
        "modes": len(modes),
        "numerics": numerics.summary_line(numerics.describe(args.device)),
        "seconds": time.perf_counter() - started,
        "steps": steps.timings,
        "rates": rates,
        "images": images,
        "protocol": extrapolate(rates, images, PAPER_EPOCHS, len(DEFAULT_PROMPT_MODES)),
    }
    text = markdown(summary)
    write_text_atomically(out / "rehearsal.md", text)
    write_text_atomically(out / "rehearsal.json", json.dumps(summary, indent=2) + "\n")
    print(text)
    return 0
