"""Portable CPU numerics: the same bits on every x86-64 CPU, and a record of what a run used.

Why: CPU float kernels choose their code path by instruction set and vendor at run time (ATen's
capability dispatch, MKL, oneDNN, NumPy's SIMD dispatch, OpenBLAS). Two runs on one machine agree;
the same run on another CPU differs in the last bits, and training amplifies that into metric
differences as large as the gaps between methods.

Two modes, chosen by ``$SPT_NUMERICS`` before the first ``import spt``:

``portable`` (the default)
    Every library is pinned to its baseline x86-64 path, whose results do not depend on the CPU:
    ``ATEN_CPU_CAPABILITY=default`` (ATen's plain C++ kernels), ``MKL_CBWR=COMPATIBLE`` (MKL's
    conditional bit-wise reproducibility), ``ONEDNN_MAX_CPU_ISA=SSE41``, NumPy's dispatch
    targets above its x86-64-v2 baseline disabled and OpenBLAS on one core type. Thread counts
    are fixed (``$SPT_THREADS``, default 1) because a reduction split over threads adds in
    another order. The kernels these settings cannot pin (float32 ``torch.sqrt`` goes through
    MKL's vector maths whatever the settings) are replaced on the suite's path by exact ones:
    :mod:`spt.sam.portable` and the fused Adam of :mod:`spt.training.engine`.
``native``
    Nothing is pinned: each library takes its fastest path on this CPU (about 2x faster on the
    embedded default). Results are reproducible on the same machine only.

The settings are environment variables that torch and NumPy read when they are imported, so
:func:`configure_process` runs from ``spt/__init__.py`` before anything imports them, and child
processes (torchrun workers, DataLoader and prepare workers, DVC stages) inherit them. A process
that imported torch or NumPy before ``spt`` cannot be pinned any more; :func:`describe` then
reports the mode as not applied rather than claiming it.

This module imports neither torch nor NumPy at import time.
"""

from __future__ import annotations

import os
import platform
import re
import sys
from functools import lru_cache

MODE_ENV = "SPT_NUMERICS"
THREADS_ENV = "SPT_THREADS"
PORTABLE, NATIVE = "portable", "native"
MODES = (PORTABLE, NATIVE)
DEFAULT_PORTABLE_THREADS = 1

# NumPy 2.x on x86-64: the baseline is X86_V2 (SSE4.2); everything it dispatches above that
# (AVX2/FMA3 and AVX-512 loops, some using Intel SVML) gives other last bits than the baseline.
_NUMPY_DISPATCH_ABOVE_BASELINE = "X86_V3 X86_V4 AVX512_ICL AVX512_SPR"
_X86 = ("x86_64", "amd64", "i386", "i686", "x86")

# Set in this process by configure_process(): the mode asked for, the variables it set, and
# whether torch / NumPy were already imported (then the pins cannot take effect here).
_state: dict = {}


class NumericsError(ValueError):
    """A bad ``$SPT_NUMERICS`` / ``$SPT_THREADS`` value (one line, names the variable)."""


def requested_mode(environ=os.environ) -> str:
    value = environ.get(MODE_ENV, PORTABLE).strip().lower() or PORTABLE
    if value not in MODES:
        raise NumericsError(
            f"${MODE_ENV}={environ.get(MODE_ENV)!r} is not a numerics mode; use "
            f"{PORTABLE} (default: same bits on every x86-64 CPU) or {NATIVE} (fastest)"
        )
    return value


def requested_threads(environ=os.environ) -> int | None:
    """The fixed intra-op thread count: ``$SPT_THREADS``, or 1 in portable mode, None (library
    default) in native mode without ``$SPT_THREADS``."""
    raw = environ.get(THREADS_ENV, "").strip()
    if not raw:
        return DEFAULT_PORTABLE_THREADS if requested_mode(environ) == PORTABLE else None
    if not raw.isdigit() or int(raw) < 1:
        raise NumericsError(f"${THREADS_ENV}={raw!r} must be a whole number of threads >= 1")
    return int(raw)


def portable_environment(threads: int, machine: str | None = None) -> dict[str, str]:
    """The variables portable mode sets (before torch / NumPy are imported)."""
    env = {
        "ATEN_CPU_CAPABILITY": "default",
        "MKL_CBWR": "COMPATIBLE",
        "ONEDNN_MAX_CPU_ISA": "SSE41",
        # one core type for OpenBLAS (NumPy's matmul); Nehalem = x86-64-v2, no AVX
        "OPENBLAS_CORETYPE": "NEHALEM",
        # fixed thread counts: no library may change them at run time
        "MKL_DYNAMIC": "FALSE",
        "OMP_DYNAMIC": "FALSE",
    }
    env.update(thread_environment(threads))
    if (machine or platform.machine()).lower() in _X86:
        env["NPY_DISABLE_CPU_FEATURES"] = _NUMPY_DISPATCH_ABOVE_BASELINE
    else:  # these names exist only on x86; elsewhere the mode records what it could not pin
        for name in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "OPENBLAS_CORETYPE"):
            env.pop(name)
    return env


