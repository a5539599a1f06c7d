"""Sessions of the suite: tests, lint, bench, reproduce, regress, rehearse, lock.

The sessions that need torch share ONE environment, ``.nox/suite`` (about 5.5 GB with the CUDA
build of torch), built once from ``constraints.txt`` and rebuilt only when ``pyproject.toml``,
``constraints.txt`` or the Python version change. ``lint`` needs only ruff and gets its own small
environment.

    python3 -m pip install "nox==2026.10.20" && python3 -m nox -s lint tests regress  # CI
    python3 -m pip install "nox==2026.10.20" && python3 -m nox -s reproduce   # the main job
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from pathlib import Path

import nox

ROOT = Path(__file__).resolve().parent
SUITE_ENV = Path(os.environ.get("SPT_SUITE_ENV", ROOT / ".nox" / "suite"))
CONSTRAINTS = ROOT / "constraints.txt"
STAMP_INPUTS = (ROOT / "pyproject.toml", CONSTRAINTS)

nox.options.sessions = ["lint", "tests"]
nox.options.reuse_existing_virtualenvs = True


def _stamp() -> str:
    digest = hashlib.sha256(sys.version.encode())
    for path in STAMP_INPUTS:
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _suite_bin(session: nox.Session) -> Path:
    """Create or refresh the shared environment and return its bin/ folder."""
    bin_dir = SUITE_ENV / ("Scripts" if os.name == "nt" else "bin")
    python = bin_dir / "python"
    stamp_file = SUITE_ENV / ".spt-stamp"
    wanted = _stamp()
    if python.exists() and stamp_file.exists() and stamp_file.read_text() == wanted:
        return bin_dir
    if not python.exists():
        session.log(f"creating the shared suite environment at {SUITE_ENV}")
        session.run(sys.executable, "-m", "venv", str(SUITE_ENV), external=True)
    session.log("installing the pinned environment (first time: several minutes, ~5.5 GB)")
    session.run(
        str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
        "-c", str(CONSTRAINTS), "-e", f"{ROOT}[dev]",
        external=True,
    )  # fmt: skip
    stamp_file.write_text(wanted)
    return bin_dir


def _run_in_suite(session: nox.Session, *args: str, **kwargs) -> None:
    bin_dir = _suite_bin(session)
    env = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        # same bits on every x86-64 CPU unless the caller opts out: SPT_NUMERICS=native nox ...
        "SPT_NUMERICS": os.environ.get("SPT_NUMERICS", "portable"),
    }
    env.update(kwargs.pop("env", {}))
    session.run(str(bin_dir / args[0]), *args[1:], external=True, env=env, **kwargs)


@nox.session(venv_backend="none")
def tests(session: nox.Session) -> None:
    """Run the test suite (pytest over tests/, then the benchmarks once each, untimed)."""
    _run_in_suite(session, "python", "-m", "pytest", "tests", *session.posargs)
    _run_in_suite(
        session, "python", "-m", "pytest", "benchmarks", "--benchmark-disable", "-q", "-p",
        "no:cacheprovider",
    )  # fmt: skip


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check, at the pinned ruff version."""
    session.install("-c", str(CONSTRAINTS), "ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(venv_backend="none")
def bench(session: nox.Session) -> None:
    """Time the benchmarks under benchmarks/ (pytest-benchmark) at tiny and vit_b (random
    weights; SPT_BENCH_BACKBONES=tiny for a quick look); each prints its ratio, and the ratios
    are in extra_info (--benchmark-json FILE keeps them). About an hour on 2 CPU cores."""
    _run_in_suite(
        session, "python", "-m", "pytest", "benchmarks", "--benchmark-only", "-s",
        "--benchmark-columns=min,median,mean,stddev,rounds", *session.posargs,
        env={"SPT_BENCH_BACKBONES": os.environ.get("SPT_BENCH_BACKBONES", "tiny,vit_b")},
    )  # fmt: skip


@nox.session(venv_backend="none")
def reproduce(session: nox.Session) -> None:
    """The main job: the DVC pipeline (`dvc repro`; extra arguments go to dvc repro), then
    `dvc plots show`, which writes the training curves and IoU plots to dvc_plots/index.html."""
    # DVC needs the raw-data folder of data.dvc to exist, even empty (a clone without data).
    (ROOT / "data").mkdir(exist_ok=True)
    _run_in_suite(session, "dvc", "repro", *session.posargs)
    _run_in_suite(session, "dvc", "plots", "show")


@nox.session(venv_backend="none")
def regress(session: nox.Session) -> None:
    """CI metric regression check: reproduce the embedded default, then compare its metrics
    with reports/reference/embedded_metrics.json (fails beyond the tolerance stated there).
    After an intended change: `nox -s regress -- --update`, review the diff, commit."""
    (ROOT / "data").mkdir(exist_ok=True)
    _run_in_suite(session, "dvc", "repro")
    _run_in_suite(
        session, "spt", "regress",
        "--records", "work/eval", "work/robust", "work/label_efficiency_eval", "work/transfer_eval",
        "--reference", "reports/reference/embedded_metrics.json", *session.posargs,
    )  # fmt: skip


@nox.session(venv_backend="none")
def rehearse(session: nox.Session) -> None:
    """A scale rehearsal before renting GPUs (`spt rehearse --help`): vit_b at 1024 px on a few
    images, every method and prompt mode, timed, with the paper protocol's cost extrapolated.
    Extra arguments go to spt rehearse (e.g. -- --backbone vit_l --device cuda)."""
    (ROOT / "data").mkdir(exist_ok=True)
    _run_in_suite(session, "spt", "rehearse", *session.posargs)


@nox.session(venv_backend="none")
def lock(session: nox.Session) -> None:
    """Re-resolve the dependencies in a scratch env and rewrite constraints.txt."""
    scratch = ROOT / ".nox" / "lock-scratch"
    shutil.rmtree(scratch, ignore_errors=True)
    session.run(sys.executable, "-m", "venv", str(scratch), external=True)
    pip = str(scratch / "bin" / "python")
    session.run(pip, "-m", "pip", "install", "--quiet", f"{ROOT}[dev]", external=True)
    frozen = session.run(
        pip, "-m", "pip", "freeze", "--exclude", "spt-suite", silent=True, external=True
    )
    header = (
        "# Exact versions installed by nox and CI (pip install -c constraints.txt). Regenerate with\n"
        "# `nox -s lock` after changing dependencies in pyproject.toml.\n"
    )
    CONSTRAINTS.write_text(header + frozen)
    shutil.rmtree(scratch, ignore_errors=True)
