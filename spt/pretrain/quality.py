"""Zero-shot quality probes for a pretrained SAM: held-out natural scenes and industrial twins.

Both probes go through the harness's own input protocol (:mod:`spt.harness.preprocess`), prompt
builder and IoU metric, so their numbers mean what ``spt evaluate`` numbers mean: every image is
resized to the S x S input, prompted with :func:`spt.harness.prompts.build_prompt` from its
resized mask, and the low-res logits are resized back to the original mask size.

- Natural: one prompt per visible object of the held-out scenes (scene indices start at
  :data:`HELDOUT_OFFSET`, never used for training), mIoU over objects.
- Industrial: one defect per image drawn with the twins' surfaces and defects
  (:mod:`spt.data.synthetic_draw`) at the twins' image sizes; the domain the methods adapt to.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from segment_anything.modeling import Sam
from tqdm import tqdm

from spt.data.stable_random import stable_rng
from spt.data.synthetic_draw import DEFECTS, TEXTURES, apply_defect, colourise, defect_mask, texture
from spt.harness.metrics import iou
from spt.harness.preprocess import InputFrame, image_to_input, logits_to_original, mask_to_input
from spt.harness.prompts import PromptUnavailable, build_prompt
from spt.pretrain.model import decode
from spt.pretrain.natural import natural_scene

HELDOUT_OFFSET = 1_000_000  # held-out scene indices start here; training uses 0..scenes-1
INDUSTRIAL_SIDES = (80, 144)  # the twins' image sides range over about this interval


def heldout_index(position: int) -> int:
    """The scene index of the ``position``-th held-out scene."""
    return HELDOUT_OFFSET + position


def natural_probe(seed: int, count: int) -> Iterator[tuple[str, np.ndarray, list[np.ndarray]]]:
    """(image id, RGB uint8 (S,S,3), object masks uint8 0/255 (S,S)) of the held-out scenes."""
    for position in range(count):
        scene = natural_scene(seed, heldout_index(position))
        masks = [np.where(m, 255, 0).astype(np.uint8) for m in scene.masks]
        yield f"natural-heldout/{position:05d}", scene.image, masks


def industrial_probe(seed: int, count: int) -> Iterator[tuple[str, np.ndarray, list[np.ndarray]]]:
    """(image id, RGB uint8 (H,W,3), [defect mask uint8 0/255 (H,W)]) in the twins' style."""
    for position in range(count):
        rng = stable_rng("industrial-probe", seed, position)
        height, width = (int(v) for v in rng.integers(*INDUSTRIAL_SIDES, size=2))
        surface = texture(TEXTURES[int(rng.integers(len(TEXTURES)))], height, width, rng)
        kind = DEFECTS[int(rng.integers(len(DEFECTS)))]
        mask = defect_mask(kind, height, width, rng)
        image = apply_defect(colourise(surface, rng), mask, kind, rng)
        pixels = np.rint(image).astype(np.uint8)
        yield f"industrial-probe/{position:05d}", pixels, [np.where(mask, 255, 0).astype(np.uint8)]


@torch.no_grad()
def probe_miou(
    sam: Sam,
    samples: Iterator[tuple[str, np.ndarray, list[np.ndarray]]],
    modes: Sequence[str],
    seed: int,
    progress: bool = False,
    total: int | None = None,
) -> dict[str, float]:
    """{mode: mean IoU over every (image, mask) whose prompt could be built}.

    samples: (image id, RGB uint8 (H,W,3), masks uint8 0/255 (H,W)) as the probes yield them.
    """
    was_training = sam.training
    sam.eval()
    size = sam.image_encoder.img_size
    low_res = 4 * sam.prompt_encoder.image_embedding_size[0]
    scores: dict[str, list[float]] = {mode: [] for mode in modes}
    for image_id, image, masks in tqdm(samples, total=total, disable=not progress, leave=False):
        frame = InputFrame.for_image(image.shape[0], image.shape[1], size)
        embedding = sam.image_encoder(image_to_input(image, frame, sam.device))
        for number, mask in enumerate(masks):
            resized = mask_to_input(mask, frame)
            for mode in modes:
                try:
                    prompt = build_prompt(mode, resized, seed, f"{image_id}/{number}", low_res)
                except PromptUnavailable:
                    continue
                logits, _ = decode(sam, embedding, prompt)
                scores[mode].append(iou(logits_to_original(logits, frame)[0, 0], mask))
    sam.train(was_training)
    return {
        mode: float(np.mean(values)) if values else float("nan") for mode, values in scores.items()
    }