def thread_environment(threads: int) -> dict[str, str]:
    return {
        name: str(threads)
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
    }


def configure_process(environ=os.environ) -> None:
    """Set this process's (and its children's) numerics environment; idempotent.

    A bad ``$SPT_NUMERICS`` is not raised here (an import should not fail); :func:`check_mode`
    raises it where a command can print it as one line.
    """
    if _state:
        return
    late = sorted(m for m in ("torch", "numpy") if m in sys.modules)
    try:
        mode, threads = requested_mode(environ), requested_threads(environ)
    except NumericsError as exc:
        _state.update(mode=None, error=str(exc), late=late, overridden={})
        return
    overridden = {}
    if mode == PORTABLE:
        for name, value in portable_environment(threads).items():
            if environ.get(name, value) != value:
                overridden[name] = environ[name]
            environ[name] = value
        # torch reads OMP_NUM_THREADS only if it has not started its thread pool; this
        # covers a torch imported before spt as far as threads go
    elif threads is not None:
        environ.update(thread_environment(threads))
    _state.update(mode=mode, threads=threads, late=late, overridden=overridden, error=None)


def check_mode() -> str:
    """The mode in force; raises :class:`NumericsError` for a bad ``$SPT_NUMERICS``."""
    configure_process()
    if _state.get("error"):
        raise NumericsError(_state["error"])
    return _state["mode"]


def apply_threads() -> int:
    """Fix torch's intra-op threads to the configured count (call once torch is needed);
    returns the count in force."""
    import torch

    threads = _state.get("threads") if _state else requested_threads()
    if threads is not None and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


# --- what a run used ---------------------------------------------------------------------


def _cpuid_features() -> dict[str, bool]:
    """The instruction-set extensions the executing CPU reports through CPUID (NumPy asks it at
    import, whatever NPY_DISABLE_CPU_FEATURES switches off), so an emulator's CPU is seen as
    emulated; empty when NumPy cannot tell."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__
    except ImportError:  # a NumPy without this private table
        return {}
    return {str(name): bool(value) for name, value in __cpu_features__.items()}


@lru_cache(maxsize=1)
def _cpu_info() -> dict[str, str]:
    """CPU vendor and model (as the OS names them) and the widest vector instruction set and
    FMA, from CPUID where NumPy can ask it (/proc/cpuinfo flags otherwise).

    Under qemu-user the vendor and model stay the host's (/proc/cpuinfo is not emulated) while
    the instruction set is the emulated CPU's."""
    vendor = model = ""
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                key, value = key.strip(), value.strip()
                if key == "vendor_id" and not vendor:
                    vendor = value
                elif key == "model name" and not model:
                    model = value
                elif key == "flags" and not flags:
                    flags = set(value.split())
                if vendor and model and flags:
                    break
    except OSError:  # not Linux
        pass
    cpuid = _cpuid_features()
    if cpuid:  # the same names as /proc/cpuinfo's flags, for the few asked below
        flags = {
            flag
            for flag, feature in (
                ("avx512f", "AVX512F"),
                ("avx2", "AVX2"),
                ("avx", "AVX"),
                ("sse4_2", "SSE42"),
                ("fma", "FMA3"),
            )
            if cpuid.get(feature)
        } | {"cpuid"}  # non-empty even on a CPU with none of them: FMA is then known "no"
    model = model or platform.processor() or platform.machine()
    isa = next(
        (
            name
            for flag, name in (
                ("avx512f", "AVX512"),
                ("avx2", "AVX2"),
                ("avx", "AVX"),
                ("sse4_2", "SSE4.2"),
            )
            if flag in flags
        ),
        platform.machine(),
    )
    if isa == "AVX2" and "fma" not in flags:
        isa = "AVX2 (no FMA)"
    return {
        "vendor": vendor or "unknown",
        "model": " ".join(model.split()),
        "hardware_isa": isa,
        "fma": "yes" if "fma" in flags else ("no" if flags else "unknown"),
    }


def _library_versions() -> dict[str, str]:
    import numpy
    import torch

    config = torch.__config__.show()
    mkl = re.search(r"Math Kernel Library Version ([\d.]+)", config)
    onednn = re.search(r"MKL-DNN v([\w.]+)", config)
    libc = "-".join(part for part in platform.libc_ver() if part) or "unknown"
    return {
        "torch": str(torch.__version__),
        "numpy": numpy.__version__,
        "mkl": mkl.group(1) if mkl else "none",
        "onednn": onednn.group(1) if onednn else "none",
        "libc": libc,
        "python": platform.python_version(),
    }


