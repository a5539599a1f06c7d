"""Running the command-line tools the suite drives (git, dvc) from tests: found next to this
interpreter first (the suite environment installs dvc there), with a fixed git identity so
commits work on a clean CI machine."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@t",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@t",
}


def tool(name: str) -> str:
    """The path of ``name``; skips the test when it is not installed."""
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if not found:
        pytest.skip(f"`{name}` is not installed in this environment (nox -s tests installs it)")
    return found


def run_tool(*argv: str, cwd: Path, timeout: int = 900) -> str:
    """Run ``argv`` in ``cwd`` with portable numerics and this interpreter's bin/ first on PATH;
    return its stdout, failing the test with the tail of both streams when it exits non-zero."""
    env = {**os.environ, **GIT_IDENTITY, "SPT_NUMERICS": "portable", "PYTHONUNBUFFERED": "1"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    done = subprocess.run(
        list(argv), cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, (
        f"{' '.join(argv)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    )
    return done.stdout
