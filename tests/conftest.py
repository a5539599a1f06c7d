"""Shared test helpers: where ../shared is, and small models built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

# spt before torch / NumPy: importing it pins the CPU numerics (spt/numerics.py) of the tests
# and of every process they start; the thread count is fixed too.
import spt  # noqa: F401  isort: skip
from spt import numerics

numerics.apply_threads()

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = REPO_ROOT.parent / "shared"
FIXTURE_PATH = REPO_ROOT / "tests" / "fixtures" / "official_spt_tiny.pt"
MTD_DIR = SHARED_DIR / "datasets" / "mtd"


def require_shared(path: Path) -> Path:
    """Return ``path`` or skip: ../shared exists only on the project's own machines."""
    if not path.exists():
        pytest.skip(f"{path} is absent (../shared ships only with the project's machines)")
    return path


@pytest.fixture(scope="session")
def fixture_path() -> Path:
    """The official-code parity fixture, committed in tests/fixtures/: never skipped."""
    return FIXTURE_PATH


@pytest.fixture(scope="session")
def mtd_dir() -> Path:
    return require_shared(MTD_DIR)


@pytest.fixture(scope="session")
def synthetic_prepared(tmp_path_factory) -> Path:
    """A prepared synthetic MTD twin, dataset ``mtd_twin`` (train and test defect images): the
    prepared root."""
    from spt.cli import main

    root = tmp_path_factory.mktemp("synthetic")
    raw, prepared = root / "raw", root / "prepared"
    (root / "params.yaml").touch()  # empty: the built-in defaults (a named --params must exist)
    assert main(["synth", "--out", str(raw), "--layouts", "mtd", "--defects-per-type", "4"]) == 0
    code = main(
        ["prepare", "--params", str(root / "params.yaml"), "--synthetic", str(raw),
         "--out", str(prepared), "--datasets", "mtd_twin"]
    )  # fmt: skip
    assert code == 0
    return prepared


@pytest.fixture
def one_thread():
    """Torch on one thread for the test: bitwise comparisons need one fixed reduction order."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
