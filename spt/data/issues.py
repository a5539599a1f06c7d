"""Report entries: every file the prepare step skipped, repaired, excluded or ignored, and why."""

from __future__ import annotations

from dataclasses import asdict, dataclass

# What happened to the file. "skipped": unusable, not in the manifest. "repaired": in the
# manifest after a documented conversion. "excluded": readable but kept out of the defect set
# (empty mask on a defect image). "ignored": a file the layout does not use (orphan mask...).
# "warning": in the manifest, but worth a look (same pixels on both sides of the split).
ACTIONS = ("skipped", "repaired", "excluded", "ignored", "warning")


@dataclass(frozen=True)
class Issue:
    """One line of the prepare report: ``path: reason; fix``."""

    action: str
    kind: str  # short machine-readable cause, e.g. "missing_mask", "empty_mask"
    path: str
    reason: str
    fix: str = ""

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"unknown issue action {self.action!r}")

    def line(self) -> str:
        text = f"{self.action} {self.path}: {self.reason}"
        return f"{text}; {self.fix}" if self.fix else text

    def as_dict(self) -> dict[str, str]:
        return asdict(self)
