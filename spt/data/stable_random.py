"""Random generators that are pure functions of a key, never of global or process state."""

from __future__ import annotations

import hashlib

import numpy as np


def stable_rng(*key: object) -> np.random.Generator:
    """A generator seeded from ``sha256("|".join(key))``: same key, same numbers, any machine."""
    digest = hashlib.sha256("|".join(str(part) for part in key).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "little"))
