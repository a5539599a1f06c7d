"""How a run computes (precision, attention kernel) and what it cost (peak memory).

Precision (``train.precision``, ``evaluate.precision``, ``--precision``):

- ``fp32``: no autocast; the default and the only mode the portable reference uses.
- ``bf16``: ``torch.autocast`` with bfloat16 around the model's forward; no loss scaler (bf16
  has fp32's exponent range). Needs a CPU with AVX-512 BF16/AMX or a GPU with bf16 support to
  be fast; it runs (slowly, emulated) elsewhere.
- ``fp16``: autocast with float16 and a dynamic loss scaler (``torch.amp.GradScaler``) so small
  gradients do not flush to zero.

Losses and metrics are always computed in fp32: the loss functions leave autocast and upcast
their inputs (:func:`in_fp32`), and the harness upcasts the logits before resizing and scoring.

Peak memory (:func:`peak_memory`): on CUDA ``torch.cuda.max_memory_allocated`` (the tensors,
not the allocator's cache); on CPU the process's own peak resident set size (``VmHWM`` on Linux), which
includes the interpreter, torch's libraries and the data, and never goes down within a process.
"""

from __future__ import annotations

import contextlib
import functools
import resource
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import torch

from spt.errors import SuiteError
from spt.sam.attention import ATTENTION_KINDS

PRECISIONS = ("fp32", "bf16", "fp16")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

F = TypeVar("F", bound=Callable[..., Any])


def check_precision(precision: str, where: str = "--precision") -> str:
    """``precision`` if it is one of :data:`PRECISIONS`, else a one-line SuiteError."""
    if precision not in PRECISIONS:
        raise SuiteError(f"{where} {precision!r}: use one of {', '.join(PRECISIONS)}")
    return precision


def check_attention(kind: str, where: str = "--attention") -> str:
    """``kind`` if it is one of :data:`spt.sam.attention.ATTENTION_KINDS`, else a SuiteError."""
    if kind not in ATTENTION_KINDS:
        raise SuiteError(f"{where} {kind!r}: use one of {', '.join(ATTENTION_KINDS)}")
    return kind


def autocast(device: torch.device | str, precision: str) -> contextlib.AbstractContextManager:
    """The autocast region of the model's forward: nothing for fp32."""
    check_precision(precision)
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=DTYPES[precision])


def grad_scaler(device: torch.device | str, precision: str) -> torch.amp.GradScaler:
    """A loss scaler that is active for fp16 only (for fp32 and bf16 its calls are no-ops)."""
    return torch.amp.GradScaler(torch.device(device).type, enabled=precision == "fp16")


def _upcast(value: Any) -> Any:
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return value.float()
    if isinstance(value, list | tuple):
        return type(value)(_upcast(v) for v in value)
    return value


@contextlib.contextmanager
def _no_autocast() -> Iterator[None]:
    with torch.autocast("cpu", enabled=False):
        if torch.cuda.is_available():
            with torch.autocast("cuda", enabled=False):
                yield
        else:
            yield


def in_fp32(function: F) -> F:
    """Run ``function`` outside autocast with its floating tensor arguments upcast to float32:
    a loss computed under bf16/fp16 autocast is still an fp32 loss (its gradient flows back
    through the casts into the lower-precision forward)."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not torch.is_autocast_enabled("cpu") and not (
            torch.cuda.is_available() and torch.is_autocast_enabled("cuda")
        ):
            return function(*args, **kwargs)  # fp32 runs: untouched, the same bits as before
        with _no_autocast():
            return function(*_upcast(args), **{k: _upcast(v) for k, v in kwargs.items()})

    return wrapper  # type: ignore[return-value]


def peak_memory(device: torch.device | str) -> dict[str, Any]:
    """``{"peak_memory_bytes": int, "peak_memory_kind": str}`` of this process so far."""
    device = torch.device(device)
    if device.type == "cuda":
        return {
            "peak_memory_bytes": int(torch.cuda.max_memory_allocated(device)),
            "peak_memory_kind": "cuda max allocated",
        }
    return {"peak_memory_bytes": peak_rss_bytes(), "peak_memory_kind": "process peak RSS"}


def peak_rss_bytes() -> int:
    """This process's own peak resident set, in bytes. On Linux ``VmHWM`` of /proc/self/status:
    ``ru_maxrss`` survives exec, so a process started by a bigger one (dvc, a benchmark) would
    report its parent's peak. Elsewhere ``ru_maxrss`` (KiB on Linux, bytes on macOS)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # "VmHWM:  123456 kB"
    except (OSError, ValueError, IndexError):
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss) * (1 if sys.platform == "darwin" else 1024)


def reset_peak_memory(device: torch.device | str) -> None:
    """Start a new CUDA peak (CPU peak RSS cannot be reset: it is the process's)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
