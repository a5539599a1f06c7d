"""Evaluation over several processes (torchrun, one or several nodes): who scores what.

The images of an evaluation are cut into chunks by :mod:`spt.harness.evaluate` (per dataset,
in image-id order, ``chunk_size`` images each), so the chunks and the records in them do not
depend on the number of processes. Chunk ``i`` of the run (counted over the datasets in their
given order) belongs to rank ``i mod world``: a pure function of the image ids, the chunk size
and the dataset list, never of which process starts or finishes first. Every rank writes its
chunks atomically; rank 0 waits for all ranks (a barrier) and merges every chunk in chunk
order, so the merged records are the same bytes for 1, 2 or 3 processes. A rerun skips every
chunk already written, whichever rank wrote it: a killed rank's work is all that is redone.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from spt.errors import SuiteError

#: How long rank 0 waits at the barrier for the slowest rank: a whole shard of a large
#: evaluation on a slow device, not a network timeout.
BARRIER_TIMEOUT = timedelta(hours=12)


@dataclass(frozen=True)
class Shard:
    """This process's place among the evaluation's processes."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def owns(self, chunk_index: int) -> bool:
        """Whether this rank scores chunk ``chunk_index`` of the run."""
        return chunk_index % self.world == self.rank

    def device(self, device: str) -> str:
        """``cuda`` becomes this process's own GPU (``cuda:<local rank>``) under torchrun."""
        return f"cuda:{self.local_rank}" if device == "cuda" and self.world > 1 else device


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise SuiteError(f"${name}={value!r} is not an integer; launch with torchrun") from None


def current_shard() -> Shard:
    """The shard torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``) gives; one
    process when it gives none."""
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    if world < 1 or not 0 <= rank < world:
        raise SuiteError(f"RANK={rank}, WORLD_SIZE={world}: not a valid torchrun process")
    return Shard(rank, world, _env_int("LOCAL_RANK", 0))


def join(
    shard: Shard, device: str | torch.device, timeout: timedelta | None = BARRIER_TIMEOUT
) -> None:
    """Join the process group torchrun set up (gloo on CPU, nccl on CUDA), once.

    ``timeout``: how long a collective waits; None keeps torch's default (training, whose
    all-reduces are seconds apart, should fail fast when a rank dies)."""
    if shard.world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.device(device).type == "cuda" else "gloo"
        extra = {} if timeout is None else {"timeout": timeout}
        dist.init_process_group(backend=backend, **extra)


def wait_for_all(shard: Shard) -> None:
    """Return once every rank has written its chunks (no-op for one process)."""
    if shard.world > 1:
        dist.barrier()
