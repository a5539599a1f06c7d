"""Portable numerics: every entry point runs pinned, and a short pipeline gives the same bits
natively and under emulated CPUs of another vendor and instruction set (spt/numerics.py)."""

from __future__ import annotations

import json
import multiprocessing
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from spt import numerics
from spt.sam.portable import exact_sqrt

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SHORT_PIPELINE = REPO / "tests" / "crosscpu" / "short_pipeline.py"
# One AMD and one Intel model without AVX-512, both different from any CI host's own CPU path.
EMULATED_CPUS = ("EPYC", "Haswell")
REQUIRE_QEMU = "SPT_REQUIRE_QEMU"  # set by .ci/run: a missing emulator fails instead of skipping


def _env(**changes: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in changes}
    env.update({k: v for k, v in changes.items() if v is not None})
    return env


def _spt_numerics(*prefix: str, env=None) -> list[dict]:
    """`spt numerics --json` run through ``prefix``; one dict per process that printed."""
    done = subprocess.run(
        [*prefix, "numerics", "--json"],
        capture_output=True,
        text=True,
        env=env or os.environ.copy(),
        timeout=300,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def _assert_pinned(info: dict) -> None:
    assert info["mode"] == numerics.PORTABLE
    if platform.machine().lower() in ("x86_64", "amd64"):
        assert info["aten_capability"] == "DEFAULT"
        assert info["numpy_dispatch"] == "baseline"
    assert info["threads"] == numerics.DEFAULT_PORTABLE_THREADS


def test_pytest_process_is_pinned():
    _assert_pinned(numerics.describe())
    assert torch.get_num_threads() == numerics.DEFAULT_PORTABLE_THREADS


def test_spt_entry_point_is_pinned_even_if_the_caller_set_other_kernels():
    # a user's own ATEN_CPU_CAPABILITY / thread settings do not leak into portable mode
    env = _env(ATEN_CPU_CAPABILITY="avx2", OMP_NUM_THREADS="2", SPT_NUMERICS=None)
    (info,) = _spt_numerics(str(BIN / "spt"), env=env)
    _assert_pinned(info)


def test_torchrun_workers_are_pinned():
    infos = _spt_numerics(
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "spt.cli",
    )  # fmt: skip
    assert len(infos) == 2
    for info in infos:
        _assert_pinned(info)


def test_worker_processes_are_pinned():
    # prepare's decoding pool and data-loader workers: spawned children inherit the pins
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        _assert_pinned(pool.apply(numerics.describe))


@pytest.mark.skipif(
    platform.machine().lower() not in ("x86_64", "amd64"), reason="x86-64 kernels only"
)
def test_native_mode_is_the_opt_out():
    # this test process is portable: drop the pins its children would inherit
    pins = dict.fromkeys(numerics.portable_environment(1))
    env = _env(**pins, SPT_NUMERICS="native", SPT_THREADS="2")
    (info,) = _spt_numerics(str(BIN / "spt"), env=env)
    assert info["mode"] == numerics.NATIVE
    assert info["threads"] == 2
    if info["cpu_hardware_isa"] in ("AVX2", "AVX512"):
        assert info["aten_capability"] == info["cpu_hardware_isa"]


def test_bad_mode_is_one_line():
    done = subprocess.run(
        [str(BIN / "spt"), "numerics"], capture_output=True, text=True,
        env=_env(SPT_NUMERICS="fast"),
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0
    assert "$SPT_NUMERICS='fast'" in done.stderr and "portable" in done.stderr


def test_fingerprint_ignores_the_cpu_model_only_in_portable_mode():
    info = numerics.describe()
    other_cpu = {**info, "cpu_vendor": "AuthenticAMD", "cpu_model": "AMD EPYC"}
    assert numerics.mismatches(other_cpu, info) == []
    native = {**info, "mode": numerics.NATIVE}
    assert "cpu_model: " in " ".join(numerics.mismatches({**native, "cpu_model": "x"}, native))
    assert numerics.mismatches({**info, "threads": 4}, info) == ["threads: 1 -> 4"]


@pytest.mark.parametrize(
    ("cpuid", "isa", "fma"),
    [
        (
            {"AVX512F": True, "AVX2": True, "AVX": True, "SSE42": True, "FMA3": True},
            "AVX512",
            "yes",
        ),
        ({"AVX512F": False, "AVX2": True, "AVX": True, "FMA3": True}, "AVX2", "yes"),
        ({"AVX2": True, "AVX": True, "FMA3": False}, "AVX2 (no FMA)", "no"),
        ({"AVX": False, "SSE42": True, "FMA3": False}, "SSE4.2", "no"),
    ],
)
def test_the_instruction_set_and_fma_come_from_cpuid(monkeypatch, cpuid, isa, fma):
    """What the CPU says through CPUID wins over /proc/cpuinfo, which an emulator leaves as
    the host's; the FMA flag decides the portable fingerprint."""
    monkeypatch.setattr(numerics, "_cpuid_features", lambda: cpuid)
    numerics._cpu_info.cache_clear()
    try:
        info = numerics._cpu_info()
    finally:
        numerics._cpu_info.cache_clear()
    assert (info["hardware_isa"], info["fma"]) == (isa, fma)


def test_exact_sqrt_is_the_correctly_rounded_root_with_torchs_gradient():
    import numpy as np

    values = np.random.default_rng(0).random(100_000, dtype=np.float32) * 10 + 1e-6
    x = torch.from_numpy(values).requires_grad_(True)
    y = exact_sqrt(x)
    assert np.array_equal(y.detach().numpy(), np.sqrt(values))  # NumPy's root is IEEE-exact
    y.sum().backward()
    expected = 0.5 / np.sqrt(values.astype(np.float64))
    assert np.allclose(x.grad.numpy(), expected, rtol=1e-6)
    assert y.dtype == torch.float32


def _qemu() -> str:
    qemu = shutil.which("qemu-x86_64")
    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("CPU emulation of x86-64 models runs on x86-64 hosts only")
    if qemu is None:
        message = (
            "qemu-x86_64 not found (Debian/Ubuntu: apt-get install qemu-user); the cross-CPU "
            "check did not run"
        )
        if os.environ.get(REQUIRE_QEMU):
            pytest.fail(f"{message}, and ${REQUIRE_QEMU} says it must")
        pytest.skip(message)
    return qemu


def test_short_pipeline_gives_the_same_bits_on_emulated_cpus(tmp_path):
    """Pretrain + train (SPT) + evaluate, natively and as an AMD EPYC and an Intel Haswell:
    prepared masks, pretrained and trained weights, records and example masks are identical.
    About 2 minutes on 2 cores (the emulator runs torch about 15x slower)."""
    qemu = _qemu()
    env = _env(SPT_NUMERICS="portable", SPT_THREADS=None, PYTHONHASHSEED="0")
    runs = {"native": [sys.executable]}
    runs.update({cpu: [qemu, "-cpu", cpu, sys.executable] for cpu in EMULATED_CPUS})
    started = {
        name: subprocess.Popen(
            [*prefix, str(SHORT_PIPELINE), str(tmp_path / name)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            cwd=tmp_path,
        )  # fmt: skip
        for name, prefix in runs.items()
    }
    hashes = {}
    for name, process in started.items():
        output, _ = process.communicate(timeout=1800)
        assert process.returncode == 0, f"{name} run failed:\n{output[-3000:]}"
        hashes[name] = json.loads((tmp_path / name / "hashes.json").read_text())
    for name in EMULATED_CPUS:
        # the emulator really presented another CPU (CPUID; qemu-user keeps the host's
        # /proc/cpuinfo, so the model name stays the host's)
        # (on an AVX2 host the two look alike, and the comparison below still holds)
        assert hashes[name]["numerics"]["cpu_hardware_isa"] == "AVX2", hashes[name]["numerics"]
        assert hashes[name]["numerics"]["mode"] == numerics.PORTABLE
        artifacts = ("prepared_masks", "tiny_sam", "trained", "records", "examples",
                     "robustness", "corruptions")  # fmt: skip
        for artifact in artifacts:
            assert hashes[name][artifact] == hashes["native"][artifact], (
                f"{artifact} differs between this CPU and emulated {name} in portable mode"
            )
