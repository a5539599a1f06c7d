"""The suite's split protocol for images the publisher did not split usefully.

Supervised methods need defect images on both sides, but most publishers put every defect image
in test (MVTec AD, VisA, MPDD, BTAD) or give no split at all (MTD, a user's folder). Protocol:

1. A dataset keeps its publisher's split for defect images when that split already holds defect
   images on both sides (KSDD2, the SPT archive). Normal images keep any publisher split.
2. Every other image is assigned within its stratum (dataset, category, defect type): images are
   ranked by ``sha256(f"{seed}|{image_id}")`` and the first ``n_train`` go to train, where
   ``n_train = floor(train_fraction * n + 0.5)`` clamped to ``[1, n - 1]`` when ``n >= 2``; a
   stratum of one image goes to test.

An image's side depends only on the seed, its id and the ids in its own stratum: never on the
order files were listed, the worker count, or which other datasets are prepared.
"""

from __future__ import annotations

import math
from collections import defaultdict

from spt.data.stable_random import keyed_rank
from spt.errors import SuiteError


def train_count(n: int, fraction: float) -> int:
    """How many of a stratum's ``n`` images go to train."""
    if n < 2:
        return 0
    return min(max(math.floor(fraction * n + 0.5), 1), n - 1)


def rank_key(seed: int, image_id: str) -> tuple[str, str]:
    return keyed_rank(seed, image_id), image_id


def check_fraction(fraction: float, where: str) -> float:
    if not isinstance(fraction, (int, float)) or not 0.0 < float(fraction) < 1.0:
        raise SuiteError(f"{where}: train_fraction must be a number in (0, 1), got {fraction!r}")
    return float(fraction)


def keeps_publisher_defect_split(rows: list[dict]) -> bool:
    """True when the publisher's split already puts defect images on both sides."""
    sides = {row["split"] for row in rows if row["label"] == "defect"}
    return sides == {"train", "test"}


def assign_splits(rows: list[dict], seed: int, fraction: float) -> None:
    """Fill ``row["split"]`` in place for one dataset's manifest rows.

    On entry ``split`` holds the publisher's split or None; on return every row has train/test.
    """
    keep_defects = keeps_publisher_defect_split(rows)
    strata: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for row in rows:
        publisher_split = row["split"]
        if publisher_split is not None and (row["label"] == "normal" or keep_defects):
            continue
        strata[(row["category"], row["defect_type"])].append(row)
    for members in strata.values():
        members.sort(key=lambda row: rank_key(seed, row["image_id"]))
        n_train = train_count(len(members), fraction)
        for position, row in enumerate(members):
            row["split"] = "train" if position < n_train else "test"
