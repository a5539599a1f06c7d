"""`spt fetch mtd`: a local git repository stands in for the public one (no network in tests).

What arrives (native layout, dataset files only, count and hash), what is refused (a wrong
expected hash or count, a destination holding other files), the one-line offline failure, and
that nothing half-done is ever left behind. The pinned public constants are checked against
the real copy in ../shared when it is there.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from spt.cli import main
from spt.data import fetch
from spt.data.readers.mtd import MTDReader
from tests.conftest import MTD_DIR

CLASSES = {  # class -> image stems; MT_Free is the normal class
    "MT_Blowhole": ["exp1_num_1", "exp1_num_2"],
    "MT_Crack": ["exp2_num_7"],
    "MT_Free": ["exp3_num_4", "exp3_num_5", "exp3_num_6"],
}
NOT_DATASET = ["README.md", "dataset.jpg", "MT_Crack/notes.txt", "MT_Crack/Imgs/Thumbs.db"]

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def _git(*args: str, cwd: Path) -> str:
    config = ["-c", "user.name=t", "-c", "user.email=t@example.org", "-c", "commit.gpgsign=false"]
    done = subprocess.run(
        ["git", *config, *args], cwd=cwd, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def _write_tree(root: Path) -> dict[str, bytes]:
    """A tiny MTD-like tree with files that are not part of the dataset; returns the dataset
    files (relative posix path -> bytes)."""
    rng = np.random.default_rng(0)
    dataset = {}
    for name, stems in CLASSES.items():
        folder = root / name / "Imgs"
        folder.mkdir(parents=True)
        for stem in stems:
            image = rng.integers(0, 255, (12, 16), dtype=np.uint8)
            mask = np.zeros((12, 16), np.uint8)
            if name != "MT_Free":
                mask[3:8, 4:10] = 255
            Image.fromarray(image).save(folder / f"{stem}.jpg", quality=90)
            Image.fromarray(mask).save(folder / f"{stem}.png")
            for suffix in (".jpg", ".png"):
                rel = f"{name}/Imgs/{stem}{suffix}"
                dataset[rel] = (root / rel).read_bytes()
    for rel in NOT_DATASET:
        (root / rel).write_bytes(b"not part of the dataset\n")
    return dataset


@pytest.fixture(scope="module")
def public_like(tmp_path_factory) -> tuple[Path, dict[str, bytes]]:
    """A git repository standing in for the public one, and its dataset files."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    repo = tmp_path_factory.mktemp("public") / "Magnetic-tile-defect-datasets."
    dataset = _write_tree(repo)
    _git("init", "-q", str(repo), cwd=repo.parent)
    _git("add", "-A", cwd=repo)
    _git("commit", "-q", "-m", "the dataset", cwd=repo)
    return repo, dataset


def _expected_hash(files: dict[str, bytes]) -> str:
    """Computed here, independently of the suite: sha256 of `sha256sum`'s lines, sorted by path."""
    listing = "".join(f"{hashlib.sha256(files[rel]).hexdigest()}  {rel}\n" for rel in sorted(files))
    return hashlib.sha256(listing.encode()).hexdigest()


