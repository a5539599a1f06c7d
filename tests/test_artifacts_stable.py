"""Saved checkpoints are byte-stable (equal content, equal bytes), and every writer gives its
files the user's umask (not mkstemp's 0600)."""

from __future__ import annotations

import hashlib
import os
import zipfile

import pandas as pd
import pytest
import torch

from spt.atomic import replace_atomically
from spt.data.manifest import MANIFEST_COLUMNS, write_manifest
from spt.data.report import write_text_atomic
from spt.errors import SuiteError
from spt.pretrain.train import write_json_atomic
from spt.training.engine import atomic_save


def _content() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {"w": torch.rand(64, 8, generator=generator), "b": torch.arange(5)}


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_equal_content_gives_equal_bytes(tmp_path):
    first, second = tmp_path / "a" / "x.pth", tmp_path / "b" / "x.pth"
    atomic_save(_content(), first)
    atomic_save(_content(), second)
    assert _sha(first) == _sha(second)
    assert zipfile.ZipFile(first).testzip() is None  # CRCs still right
    loaded = torch.load(first, weights_only=True)
    assert all(torch.equal(loaded[k], v) for k, v in _content().items())


def test_other_content_gives_other_bytes(tmp_path):
    atomic_save(_content(), tmp_path / "x.pth")
    atomic_save({**_content(), "b": torch.arange(6)}, tmp_path / "y.pth")
    assert _sha(tmp_path / "x.pth") != _sha(tmp_path / "y.pth")


WRITERS = {
    "checkpoint": lambda path: atomic_save(_content(), path),
    "manifest": lambda path: write_manifest(
        pd.DataFrame([dict.fromkeys(MANIFEST_COLUMNS, "x")]), path
    ),
    "prepare report": lambda path: write_text_atomic(path, "{}\n"),
    "pretrain log": lambda path: write_json_atomic({"a": 1}, path),
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
