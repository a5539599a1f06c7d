"""Saved checkpoints are byte-stable (equal content, equal bytes), and every writer gives its
files the user's umask (not mkstemp's 0600)."""

from __future__ import annotations

import hashlib
import os
import re
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch

from spt.artifacts import (
    read_examples,
    replace_atomically,
    save_examples,
    save_torch,
    write_text_atomically,
)
from spt.data.manifest import MANIFEST_COLUMNS, write_manifest
from spt.errors import SuiteError
from spt.harness.records import write_records
from spt.pretrain.train import write_json_atomic

ROOT = Path(__file__).resolve().parents[1]


def _content() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {"w": torch.rand(64, 8, generator=generator), "b": torch.arange(5)}


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_equal_content_gives_equal_bytes(tmp_path):
    first, second = tmp_path / "a" / "x.pth", tmp_path / "b" / "x.pth"
    save_torch(_content(), first)
    save_torch(_content(), second)
    assert _sha(first) == _sha(second)
    assert zipfile.ZipFile(first).testzip() is None  # CRCs still right
    loaded = torch.load(first, weights_only=True)
    assert all(torch.equal(loaded[k], v) for k, v in _content().items())


def test_other_content_gives_other_bytes(tmp_path):
    save_torch(_content(), tmp_path / "x.pth")
    save_torch({**_content(), "b": torch.arange(6)}, tmp_path / "y.pth")
    assert _sha(tmp_path / "x.pth") != _sha(tmp_path / "y.pth")


WRITERS = {
    "checkpoint": lambda path: save_torch(_content(), path),
    "manifest": lambda path: write_manifest(
        pd.DataFrame([dict.fromkeys(MANIFEST_COLUMNS, "x")]), path
    ),
    "prepare report": lambda path: write_text_atomically(path, "{}\n"),
    "pretrain log": lambda path: write_json_atomic({"a": 1}, path),
    "examples": lambda path: save_examples({"a|box|final": np.ones((3, 5), bool)}, path),
    "records": lambda path: write_records(pa.table({"x": [1]}), path),
}


