"""`spt evaluate` over several processes (spt/harness/shards.py): 1, 2 and 3 processes give the
same records, and a run killed part-way resumes without redoing the chunks already written."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from spt.cli import main
from spt.harness.shards import Shard

ROOT = Path(__file__).resolve().parents[1]
TIMING = ["seconds", "encode_seconds"]  # wall-clock columns: the only ones that may differ
MODES = ["box", "points-1", "points-3", "coarse"]
CHUNK = "2"  # images per part: several chunks on the small twin, so every rank gets work


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def _args(prepared: Path, out: Path, *extra: str) -> list[str]:
    out.mkdir(parents=True, exist_ok=True)
    (out / "params.yaml").touch()
    return [
        "evaluate", "--params", str(out / "params.yaml"), "--method", "zero_shot",
        "--datasets", "mtd_twin", "--prepared-root", str(prepared), "--out", str(out / "ev"),
        "--prompt-modes", *MODES, "--chunk-size", CHUNK, "--no-progress", *extra,
    ]  # fmt: skip


def _torchrun(n: int) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}"]


def _records(out: Path) -> pd.DataFrame:
    frame = pd.read_parquet(out / "ev" / "zero_shot" / "tiny" / "records.parquet")
    return frame.drop(columns=TIMING)


def _examples(out: Path) -> dict:
    with np.load(out / "ev" / "zero_shot" / "tiny" / "examples.npz") as data:
        return {key: data[key] for key in data.files}


@pytest.fixture(scope="module")
def one_process(synthetic_prepared, tmp_path_factory):
    out = tmp_path_factory.mktemp("one")
    assert main(_args(synthetic_prepared, out)) == 0
    records = _records(out)
    parts = list((out / "ev" / "zero_shot" / "tiny" / "parts").glob("*.parquet"))
    assert len(parts) >= 3, "the twin must give every one of 3 ranks a chunk"
    return out, records


def test_chunks_go_round_robin_whatever_the_order():
    shards = [Shard(rank, 3) for rank in range(3)]
    owners = [[s.rank for s in shards if s.owns(i)] for i in range(7)]
    assert owners == [[0], [1], [2], [0], [1], [2], [0]]
    assert Shard(0, 2, local_rank=1).device("cuda") == "cuda:1"
    assert Shard().device("cuda") == "cuda" and Shard(1, 2).device("cpu") == "cpu"


@pytest.mark.parametrize("processes", [2, 3])
def test_several_processes_write_the_records_of_one(
    one_process, synthetic_prepared, tmp_path, processes, capfd
):
    reference_out, reference = one_process
    out = tmp_path / f"n{processes}"
    if processes == 2:  # the plain option: relaunches itself under torchrun
        argv = [
            sys.executable,
            "-m",
            "spt.cli",
            *_args(synthetic_prepared, out, "--processes", "2"),
        ]
    else:  # a torchrun launch as users write it
        argv = [*_torchrun(processes), "-m", "spt.cli", *_args(synthetic_prepared, out)]
    done = subprocess.run(argv, env=_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    pd.testing.assert_frame_equal(_records(out), reference, check_exact=True)
    a, b = _examples(out), _examples(reference_out)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    # rank 0 alone prints the end-of-run lines
    assert done.stdout.count("records: ") == 1
    assert done.stdout.count("mean IOU over 1 dataset(s): final: box ") == 1, done.stdout


def test_a_killed_run_resumes_without_redoing_finished_chunks(
    one_process, synthetic_prepared, tmp_path
):
    _, reference = one_process
    out = tmp_path / "killed"
    # one image per chunk: the kill after the first chunk leaves most of them unwritten
    argv = [*_torchrun(2), "-m", "spt.cli", *_args(synthetic_prepared, out, "--chunk-size", "1")]
    parts = out / "ev" / "zero_shot" / "tiny" / "parts"
    proc = subprocess.Popen(argv, env=_env(), start_new_session=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if len(list(parts.glob("*.parquet"))) >= 1:
            break
        time.sleep(0.002)
    os.killpg(proc.pid, signal.SIGKILL)  # the launcher and both ranks, mid-run
    proc.wait()
    assert not (parts.parent / "records.parquet").exists(), "the run finished before the kill"
    kept = {p.name: p.stat().st_mtime_ns for p in parts.glob("*.parquet")}
    assert kept, "no chunk was written before the kill"

    done = subprocess.run(argv, env=_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    after = {p.name: p.stat().st_mtime_ns for p in parts.glob("*.parquet")}
    assert all(after[name] == mtime for name, mtime in kept.items())  # not redone
    assert len(after) > len(kept)  # the unfinished ones were
    pd.testing.assert_frame_equal(_records(out), reference, check_exact=True)


def test_bad_chunk_size_and_processes_are_one_line(synthetic_prepared, tmp_path, capsys):
    assert main(_args(synthetic_prepared, tmp_path, "--chunk-size", "0")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--chunk-size 0" in err[0], err
    assert main(_args(synthetic_prepared, tmp_path, "--processes", "0")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "processes" in err[0], err


def test_rank_0_merges_only_once_every_rank_has_written(
    one_process, synthetic_prepared, tmp_path, monkeypatch
):
    """Two ranks in this process: rank 0's barrier is where rank 1 runs, so a merge that did
    not wait for the barrier would find rank 1's chunks missing."""
    import spt.harness.evaluate as evaluate_module
    import spt.harness.shards as shards_module

    _, reference = one_process
    args = _args(synthetic_prepared, tmp_path)
    me = {"shard": Shard(0, 2)}
    monkeypatch.setattr(evaluate_module, "current_shard", lambda: me["shard"])
    monkeypatch.setattr(shards_module, "current_shard", lambda: me["shard"])
    monkeypatch.setattr(evaluate_module, "join", lambda shard, device: None)
    waited = []

    parts = tmp_path / "ev" / "zero_shot" / "tiny" / "parts"
    total = len(list((one_process[0] / "ev" / "zero_shot" / "tiny" / "parts").glob("*.parquet")))
    written = []

    def barrier(shard: Shard) -> None:
        waited.append(shard.rank)
        written.append(len(list(parts.glob("*.parquet"))))
        if shard.rank == 0:  # rank 1 does its share while rank 0 waits
            me["shard"] = Shard(1, 2)
            assert main(args) == 0
            me["shard"] = Shard(0, 2)

    monkeypatch.setattr(evaluate_module, "wait_for_all", barrier)
    assert main(args) == 0
    assert waited == [0, 1]
    assert written == [(total + 1) // 2, total]  # rank 0 wrote the even chunks only
    pd.testing.assert_frame_equal(_records(tmp_path), reference, check_exact=True)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _two_nodes(command: list[str]) -> None:
    """Two torchrun launchers on this machine as two nodes of one job (c10d rendezvous), one
    process each: what `torchrun --nnodes 2 --node_rank N ...` does on two hosts."""
    port = _free_port()
    launch = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1",
        "--rdzv_backend=c10d", f"--rdzv_endpoint=127.0.0.1:{port}", "--rdzv_id=spt-test",
        "--max_restarts=0",
    ]  # fmt: skip
    nodes = [
        subprocess.Popen(
            [*launch, f"--node_rank={rank}", "-m", "spt.cli", *command],
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        for rank in range(2)
    ]
    outputs = [node.communicate(timeout=600)[0] for node in nodes]
    for node, output in zip(nodes, outputs, strict=True):
        assert node.returncode == 0, output[-3000:]


@pytest.mark.slow
def test_two_nodes_on_localhost_evaluate_as_one_process(one_process, synthetic_prepared, tmp_path):
    _, reference = one_process
    _two_nodes(_args(synthetic_prepared, tmp_path))
    pd.testing.assert_frame_equal(_records(tmp_path), reference, check_exact=True)


@pytest.mark.slow
def test_two_nodes_on_localhost_train_as_one_process(synthetic_prepared, tmp_path):
    import torch

    def train_args(out: Path) -> list[str]:
        out.mkdir(parents=True)
        (out / "params.yaml").touch()
        return [
            "train", "--params", str(out / "params.yaml"), "--method", "spt", "--backbone", "tiny",
            "--datasets", "mtd_twin", "--prepared-root", str(synthetic_prepared), "--out",
            str(out), "--no-progress", "--epochs", "2", "--batch-size", "2",
        ]  # fmt: skip

    one = tmp_path / "one"
    subprocess.run([sys.executable, "-m", "spt.cli", *train_args(one)], env=_env(), check=True)
    two = tmp_path / "two"
    _two_nodes(train_args(two))
    a, b = (torch.load(o / "spt" / "tiny" / "trained.pt")["trained"] for o in (one, two))
    assert a.keys() == b.keys()
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    # as in the one-node DDP test (tests/test_train.py): only the summation order differs
    assert worst < 1e-5, worst


def test_evaluate_stages_depend_on_every_evaluate_param_but_processes():
    """`evaluate.processes` changes no record, so DVC must not rerun evaluations for it; every
    other evaluate.* setting does change them and must be a dependency."""
    import dataclasses

    import yaml

    from spt.config.sections import EvaluateSection

    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    wanted = {f"evaluate.{f.name}" for f in dataclasses.fields(EvaluateSection)}
    wanted -= {"evaluate.processes"}
    for name in ("evaluate_zero_shot", "evaluate"):
        stage = stages[name].get("do", stages[name])
        given = {p for p in stage["params"] if str(p).startswith("evaluate")}
        assert given == wanted, f"{name}: {sorted(given ^ wanted)}"
