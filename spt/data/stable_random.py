"""Keyed randomness: the one place where a key (seed, image id, mode or epoch, purpose) becomes
random numbers. Every value is a pure function of the key, never of global or process state,
the order of a loader or the number of processes, and is the same on every machine.

The key's parts are joined with ``|`` and hashed with sha256:

- :func:`stable_rng`: a numpy Generator (PCG64) seeded with the digest's first 16 bytes;
- :func:`keyed_int`: the first 8 bytes as an unsigned 64-bit integer;
- :func:`torch_seed`: that integer cut to 63 bits, the range ``torch.Generator.manual_seed``
  takes without wrapping;
- :func:`keyed_rank`: the hex digest, a sort key that orders ids by a keyed hash.
"""

from __future__ import annotations

import hashlib

import numpy as np

_MASK_63 = (1 << 63) - 1


def _digest(key: tuple[object, ...]) -> bytes:
    return hashlib.sha256("|".join(str(part) for part in key).encode()).digest()


def stable_rng(*key: object) -> np.random.Generator:
    """A generator seeded from ``sha256("|".join(key))``: same key, same numbers, any machine."""
    return np.random.default_rng(int.from_bytes(_digest(key)[:16], "little"))


def keyed_int(*key: object) -> int:
    """An unsigned 64-bit integer, a pure function of ``key``."""
    return int.from_bytes(_digest(key)[:8], "little")


def torch_seed(*key: object) -> int:
    """:func:`keyed_int` cut to its low 63 bits (a torch seed)."""
    return keyed_int(*key) & _MASK_63


def keyed_rank(*key: object) -> str:
    """The hex sha256 of ``key``: sorting ids by it is a keyed shuffle that any subset keeps."""
    return _digest(key).hex()
