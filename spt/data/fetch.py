"""Fetch a public dataset into its native layout under ``data/``: MTD (magnetic tile) for now.

``spt fetch mtd`` (spt/commands/fetch.py) calls :func:`fetch_mtd`: a shallow ``git fetch`` of
the publisher's repository (or a copy of a local folder) into a staging folder beside the
destination, only the dataset files (``MT_<class>/Imgs/<stem>.jpg`` and ``<stem>.png``) copied
into a staged data folder, the count and content hash checked, and the staged folder renamed
onto the destination (:func:`spt.artifacts.publish_folder`) only when every check passed. A
failed or interrupted fetch leaves the destination as it was and removes its staging folder.

The content hash (:func:`content_hash`) is the sha256 of the ``sha256sum`` listing of the
dataset files in sorted path order, the same as::

    cd data/mtd && find MT_*/Imgs -maxdepth 1 -type f \\( -iname '*.jpg' -o -iname '*.png' \\) \\
        | LC_ALL=C sort | xargs sha256sum | sha256sum

so it does not depend on the file system's listing order and can be checked without the suite.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from spt.artifacts import file_sha256, folder_lock, publish_folder
from spt.errors import SuiteError

#: The publisher's repository (its name ends with a dot).
PUBLIC_SOURCE = "https://github.com/abin24/Magnetic-tile-defect-datasets."

CLASS_PREFIX = "MT_"
IMAGES_FOLDER = "Imgs"
SUFFIXES = (".jpg", ".png")  # images, masks; compared in lower case, as the MTD reader does
CLASSES = ("MT_Blowhole", "MT_Break", "MT_Crack", "MT_Fray", "MT_Free", "MT_Uneven")

# The public copy, pinned: computed once with Tally.of() (dataset_files(), content_hash()) from a
# copy of the public dataset (github.com/abin24/Magnetic-tile-defect-datasets.) in its native
# layout, the one at ../shared/datasets/mtd on the project's machines: 1,344 jpg images and
# 1,344 png masks (392 defect images, 952 in MT_Free); the shell pipeline in the module's
# docstring gives the same hash. tests/test_fetch.py checks them against that copy when present.
PUBLIC_CLASS_FILES = {
    "MT_Blowhole": 230,
    "MT_Break": 170,
    "MT_Crack": 114,
    "MT_Fray": 64,
    "MT_Free": 1904,
    "MT_Uneven": 206,
}
PUBLIC_FILES = 2688
PUBLIC_SHA256 = "d2601c3c228c0b4d340c8dae4216c25798bf4ff6339d1fe13fbfb23ad1667a25"

#: git gives up on a transfer slower than LOW_SPEED_BYTES/s for LOW_SPEED_S seconds, and on
#: the whole fetch after GIT_TIMEOUT_S.
LOW_SPEED_BYTES, LOW_SPEED_S = 1000, 60
GIT_TIMEOUT_S = 3600
SHOWN_LEFT_OUT = 3  # names of left-out files shown in the summary

PUBLIC_NAME = "the public MTD copy"


def manual_advice(dest: Path) -> str:
    """What to do when the fetch cannot reach the source: the same data, by hand."""
    return (
        f"download that repository (or its zip) on a machine with internet and put its MT_* "
        f"folders under {dest.as_posix()}/ ({dest.as_posix()}/MT_Blowhole/Imgs/...), then run "
        f"`spt prepare` (or check it first: `spt fetch mtd --source <unpacked folder>`)"
    )


# --- what a dataset folder holds --------------------------------------------------------------


def dataset_files(root: Path) -> list[str]:
    """The MTD files under ``root``, as sorted relative posix paths: every regular, visible file
    ``MT_<class>/Imgs/<name>`` ending in .jpg or .png (any case), links left out. Everything
    else (README, .git, other folders) is not part of the dataset."""
    found = []
    root = Path(root)
    if not root.is_dir():
        return []
    for class_dir in root.iterdir():
        images = class_dir / IMAGES_FOLDER
        if not class_dir.name.startswith(CLASS_PREFIX) or class_dir.is_symlink():
            continue
        if not images.is_dir() or images.is_symlink():
            continue
        for path in images.iterdir():
            if path.name.startswith(".") or path.is_symlink() or not path.is_file():
                continue
            if path.suffix.lower() in SUFFIXES:
                found.append(f"{class_dir.name}/{IMAGES_FOLDER}/{path.name}")
    return sorted(found)


def all_files(root: Path) -> list[str]:
    """Every file under ``root`` except inside ``.git``, as sorted relative posix paths."""
    root = Path(root)
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d != ".git"]
        rel = Path(folder).relative_to(root)
        found.extend((rel / name).as_posix() for name in files)
    return sorted(found)


def content_hash(root: Path, files: list[str] | None = None) -> str:
    """sha256 over the sorted (relative posix path, sha256 of the file's bytes) pairs of the
    dataset files under ``root`` (:func:`dataset_files` unless ``files`` is given), written as
    ``sha256sum`` lines ("<hex>  <path>\\n"): independent of the file system's order."""
    root = Path(root)
    digest = hashlib.sha256()
    for rel in sorted(dataset_files(root) if files is None else files):
        digest.update(f"{file_sha256(root / rel)}  {rel}\n".encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class Tally:
    """The dataset files of one folder: per class (jpg images, png masks), total and hash."""

    classes: dict[str, tuple[int, int]]
    total: int
    sha256: str

    @classmethod
    def of(cls, root: Path) -> Tally:
        files = dataset_files(root)
        classes: dict[str, tuple[int, int]] = {}
        for rel in files:
            name = rel.split("/", 1)[0]
            jpg, png = classes.get(name, (0, 0))
            is_jpg = rel.lower().endswith(".jpg")
            classes[name] = (jpg + is_jpg, png + (not is_jpg))
        return cls(dict(sorted(classes.items())), len(files), content_hash(root, files))

    def class_files(self) -> dict[str, int]:
        return {name: jpg + png for name, (jpg, png) in self.classes.items()}


# --- what is expected -------------------------------------------------------------------------


@dataclass(frozen=True)
class Expectation:
    """What the fetched files must be: a total count and/or a hash (None: not checked), per
    class counts for the public copy, and what the numbers are (for messages)."""

    files: int | None
    sha256: str | None
    class_files: dict[str, int] | None
    what: str

    def matched_by(self, tally: Tally) -> bool:
        return (self.files is None or tally.total == self.files) and (
            self.sha256 is None or tally.sha256 == self.sha256
        )


def expectation(source: str, expect_sha256: str | None, expect_files: int | None) -> Expectation:
    """--expect-sha256 / --expect-files when given (only those are checked); else, for the
    public source, its pinned count, per-class counts and hash; else nothing."""
    if expect_sha256 is not None:
        expect_sha256 = expect_sha256.strip().lower()
        if len(expect_sha256) != 64 or any(c not in "0123456789abcdef" for c in expect_sha256):
            raise SuiteError(
                f"--expect-sha256 {expect_sha256!r}: not a sha256 (64 hex digits); pass the "
                "hash an earlier `spt fetch mtd` printed"
            )
    if expect_files is not None and expect_files < 1:
        raise SuiteError(f"--expect-files {expect_files}: must be at least 1")
    if expect_sha256 is not None or expect_files is not None:
        return Expectation(expect_files, expect_sha256, None, "the expected values (--expect-*)")
    if is_public(source):
        return Expectation(PUBLIC_FILES, PUBLIC_SHA256, PUBLIC_CLASS_FILES, PUBLIC_NAME)
    return Expectation(None, None, None, "nothing (no expected count or hash given)")


def is_public(source: str) -> bool:
    plain = source.strip().rstrip("/").removesuffix(".git")
    return plain.lower() == PUBLIC_SOURCE.lower()


def mismatch(tally: Tally, expected: Expectation) -> str | None:
    """What differs between ``tally`` and ``expected`` (count first, then hash), or None."""
    if expected.files is not None and tally.total != expected.files:
        text = f"{tally.total} dataset files arrived, {expected.what} has {expected.files}"
        if expected.class_files is not None:
            found, wanted = tally.class_files(), expected.class_files
            differ = [
                f"{name} {found.get(name, 0)} (expected {wanted.get(name, 0)})"
                for name in sorted(set(found) | set(wanted))
                if found.get(name, 0) != wanted.get(name, 0)
            ]
            text += f": {', '.join(differ)}" if differ else ""
        return text
    if expected.sha256 is not None and tally.sha256 != expected.sha256:
        same = f", the same {tally.total} files" if expected.files is not None else ""
        return (
            f"content hash differs{same}: sha256 {tally.sha256}, {expected.what} has "
            f"{expected.sha256}"
        )
    return None


# --- the fetch --------------------------------------------------------------------------------


@dataclass(frozen=True)
class FetchResult:
    status: str  # "published" (written to dest) or "already there" (dest already matched)
    source: str
    commit: str | None  # the git commit fetched; None for a folder source or "already there"
    tally: Tally
    left_out: list[str]  # files of the source that are not dataset files
    expected: Expectation
    dest: Path
    dest_others: int  # files in dest besides the dataset files ("already there" only)
    matched: str = ""  # what dest was found identical to ("already there" only)

    @property
    def public(self) -> bool:
        return self.tally.sha256 == PUBLIC_SHA256


def fetch_mtd(
    source: str = PUBLIC_SOURCE,
    dest: Path = Path("data/mtd"),
    rev: str | None = None,
    expect_sha256: str | None = None,
    expect_files: int | None = None,
    force: bool = False,
) -> FetchResult:
    """Bring MTD from ``source`` (a git URL or path, or a plain folder such as an unpacked zip)
    into ``dest`` in its native layout, checked against :func:`expectation`; see the module
    docstring. Every failure is a one-line SuiteError and leaves ``dest`` unchanged."""
    dest = Path(dest)
    expected = expectation(source, expect_sha256, expect_files)
    if dest.exists() and not dest.is_dir():
        raise SuiteError(f"{dest}: exists and is not a folder; remove it or choose another --dest")
    if expected.sha256 is not None and _holds_files(dest):
        # Known hash: a destination that already matches needs no download (works offline).
        there = Tally.of(dest)
        if expected.matched_by(there):
            return _already_there(source, there, expected, dest, expected.what)
        if not force:
            raise _refusal(dest, there, expected.what)
    lock_dir = dest.parent / f".{dest.name}.fetching"
    with contextlib.ExitStack() as stack:
        if not dest.parent.exists():  # a failed first fetch leaves no empty data/ either
            stack.callback(_remove_if_empty, dest.parent)
        stack.callback(_remove_if_empty, lock_dir)  # after the lock file is gone
        try:
            stack.enter_context(folder_lock(lock_dir, f"fetch {dest.name}"))
        except SuiteError:
            raise SuiteError(
                f"{dest}: another `spt fetch` is writing it now (lock in {lock_dir}); wait for "
                "it to end, or choose another --dest"
            ) from None
        _remove_stale_runs(lock_dir)  # left by killed runs: this run holds the lock
        run = lock_dir / str(os.getpid())
        stack.callback(shutil.rmtree, run, True)  # on success, failure and interrupt alike
        return _fetch_into(source, dest, rev, expected, force, run)


def _fetch_into(
    source: str, dest: Path, rev: str | None, expected: Expectation, force: bool, run: Path
) -> FetchResult:
    run.mkdir(parents=True)
    tree, commit = _source_tree(source, rev, run / "repo", dest)
    files = dataset_files(tree)
    if not files:
        raise SuiteError(
            f"{source}: holds no MTD files (MT_<class>/Imgs/<stem>.jpg and .png); is this the "
            f"MTD repository? Pass its URL or folder with --source (default {PUBLIC_SOURCE})"
        )
    staged = run / dest.name
    for rel in files:
        target = staged / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tree / rel, target)
    tally = Tally.of(staged)  # what will be published, read back from the staged copy
    chosen = set(files)
    left_out = [rel for rel in all_files(tree) if rel not in chosen]
    differs = mismatch(tally, expected)
    if differs:
        raise SuiteError(
            f"{source}: {differs}; nothing written to {dest}; if the publisher changed the data "
            "on purpose, check it and pass --expect-files/--expect-sha256 with the new values"
        )
    if _holds_files(dest):
        there = Tally.of(dest)
        fetched = f"the copy fetched from {source}"
        if there.total == tally.total and there.sha256 == tally.sha256:
            return _already_there(source, there, expected, dest, fetched)
        if not force:
            raise _refusal(dest, there, fetched)
    publish_folder(staged, dest)
    return FetchResult("published", source, commit, tally, left_out, expected, dest, 0)


def _source_tree(source: str, rev: str | None, repo: Path, dest: Path) -> tuple[Path, str | None]:
    """The folder to copy from and the commit: a plain local folder as it is (its single
    sub-folder when the MT_* folders lie one level down, as in an unpacked GitHub zip), else a
    shallow git fetch of ``rev`` (default: the source's HEAD) into ``repo``."""
    local = Path(source).expanduser()
    if local.is_file():
        raise SuiteError(
            f"{source}: is a file, not a git repository or folder; unpack it (a zip of the "
            "repository) and pass the unpacked folder with --source"
        )
    if local.is_dir() and not _is_git_repository(local):
        if rev is not None:
            raise SuiteError(f"--rev {rev}: {source} is a plain folder, not a git repository")
        subs = [p for p in local.iterdir() if p.is_dir() and not p.name.startswith(".")]
        if not dataset_files(local) and len(subs) == 1 and dataset_files(subs[0]):
            return subs[0], None
        return local, None
    is_url = "://" in source or ":" in source.split("/", 1)[0]  # https://..., git@host:...
    where = str(local.resolve()) if local.exists() or not is_url else source  # git runs in repo
    _git_fetch(source, where, rev or "HEAD", repo, dest)
    commit = _git(["rev-parse", "HEAD"], repo, source, dest).stdout.strip()
    return repo, commit


def _is_git_repository(folder: Path) -> bool:
    bare = (folder / "HEAD").is_file() and (folder / "objects").is_dir()
    return (folder / ".git").exists() or bare


def _git_fetch(source: str, where: str, rev: str, repo: Path, dest: Path) -> None:
    _git(["-c", "init.defaultBranch=main", "init", "-q", str(repo)], None, source, dest)
    slow = {"http.lowSpeedLimit": LOW_SPEED_BYTES, "http.lowSpeedTime": LOW_SPEED_S}
    speed = [arg for key, value in slow.items() for arg in ("-c", f"{key}={value}")]
    fetch = ["fetch", "-q", "--depth", "1", "--no-tags", where, rev]
    _git([*speed, *fetch], repo, source, dest)
    _git(["-c", "advice.detachedHead=false", "checkout", "-q", "FETCH_HEAD"], repo, source, dest)


def _git(args: list[str], cwd: Path | None, source: str, dest: Path):
    """Run git without prompts; any failure is one line with the manual way to get the data."""
    if shutil.which("git") is None:
        raise SuiteError(
            f"could not fetch MTD from {source}: git is not installed; install git and rerun, "
            f"or {manual_advice(dest)}"
        )
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GCM_INTERACTIVE": "never"}
    command = ["git", *([] if cwd is None else ["-C", str(cwd)]), *args]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, env=env, timeout=GIT_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        reason = f"no result within {GIT_TIMEOUT_S} s"
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
    else:
        if done.returncode == 0:
            return done
        reason = _first_error_line(done.stderr) or f"exit status {done.returncode}"
    raise SuiteError(f"could not fetch MTD from {source} (git: {reason}); {manual_advice(dest)}")


def _first_error_line(stderr: str) -> str:
    lines = [" ".join(line.split()) for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith(("fatal:", "error:"))]
    line = (errors or lines or [""])[0]
    return line.removeprefix("fatal: ").removeprefix("error: ")


# --- helpers ----------------------------------------------------------------------------------


def _holds_files(folder: Path) -> bool:
    """An existing folder with any file in it (an empty ``data/mtd`` is no dataset to keep)."""
    return folder.is_dir() and any(files for _, _, files in os.walk(folder))


def _already_there(
    source: str, there: Tally, expected: Expectation, dest: Path, matched: str
) -> FetchResult:
    others = len(all_files(dest)) - there.total
    return FetchResult("already there", source, None, there, [], expected, dest, others, matched)


def _refusal(dest: Path, there: Tally, what: str) -> SuiteError:
    held = f"{there.total} MTD files, sha256 {there.sha256[:12]}..."
    held = held if there.total else "no MTD files, other files only"
    return SuiteError(
        f"{dest}: already exists and differs from {what} ({held}); remove that folder, or pass "
        "--force to replace it"
    )


def _remove_stale_runs(lock_dir: Path) -> None:
    for entry in lock_dir.iterdir():
        if entry.name != ".lock" and entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)


def _remove_if_empty(folder: Path) -> None:
    with contextlib.suppress(OSError):
        folder.rmdir()
