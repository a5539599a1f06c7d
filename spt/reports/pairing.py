"""Pairing the reference's records with one baseline's, image by image.

Within one (backbone, prompt mode, dataset) two records pair when they share
``(image_id, seed)``: the seed fixes the sampled prompts and the training run, so only
same-seed records see the same input. Paired values are then averaged per image over the
seeds both methods have, which leaves one difference per image: images, not seeds, are the
independent units the tests assume, so repeated seeds do not inflate the sample size.

Every record that does not end in a pair is counted under one reason:

* ``n_unpaired``: the other method has no record with that key (missing image or seed);
* ``n_no_prompt``: the key is on both sides but either side has status ``no_prompt``;
* ``n_invalid``: the key is on both sides, neither is ``no_prompt``, but either side is not
  scorable (metric NaN or infinite, or an unknown status);
* ``n_duplicate``: further records with a key already seen on the same side (the first one
  is kept).

The first three count keys (one key = one would-be pair), the last counts records.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from spt.harness.aggregate import scorable
from spt.harness.records import STATUS_NO_PROMPT

PAIR_KEY = ["image_id", "seed"]


@dataclass(frozen=True)
class PairedSample:
    """Per-image metric values of both sides (seed-averaged) plus the drop counts."""

    reference: np.ndarray
    baseline: np.ndarray
    n_seed_pairs: int
    n_seeds: int
    n_unpaired: int
    n_no_prompt: int
    n_invalid: int
    n_duplicate: int

    @property
    def n_pairs(self) -> int:
        return int(self.reference.size)

    @property
    def differences(self) -> np.ndarray:
        return self.reference - self.baseline


def _one_side(records: pd.DataFrame, metric: str) -> tuple[pd.DataFrame, int]:
    """Records reduced to key, status and value; returns them and the duplicates dropped."""
    side = pd.DataFrame(
        {
            "image_id": records["image_id"].to_numpy(),
            "seed": records["seed"].to_numpy(),
            "no_prompt": (records["status"] == STATUS_NO_PROMPT).to_numpy(),
            "scorable": scorable(records, metric).to_numpy(),
            "value": pd.to_numeric(records[metric], errors="coerce").to_numpy(dtype=float),
        }
    )
    duplicated = side.duplicated(PAIR_KEY, keep="first")
    return side[~duplicated], int(duplicated.sum())


def pair_records(reference: pd.DataFrame, baseline: pd.DataFrame, metric: str) -> PairedSample:
    """Pair two methods' records of one (backbone, prompt mode, dataset) on ``metric``."""
    ref, ref_duplicates = _one_side(reference, metric)
    base, base_duplicates = _one_side(baseline, metric)
    merged = ref.merge(base, on=PAIR_KEY, how="outer", suffixes=("_ref", "_base"), indicator=True)
    both = merged["_merge"] == "both"
    no_prompt = both & (merged["no_prompt_ref"].eq(True) | merged["no_prompt_base"].eq(True))
    usable = both & merged["scorable_ref"].eq(True) & merged["scorable_base"].eq(True)
    invalid = both & ~no_prompt & ~usable

    pairs = merged[usable]
    per_image = pairs.groupby("image_id", sort=True)[["value_ref", "value_base"]].mean()
    return PairedSample(
        reference=per_image["value_ref"].to_numpy(dtype=float),
        baseline=per_image["value_base"].to_numpy(dtype=float),
        n_seed_pairs=int(usable.sum()),
        n_seeds=int(pairs["seed"].nunique(dropna=False)),
        n_unpaired=int((~both).sum()),
        n_no_prompt=int(no_prompt.sum()),
        n_invalid=int(invalid.sum()),
        n_duplicate=ref_duplicates + base_duplicates,
    )
