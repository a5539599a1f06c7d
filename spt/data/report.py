"""The prepare report: counts per category and defect type, and every file's issue.

Saved per dataset as ``<prepared>/<dataset>/report.json`` and for the whole run as
``<prepared>/prepare_report.json`` and ``prepare_report.md``.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field

from spt.data.issues import ACTIONS, Issue

STATUSES = ("prepared", "missing", "failed")
COUNT_FIELDS = ("found", "in_manifest", "train", "test")


@dataclass
class DatasetReport:
    name: str
    layout: str
    root: str
    status: str = "prepared"
    error: str = ""
    seconds: float = 0.0
    manifest: str = ""
    # counts[category][defect_type] = {found, in_manifest, train, test}
    counts: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)
    issues: list[Issue] = field(default_factory=list)

    def count(self, category: str, defect_type: str, what: str) -> None:
        cell = self.counts.setdefault(category, {}).setdefault(
            defect_type, dict.fromkeys(COUNT_FIELDS, 0)
        )
        cell[what] += 1

    def totals(self) -> dict[str, int]:
        totals: Counter[str] = Counter()
        for types in self.counts.values():
            for defect_type, cell in types.items():
                kind = "normal" if defect_type == "good" else "defect"
                for what, value in cell.items():
                    totals[f"{what}_{kind}"] += value
        for issue in self.issues:
            totals[issue.action] += 1
        return {key: totals[key] for key in sorted(totals)}

    @classmethod
    def from_dict(cls, entry: dict) -> DatasetReport:
        """A report as :meth:`as_dict` (or a saved report.json entry) wrote it."""
        return cls(
            name=str(entry["dataset"]),
            layout=str(entry["layout"]),
            root=str(entry["root"]),
            status=str(entry["status"]),
            error=str(entry.get("error", "")),
            seconds=float(entry.get("seconds", 0.0)),
            manifest=str(entry.get("manifest", "")),
            counts={
                c: {t: {k: int(v) for k, v in cell.items()} for t, cell in types.items()}
                for c, types in entry.get("counts", {}).items()
            },
            issues=[Issue(**issue) for issue in entry.get("issues", [])],
        )

    def as_dict(self) -> dict:
        ordered = sorted(self.issues, key=lambda i: (ACTIONS.index(i.action), i.kind, i.path))
        return {
            "dataset": self.name,
            "layout": self.layout,
            "root": self.root,
            "status": self.status,
            "error": self.error,
            "seconds": round(self.seconds, 3),
            "manifest": self.manifest,
            "totals": self.totals(),
            "counts": {c: dict(sorted(t.items())) for c, t in sorted(self.counts.items())},
            "issues": [issue.as_dict() for issue in ordered],
        }


def to_json(reports: list[DatasetReport]) -> str:
    # Timings differ run to run; the saved report stays byte-stable without them.
    body = []
    for report in reports:
        entry = report.as_dict()
        entry.pop("seconds")
        body.append(entry)
    return json.dumps({"datasets": body}, indent=2) + "\n"


def to_markdown(reports: list[DatasetReport], seed: int, fraction: float) -> str:
    lines = [
        "# Prepare report",
        "",
        f"Split protocol: seed {seed}, train fraction {fraction} of defect images per stratum "
        "(see docs/data.md).",
        "",
        "| dataset | status | defect found | defect in manifest | train / test defect | "
        "normal in manifest | skipped | repaired | excluded | ignored | warnings |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for report in reports:
        t = report.totals()
        lines.append(
            f"| {report.name} | {report.status} | {t.get('found_defect', 0)} | "
            f"{t.get('in_manifest_defect', 0)} | {t.get('train_defect', 0)} / "
            f"{t.get('test_defect', 0)} | {t.get('in_manifest_normal', 0)} | "
            f"{t.get('skipped', 0)} | {t.get('repaired', 0)} | {t.get('excluded', 0)} | "
            f"{t.get('ignored', 0)} | {t.get('warning', 0)} |"
        )
    for report in reports:
        lines += ["", f"## {report.name} ({report.layout}, `{report.root}`): {report.status}", ""]
        if report.error:
            lines += [f"**{report.error}**", ""]
        if report.counts:
            lines += [
                "| category | defect type | found | in manifest | train | test |",
                "|---|---|---|---|---|---|",
            ]
            for category, types in sorted(report.counts.items()):
                for defect_type, cell in sorted(types.items()):
                    lines.append(
                        f"| {category} | {defect_type} | {cell['found']} | "
                        f"{cell['in_manifest']} | {cell['train']} | {cell['test']} |"
                    )
            lines.append("")
        for issue in sorted(report.issues, key=lambda i: (ACTIONS.index(i.action), i.path)):
            lines.append(f"- {issue.line()}")
    return "\n".join(lines) + "\n"
