"""Where displaced clicks land: the share of a ``+click<d>`` prompt's positive clicks that leave
the defect (docs/analyses.md).

A displaced click keeps its positive label wherever it lands, so a point-displacement curve mixes
two effects: the model's tolerance of an imprecise click inside the defect, and a click that now
says "this is defect" on background. Reading the curve needs the share of the second kind. The
prompts are pure functions of (seed, image id, mode), so they are rebuilt here from the ground
truth exactly as the evaluation built them (same manifest rows, input protocol and frame), with no
model: the counts are the same for every method of a backbone.
"""

from __future__ import annotations

import pandas as pd

from spt.config.modes import split_mode
from spt.data.images import read_mask
from spt.data.manifest import read_manifest, resolve_manifest_path
from spt.harness.evaluate import EvaluationConfig, select_images
from spt.harness.preprocess import InputFrame, mask_to_input
from spt.harness.prompts import Prompt, PromptUnavailable, build_prompt, foreground
from spt.harness.robustness import PLACEMENT_COLUMNS


def displaced_click_modes(modes) -> list[str]:
    """The ``+click<d>`` modes among ``modes`` (d > 0), in their order."""
    chosen = []
    for mode in modes:
        _, family, level = split_mode(mode)
        if family == "click" and level > 0:
            chosen.append(mode)
    return chosen


def clicks_outside(prompt: Prompt, resized_mask) -> tuple[int, int]:
    """``(positive clicks, those on background)`` of ``prompt`` in the S x S input frame of
    ``resized_mask`` (float 0..255); the clicks are whole-pixel (x, y) indices."""
    if prompt.point_coords is None:
        return 0, 0
    positive = prompt.point_labels.reshape(-1) == 1
    xy = prompt.point_coords.reshape(-1, 2)[positive].astype(int)
    fg = foreground(resized_mask)
    on_defect = fg[xy[:, 1], xy[:, 0]]
    return int(positive.sum()), int((~on_defect).sum())


def click_placement(
    config: EvaluationConfig, modes, *, image_size: int, low_res: int
) -> pd.DataFrame:
    """One row per (test image, displaced-click mode) that ``config`` scores: its positive
    clicks and how many lie outside the defect (:data:`PLACEMENT_COLUMNS`). ``image_size`` and
    ``low_res``: the backbone's input side and mask-prompt side. Images whose prompt cannot be
    built (their records say no_prompt) have no row."""
    modes = displaced_click_modes(modes)
    rows = []
    for dataset in config.datasets if modes else ():
        manifest_path = config.manifest_path(dataset)
        for _, row in select_images(read_manifest(manifest_path), config.limit).iterrows():
            path = resolve_manifest_path(row["mask_path"], manifest_path.parent)
            mask = read_mask(path, row.get("prepared_mask_sha256") or None)
            frame = InputFrame.for_image(*mask.shape, image_size, config.resize)
            resized = mask_to_input(mask, frame)
            for mode in modes:
                try:
                    prompt = build_prompt(
                        mode, resized, config.seed, row["image_id"], low_res,
                        instances=config.instances, mask_prompt_logit=config.mask_prompt_logit,
                    )  # fmt: skip
                except PromptUnavailable:
                    continue
                clicks, outside = clicks_outside(prompt, resized)
                rows.append([dataset, row["image_id"], mode, clicks, outside])
    return pd.DataFrame(rows, columns=PLACEMENT_COLUMNS)