@pytest.mark.parametrize("writer", sorted(WRITERS))
@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_mode_follows_the_umask(tmp_path, umask, writer):
    previous = os.umask(umask)
    try:
        WRITERS[writer](tmp_path / "out" / "file")
    finally:
        os.umask(previous)
    assert (tmp_path / "out" / "file").stat().st_mode & 0o777 == 0o666 & ~umask
    assert os.listdir(tmp_path / "out") == ["file"]  # no temp file left


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp_file(tmp_path):
    target = tmp_path / "file"
    target.write_text("old")

    def failing(tmp: str) -> None:
        with open(tmp, "w") as handle:
            handle.write("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        replace_atomically(target, failing)
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["file"]


def test_an_unwritable_folder_is_a_one_line_error(tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder should be")
    with pytest.raises(SuiteError, match=r"blocker/x\.json: cannot write here .*--out"):
        write_json_atomic({}, blocker / "x.json")


def test_examples_round_trip(tmp_path):
    kept = {"a|box|final": np.eye(3, 7, dtype=bool), "b|coarse|draft": np.zeros((2, 9), bool)}
    save_examples(kept, tmp_path / "examples.npz")
    back = read_examples(tmp_path / "examples.npz")
    assert sorted(back) == sorted(kept)
    assert all(np.array_equal(back[k], v) for k, v in kept.items())


def test_files_are_written_in_one_place():
    # Every writer goes through spt.artifacts.replace_atomically; a second temp-and-rename
    # elsewhere would drift from it (the mode, the clean-up, the one-line error).
    root = Path(__file__).resolve().parent.parent
    offenders = []
    for path in sorted([*(root / "spt").rglob("*.py"), *(root / "baselines").rglob("*.py")]):
        if path.name == "artifacts.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"\b(mkstemp|NamedTemporaryFile|os\.replace)\(", line):
                offenders.append(f"{path.relative_to(root)}:{number}")
    # the one exception renames a damaged cache file aside; it writes nothing
    assert offenders == ["spt/harness/evaluate.py:" + str(_set_aside_line())]


def test_every_output_file_goes_through_the_atomic_writer():
    """Issue #14: a full disk left significance.md truncated, a kill a 0-byte figure, and
    `spt regress --update` an invalid reference. Every direct write call must write the
    writer's temp file (its line names ``tmp``); the synthetic twins are the one exception:
    each is written into a new hidden folder and renamed into place when complete
    (spt.artifacts.publish_folder), so a file of an unfinished twin is never seen."""
    root = Path(__file__).resolve().parent.parent
    writes = re.compile(
        r"\.(write_text|write_bytes|savefig|save|to_parquet)\(|open\([^)]*\"w\""
        r"|\.to_csv\((?!index|lineterminator|handle)"  # to_csv() without a path returns text
    )
    offenders = []
    for path in sorted([*(root / "spt").rglob("*.py"), *(root / "baselines").rglob("*.py")]):
        if path.name == "artifacts.py" or path.name == "synthetic.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            in_memory = ".save(buffer," in line  # encoding into an io.BytesIO, not a file
            direct = writes.search(line) and "_atomically" not in line and "tmp" not in line
            direct = direct and not in_memory
            if direct and not line.lstrip().startswith("#"):
                offenders.append(f"{path.relative_to(root)}:{number}: {line.strip()}")
    assert offenders == [], offenders


def _set_aside_line() -> int:
    import inspect

    from spt.harness import evaluate

    lines, start = inspect.getsourcelines(evaluate._set_aside)
    return start + next(i for i, line in enumerate(lines) if "os.replace(" in line)


def test_a_folder_is_written_by_one_run_at_a_time(tmp_path):
    """Issue #14: two `spt evaluate` runs on one --out mixed their files. The second run gets
    one line naming the first; the lock goes with the block (and with a killed process)."""
    import subprocess
    import sys
    import textwrap

    from spt.artifacts import folder_lock

    folder = tmp_path / "out"
    with folder_lock(folder, "evaluate"):
        other = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(f"""
                from pathlib import Path
                from spt.artifacts import folder_lock
                from spt.errors import SuiteError
                try:
                    with folder_lock(Path({str(folder)!r}), "evaluate"):
                        print("got it")
                except SuiteError as exc:
                    print(exc)
            """)],
            capture_output=True, text=True, check=True, cwd=ROOT,
        )  # fmt: skip
        assert "is writing here" in other.stdout and f"(pid {os.getpid()})" in other.stdout
    assert not (folder / ".lock").exists()  # outputs stay as the command wrote them
    with folder_lock(folder, "report"):  # free again
        pass


def test_prepare_refuses_a_folder_another_run_is_writing(tmp_path, capsys):
    from spt.artifacts import folder_lock
    from spt.cli import main

    (tmp_path / "params.yaml").touch()
    params = str(tmp_path / "params.yaml")
    assert main(["synth", "--out", str(tmp_path / "raw"), "--layouts", "mtd"]) == 0
    capsys.readouterr()
    prepared = tmp_path / "prepared"
    with folder_lock(prepared, "prepare"):
        argv = ["prepare", "--params", params, "--synthetic", str(tmp_path / "raw"),
                "--out", str(prepared)]  # fmt: skip
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "`spt prepare (pid" in err[0] and "is writing here" in err[0]
    assert not (prepared / "mtd_twin").exists()


def test_a_full_disk_is_one_line_naming_the_file_and_keeps_the_old_one(tmp_path):
    """ENOSPC while the temp file is written: a SuiteError that names the target and says the
    disk is full; the earlier file is untouched and no temp file is left."""
    import errno

    from spt.artifacts import replace_atomically
    from spt.errors import SuiteError

    target = tmp_path / "significance.md"
    target.write_text("earlier report\n")

    def fills_the_disk(tmp: str) -> None:
        Path(tmp).write_text("half")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(SuiteError, match=r"significance\.md: not written, the disk is full"):
        replace_atomically(target, fills_the_disk)
    assert target.read_text() == "earlier report\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["significance.md"]
