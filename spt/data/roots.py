"""Catching a dataset root that points at the wrong folder before anything is read."""

from __future__ import annotations

from spt.data.config import DatasetConfig
from spt.data.readers import READERS, get_reader
from spt.data.readers.base import sorted_dirs


def diagnose_root(config: DatasetConfig) -> str | None:
    """None when the root holds the configured layout, else a one-line message with the fix.

    A root the configured reader's signature accepts but that really holds a stricter layout
    (:meth:`LayoutReader.superseded_by`: MVTec AD 2 under layout mvtec) passes here, so the
    reader's own refusal, which names the layout to set, is the message the user sees."""
    reader = get_reader(config.layout)
    root = config.root
    if config.layout == "folder" or reader.looks_like(root):
        return None  # the folder layout checks its own images folder when it scans
    hints = []
    others = [
        other
        for other in READERS.values()
        if other.layout not in ("folder", config.layout)
        and type(other).looks_like is not type(reader).looks_like
        and other.looks_like(root)
        and other.superseded_by(root) is None  # the stricter layout is named instead
    ]
    if others:
        names = " or ".join(f"{o.title} (layout {o.layout})" for o in others)
        hints.append(f"it looks like {names}")
    nested = [child for child in sorted_dirs(root) if reader.looks_like(child)]
    if nested:
        hints.append(f"did you mean root: {nested[0].as_posix()}")
    elif root.parent != root and reader.looks_like(root.parent):
        hints.append(f"did you mean root: {root.parent.as_posix()}")
    hint = f" ({'; '.join(hints)})" if hints else ""
    return (
        f"{root.as_posix()}: not a {reader.title} root, expected {reader.expected}{hint}; "
        f"point data.datasets.{config.name}.root at the {reader.title} folder or fix its layout"
    )
