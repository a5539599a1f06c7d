"""Atomic file writes with the usual permissions: the lowest layer, used by every writer.

A file is written to a temp file in its own folder and renamed over the target, so a kill never
leaves a partial file. ``tempfile.mkstemp`` creates the temp file 0600; before the rename it gets
the mode a plain ``open(path, "w")`` would give (0666 minus the umask), so outputs are as
readable as the user's other files.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from spt.errors import SuiteError


def usual_mode() -> int:
    """0666 minus the process umask (read without changing it for longer than a call)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def replace_atomically(path: Path, write: Callable[[str], None]) -> None:
    """Create ``path``'s folder, call ``write(temp_path)``, then rename the temp file onto
    ``path`` with :func:`usual_mode`; on any error (or a kill between the two) the target is
    unchanged and the temp file removed. A folder that cannot be created or written to is a
    one-line SuiteError naming the file."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise SuiteError(
            f"{path}: cannot write here ({exc.strerror}); check the output folder (--out) and "
            "its permissions"
        ) from None
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, usual_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomically(path: Path, text: str) -> None:
    """``text`` (UTF-8) to ``path`` via :func:`replace_atomically`."""
    replace_atomically(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
