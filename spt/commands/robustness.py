"""``spt robustness``: score one method under perturbed prompts and corrupted images."""

from __future__ import annotations

import argparse
import os

from spt.params import add_compute_options, add_params_option, add_pipeline_options

NAME = "robustness"


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from spt.commands.evaluate import add_scoring_options

    parser = sub.add_parser(
        NAME,
        help="score a method under perturbed prompts and corrupted images (robustness curves)",
        description=(
            "The robustness analysis of one method (docs/analyses.md), from params.yaml\n"
            "analyses.robustness: box shift, scale and HQ-SAM box noise, point counts, displaced\n"
            "clicks and coarse-mask tolerance (one evaluation on clean images, every level a\n"
            "prompt mode), then every corruption x severity (Gaussian noise, defocus and motion\n"
            "blur, JPEG, brightness, contrast) with clean prompts, one evaluation each.\n"
            "Perturbations are pure functions of (seed, image id, level): every method meets\n"
            "the same ones, and level 0 is the clean protocol bit for bit.\n"
            "Outputs: <out>/<method>/<backbone>/prompts/, .../images/clean/ (severity 0) and\n"
            ".../images/<corruption>-<severity>/,\n"
            "each an evaluation folder (records.parquet, summary.md; see `spt evaluate --help`),\n"
            "resumable chunk by chunk; prompts/click_placement.csv counts, per image and\n"
            "displaced-click level, the positive clicks that left the defect. `spt analysis\n"
            "robustness` turns them into curves, tables and paired tests. Other knobs as\n"
            "`spt evaluate` (evaluate.*, methods.<method>.*)."
        ),
    )
    parser.add_argument("--method", default="zero_shot", help="registered method name")
    add_pipeline_options(parser)
    add_compute_options(parser, "evaluate")
    add_scoring_options(parser)
    parser.add_argument("--out", default="work/robust", help="output root")
    add_params_option(parser)
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace
    from pathlib import Path

    from spt.artifacts import write_text_atomically
    from spt.commands.evaluate import build_config, relaunch
    from spt.harness.evaluate import evaluate, load_method
    from spt.harness.placement import click_placement
    from spt.harness.robustness import (
        CLEAN,
        IMAGES_FOLDER,
        PLACEMENT_FILE,
        PROMPTS_FOLDER,
        corruption_labels,
        prompt_modes,
    )
    from spt.harness.shards import current_shard

    config, params = build_config(args)
    if params.evaluate.processes > 1 and "WORLD_SIZE" not in os.environ:
        return relaunch(args.argv, params.evaluate.processes)
    section = params.analyses.robustness
    root = Path(args.out) / config.method / config.backbone
    modes = prompt_modes(section)
    runs = [(PROMPTS_FOLDER, replace(config, prompt_modes=modes))]
    # severity 0: the corruption runs' clean reference, their prompt modes on clean images
    runs.append(
        (f"{IMAGES_FOLDER}/{CLEAN}", replace(config, prompt_modes=section.corruption_modes))
    )
    for label in corruption_labels(section):
        runs.append(
            (
                f"{IMAGES_FOLDER}/{label}",
                replace(config, prompt_modes=section.corruption_modes, corruption=label),
            )
        )
    shard = current_shard()
    main = shard.is_main
    # one model for every run: the weights are loaded once, not once per corruption
    method = load_method(replace(config, device=shard.device(config.device)))
    for index, (name, run_config) in enumerate(runs, start=1):
        if main and args.no_progress:
            print(f"[{index}/{len(runs)}] {config.method} {name}", flush=True)
        run_config = replace(run_config, folder=str(root / name))
        records = evaluate(run_config, not args.no_progress, method)
    if main:
        # where the displaced clicks landed: rebuilt from the ground truth, no model
        placement = click_placement(
            config, modes,
            image_size=method.spec.image_size, low_res=method.spec.low_res_size,
        )  # fmt: skip
        if not placement.empty:
            path = root / PROMPTS_FOLDER / PLACEMENT_FILE
            write_text_atomically(path, placement.to_csv(index=False))
        print(f"robustness records: {root} ({len(runs)} evaluations; last {records})")
    return 0