def _numpy_dispatch_in_use() -> str:
    """NumPy's SIMD dispatch targets this process uses (empty list: baseline only)."""
    try:
        from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__
    except ImportError:  # another NumPy layout: say so rather than guess
        return "unknown"
    used = [name for name in __cpu_dispatch__ if __cpu_features__.get(name)]
    return " ".join(used) or "baseline"


def effective_mode() -> str:
    """``portable`` only when the pins really hold in this process, else ``native`` or
    ``portable (not applied: ...)``."""
    import torch

    mode = check_mode()
    if mode == NATIVE:
        return NATIVE
    problems = []
    if _state.get("late"):
        problems.append(f"{' and '.join(_state['late'])} imported before spt")
    is_x86 = platform.machine().lower() in _X86
    if is_x86 and torch.backends.cpu.get_cpu_capability() != "DEFAULT":
        problems.append(f"ATen uses {torch.backends.cpu.get_cpu_capability()}")
    if is_x86 and _numpy_dispatch_in_use() not in ("baseline", "unknown"):
        problems.append(f"NumPy dispatches {_numpy_dispatch_in_use()}")
    if problems:
        return f"{PORTABLE} (not applied: {'; '.join(problems)})"
    return PORTABLE


def describe(device: str = "cpu") -> dict[str, str | int]:
    """The numerics of this process, for logs, checkpoints, records and reports.

    ``device`` is the device the run computes on (``cpu``, ``cuda:0``); for CUDA the GPU model
    and CUDA version are added.
    """
    import torch

    info = {
        "mode": effective_mode(),
        "arch": platform.machine(),
        "cpu_vendor": _cpu_info()["vendor"],
        "cpu_model": _cpu_info()["model"],
        "cpu_hardware_isa": _cpu_info()["hardware_isa"],
        "cpu_fma": _cpu_info()["fma"],
        "aten_capability": torch.backends.cpu.get_cpu_capability(),
        "numpy_dispatch": _numpy_dispatch_in_use(),
        "threads": torch.get_num_threads(),
        "device": str(device),
        **_library_versions(),
    }
    if str(device).startswith("cuda") and torch.cuda.is_available():
        index = torch.device(device).index or 0
        info["gpu"] = torch.cuda.get_device_name(index)
        info["cuda"] = str(torch.version.cuda)
    return info


# The fields two runs must share for their numbers to be bit-identical. In portable mode the CPU
# model is deliberately absent (that is the point of the mode); in native mode it is part of it.
# cpu_fma stays: glibc's double-precision libm (Python's math, NumPy's float64 sin/cos/exp)
# takes other code paths on CPUs without FMA (measured under emulated Nehalem), and a libc of
# another version may round those functions differently.
_MATCH_FIELDS = (
    "mode", "arch", "cpu_fma", "device", "threads", "torch", "numpy", "mkl", "onednn", "libc",
)  # fmt: skip
_NATIVE_MATCH_FIELDS = ("cpu_vendor", "cpu_model", "cpu_hardware_isa", "aten_capability")


def fingerprint(info: dict) -> dict:
    """The part of :func:`describe`'s answer that decides bit-identity."""
    fields = _MATCH_FIELDS + (() if info.get("mode") == PORTABLE else _NATIVE_MATCH_FIELDS)
    fields += tuple(k for k in ("gpu", "cuda") if k in info)
    return {k: info.get(k) for k in fields}


def mismatches(current: dict, reference: dict) -> list[str]:
    """``field: reference -> current`` for each fingerprint field that differs."""
    mine, theirs = fingerprint(current), fingerprint(reference)
    return [
        f"{k}: {theirs.get(k)} -> {mine.get(k)}"
        for k in sorted(mine.keys() | theirs.keys())
        if mine.get(k) != theirs.get(k)
    ]


def summary_line(info: dict) -> str:
    """One line for a report: ``made on <CPU> (<arch>, <ISA>), torch X, N thread(s), <device>,
    portable numerics on``."""
    where = info.get("gpu") or info.get("cpu_model")
    mode = info.get("mode", "")
    if mode == PORTABLE:
        state = "portable numerics on"
    elif mode == NATIVE:
        state = "portable numerics off (native kernels: same numbers on this CPU model only)"
    else:
        state = str(mode)
    threads = info.get("threads")
    return (
        f"made on {where} ({info.get('arch')}, {info.get('cpu_hardware_isa')}), torch "
        f"{info.get('torch')}, {threads} thread{'s' if threads != 1 else ''}, "
        f"{info.get('device')}, {state}"
    )
