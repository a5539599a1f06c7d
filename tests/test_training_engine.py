"""The shared training engine: deterministic order, exact resume (also after SIGKILL), DDP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from spt.errors import SuiteError
from spt.training.engine import epoch_order, sample_key
from tests.toy_training import IDS, run

SCRIPT = Path(__file__).with_name("toy_training.py")
ROOT = SCRIPT.parents[1]


def _env():
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def _equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_epoch_order_is_a_function_of_ids_not_positions():
    shuffled = IDS[::-1]
    for epoch in range(3):
        a = [IDS[i] for i in epoch_order(IDS, 0, epoch)]
        b = [shuffled[i] for i in epoch_order(shuffled, 0, epoch)]
        assert a == b
    assert epoch_order(IDS, 0, 0) != epoch_order(IDS, 0, 1)
    assert epoch_order(IDS, 0, 0) != epoch_order(IDS, 1, 0)
    assert sample_key(0, "a", 1) == sample_key(0, "a", 1) != sample_key(0, "a", 2)


def test_training_lowers_the_loss(tmp_path):
    _, result = run(tmp_path, epochs=4, batch=2)
    assert result.history[-1]["loss"] < 0.5 * result.history[0]["loss"]
    assert result.trainable_parameters == 9  # the head only: 8 weights + 1 bias
    assert [r["lr"] for r in result.history] == pytest.approx([0.05, 0.005, 0.005, 0.0005])


def test_resume_in_process_is_exact(tmp_path):
    full, _ = run(tmp_path / "full", epochs=4, batch=2)
    run(tmp_path / "cut", epochs=4, batch=2, stop_after=2)
    resumed, result = run(tmp_path / "cut", epochs=4, batch=2, resume=True)
    assert result.epochs_done == 4
    assert _equal(dict(full.named_parameters()), dict(resumed.named_parameters()))


def test_resume_refuses_other_params(tmp_path):
    run(tmp_path, epochs=2, batch=2, stop_after=1)
    with pytest.raises(SuiteError, match="other training params"):
        run(tmp_path, epochs=3, batch=2, resume=True)


def test_batch_must_divide(tmp_path):
    with pytest.raises(SuiteError, match="only 12 training images"):
        run(tmp_path, epochs=1, batch=16)


@pytest.mark.slow
def test_sigkill_then_resume_matches_uninterrupted(tmp_path):
    reference = tmp_path / "reference"
    subprocess.run([sys.executable, SCRIPT, reference, "4", "2"], env=_env(), check=True)
    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, SCRIPT, killed, "4", "2", "--sleep", "0.05"], env=_env()
    )
    state = killed / "state" / "last.pt"
    deadline = time.monotonic() + 60
    while not state.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert state.exists() and not (killed / "final.pt").exists(), "the run was not cut partway"
    subprocess.run([sys.executable, SCRIPT, killed, "4", "2", "--resume"], env=_env(), check=True)
    assert _equal(torch.load(reference / "final.pt"), torch.load(killed / "final.pt"))


@pytest.mark.slow
def test_two_processes_match_one_with_the_same_global_batch(tmp_path):
    one = tmp_path / "one"
    subprocess.run([sys.executable, SCRIPT, one, "3", "2"], env=_env(), check=True)
    two = tmp_path / "two"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    subprocess.run([*torchrun, SCRIPT, two, "3", "2"], env=_env(), check=True)
    a, b = torch.load(one / "final.pt"), torch.load(two / "final.pt")
    assert a.keys() == b.keys()
    for name in a:
        # DDP averages the two half-batch gradients; one process takes the mean over the full
        # batch: equal up to float32 summation order.
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-6)