def _files_under(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr
    return lines[0]


def _nothing_left(data: Path) -> None:
    """No destination and no staging folder (or an empty data/ the fetch created)."""
    assert not data.exists() or list(data.iterdir()) == [], sorted(data.iterdir())


def test_fetches_the_dataset_files_in_native_layout(public_like, tmp_path):
    repo, dataset = public_like
    dest = tmp_path / "data" / "mtd"
    done = subprocess.run(
        [sys.executable, "-m", "spt", "fetch", "mtd", "--source", str(repo), "--dest", str(dest)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert _files_under(dest) == dataset  # native layout, the same bytes, nothing else
    assert not (dest / "README.md").exists() and not (dest / ".git").exists()
    assert sorted(p.name for p in dest.parent.iterdir()) == ["mtd"]  # no staging folder left
    out = done.stdout
    commit = _git("rev-parse", "HEAD", cwd=repo)
    assert f"fetched MTD from {repo} at commit {commit}" in out
    assert f"total: {len(dataset)} files" in out and "not copied" in out
    assert f"sha256: {_expected_hash(dataset)} (no expected hash was checked" in out
    assert "MT_Free: 3 jpg images, 3 png masks" in out and "MT_Crack: 1 jpg images" in out
    assert f"wrote {dest.as_posix()}" in out and "nox -s reproduce" in out
    assert "dvc commit data.dvc" in out
    # the suite's MTD reader reads it: every image, MT_Free as normal
    result = MTDReader().scan("mtd", dest, {})
    assert len(result.records) == sum(len(stems) for stems in CLASSES.values())
    assert sum(r.is_normal for r in result.records) == len(CLASSES["MT_Free"])
    assert all(r.mask_path is not None for r in result.records if not r.is_normal)


def test_prepare_reads_what_was_fetched(public_like, tmp_path, capsys):
    repo, _ = public_like
    dest = tmp_path / "data" / "mtd"
    assert main(["fetch", "mtd", "--source", str(repo), "--dest", str(dest)]) == 0
    params = tmp_path / "params.yaml"
    params.write_text(f"data:\n  datasets:\n    mtd: {{layout: mtd, root: {dest}}}\n")
    out = tmp_path / "prepared"
    argv = ["prepare", "--params", str(params), "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    assert "mtd: 3 defect images" in capsys.readouterr().out
    assert (out / "mtd" / "manifest.csv").is_file()


def test_the_expected_hash_and_count_are_checked(public_like, tmp_path, capsys):
    repo, dataset = public_like
    dest = tmp_path / "data" / "mtd"
    base = ["fetch", "mtd", "--source", str(repo), "--dest", str(dest)]
    assert main([*base, "--expect-sha256", "ab" * 32]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "content hash differs" in line and _expected_hash(dataset) in line
    _nothing_left(dest.parent)
    assert main([*base, "--expect-files", str(len(dataset) + 1)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert f"{len(dataset)} dataset files arrived" in line and f"has {len(dataset) + 1}" in line
    _nothing_left(dest.parent)
    right = ["--expect-sha256", _expected_hash(dataset), "--expect-files", str(len(dataset))]
    assert main([*base, *right]) == 0
    assert "(matches --expect-sha256)" in capsys.readouterr().out


def test_the_default_source_is_held_to_the_public_copy(public_like, tmp_path, capsys, monkeypatch):
    # The local stand-in as "the public source": it is not the public copy, so nothing lands.
    repo, _ = public_like
    monkeypatch.setattr(fetch, "PUBLIC_SOURCE", str(repo))
    dest = tmp_path / "data" / "mtd"
    assert main(["fetch", "mtd", "--source", str(repo), "--dest", str(dest)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "the public MTD copy has 2688" in line and "MT_Blowhole 4 (expected 230)" in line
    assert "MT_Break 0 (expected 170)" in line and "nothing written" in line
    _nothing_left(dest.parent)


@pytest.mark.parametrize("source", ["missing-repo", "file:///nonexistent/mtd"])
def test_an_unreachable_source_is_one_line_with_the_manual_way(tmp_path, source):
    data = tmp_path / "data"
    done = subprocess.run(
        [sys.executable, "-m", "spt", "fetch", "mtd", "--source", source, "--dest", f"{data}/mtd"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert done.returncode == 2 and done.stdout == ""
    line = _one_error_line(done.stderr)
    assert f"could not fetch MTD from {source} (git: " in line
    assert f"put its MT_* folders under {data}/mtd/" in line and "`spt prepare`" in line
    _nothing_left(data)
    assert not data.exists()  # the fetch created data/, and removed it again


def test_no_git_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert main(["fetch", "mtd", "--dest", str(tmp_path / "data" / "mtd")]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "git is not installed" in line and "download that repository" in line
    _nothing_left(tmp_path / "data")


def test_an_existing_destination(public_like, tmp_path, capsys):
    repo, dataset = public_like
    dest = tmp_path / "data" / "mtd"
    (dest / "MT_Crack" / "Imgs").mkdir(parents=True)
    (dest / "MT_Crack" / "Imgs" / "mine.jpg").write_bytes(b"someone else's")
    base = ["fetch", "mtd", "--source", str(repo), "--dest", str(dest)]
    assert main(base) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith(f"error: {dest}: already exists and differs") and "--force" in line
    assert _files_under(dest) == {"MT_Crack/Imgs/mine.jpg": b"someone else's"}  # untouched
    assert sorted(p.name for p in dest.parent.iterdir()) == ["mtd"]
    assert main([*base, "--force"]) == 0
    assert _files_under(dest) == dataset
    capsys.readouterr()
    assert main(base) == 0
    out = capsys.readouterr().out
    assert f"{dest.as_posix()}: already there: the same {len(dataset)} MTD files" in out
    assert _files_under(dest) == dataset
    # An empty destination folder is no dataset to keep.
    shutil.rmtree(dest)
    dest.mkdir()
    assert main(base) == 0 and _files_under(dest) == dataset


def test_a_known_hash_needs_no_download_when_the_files_are_there(public_like, tmp_path, capsys):
    # With the hash known up front (the default source's pinned one, here --expect-sha256),
    # a matching destination is recognised offline: the source is never asked.
    repo, dataset = public_like
    dest = tmp_path / "data" / "mtd"
    assert main(["fetch", "mtd", "--source", str(repo), "--dest", str(dest)]) == 0
    capsys.readouterr()
    offline = ["fetch", "mtd", "--source", "file:///nonexistent", "--dest", str(dest)]
    assert main([*offline, "--expect-sha256", _expected_hash(dataset)]) == 0
    assert "already there" in capsys.readouterr().out
    assert main([*offline, "--expect-sha256", "cd" * 32]) == 2  # refused before any fetch
    line = _one_error_line(capsys.readouterr().err)
    assert "already exists and differs from the expected values" in line
    assert _files_under(dest) == dataset


def test_an_interrupted_fetch_leaves_nothing(public_like, tmp_path, monkeypatch):
    repo, _ = public_like
    dest = tmp_path / "data" / "mtd"

    def interrupted(staging, target):
        assert staging.is_dir() and not target.exists()
        raise KeyboardInterrupt

    monkeypatch.setattr(fetch, "publish_folder", interrupted)
    with pytest.raises(KeyboardInterrupt):
        fetch.fetch_mtd(str(repo), dest)
    _nothing_left(dest.parent)


def test_a_plain_folder_is_copied(public_like, tmp_path, capsys):
    # An unpacked zip of the repository: the MT_* folders one level down, no .git.
    _, dataset = public_like
    unpacked = tmp_path / "download"
    _write_tree(unpacked / "Magnetic-tile-defect-datasets.-master")
    dest = tmp_path / "data" / "mtd"
    assert main(["fetch", "mtd", "--source", str(unpacked), "--dest", str(dest)]) == 0
    assert "(a plain folder, copied)" in capsys.readouterr().out
    assert _files_under(dest) == dataset
    assert (
        main(["fetch", "mtd", "--source", str(unpacked), "--rev", "main", "--dest", str(dest)]) == 2
    )
    assert "is a plain folder" in _one_error_line(capsys.readouterr().err)


def test_a_source_without_mtd_files_is_refused(tmp_path, capsys):
    (tmp_path / "other" / "images").mkdir(parents=True)
    dest = tmp_path / "data" / "mtd"
    assert main(["fetch", "mtd", "--source", str(tmp_path / "other"), "--dest", str(dest)]) == 2
    assert "holds no MTD files" in _one_error_line(capsys.readouterr().err)
    _nothing_left(dest.parent)


def test_bad_expected_values_are_refused(tmp_path, capsys):
    dest = str(tmp_path / "mtd")
    assert main(["fetch", "mtd", "--dest", dest, "--expect-sha256", "xyz"]) == 2
    assert "not a sha256" in _one_error_line(capsys.readouterr().err)
    assert main(["fetch", "mtd", "--dest", dest, "--expect-files", "0"]) == 2
    assert "--expect-files 0" in _one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "mtd").exists()


def test_the_hash_does_not_depend_on_listing_order(public_like, tmp_path):
    repo, dataset = public_like
    assert fetch.content_hash(repo) == _expected_hash(dataset)
    assert fetch.dataset_files(repo) == sorted(dataset)
    copy = tmp_path / "copy"
    for rel in reversed(sorted(dataset)):  # created in the other order
        (copy / rel).parent.mkdir(parents=True, exist_ok=True)
        (copy / rel).write_bytes(dataset[rel])
    assert fetch.content_hash(copy) == fetch.content_hash(repo)
    (copy / "MT_Crack" / "Imgs" / "exp2_num_7.png").write_bytes(b"changed")
    assert fetch.content_hash(copy) != fetch.content_hash(repo)


def test_the_pinned_public_values_are_those_of_the_public_copy():
    if not MTD_DIR.is_dir():
        pytest.skip(
            f"{MTD_DIR} is absent: the real MTD copy ships only with the project's machines"
        )
    tally = fetch.Tally.of(MTD_DIR)
    assert tally.sha256 == fetch.PUBLIC_SHA256
    assert tally.total == fetch.PUBLIC_FILES == sum(fetch.PUBLIC_CLASS_FILES.values())
    assert tally.class_files() == fetch.PUBLIC_CLASS_FILES
    assert tuple(tally.classes) == fetch.CLASSES


def test_help_explains_inputs_outputs_checks_and_offline():
    done = subprocess.run(
        [sys.executable, "-m", "spt", "fetch", "--help"], capture_output=True, text=True
    )
    assert done.returncode == 0
    text = " ".join(done.stdout.split())
    for words in (
        "usage: spt fetch",
        "{mtd}",
        fetch.PUBLIC_SOURCE,
        "MT_<class>/Imgs/<stem>.jpg",
        "data/mtd",
        "content hash",
        "--expect-sha256",
        "--force",
        "Offline",
        "nox -s reproduce",
    ):
        assert words in text, words
