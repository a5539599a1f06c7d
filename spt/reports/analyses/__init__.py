"""The analyses beyond the anchors (docs/analyses.md), one module each; the shared reading,
statistics and figure code is :mod:`spt.reports.analyses.common`."""

from spt.reports.analyses.common import StatsSettings
from spt.reports.analyses.label_efficiency import label_efficiency_report
from spt.reports.analyses.robustness import robustness_report
from spt.reports.analyses.transfer import transfer_report

__all__ = [
    "StatsSettings",
    "label_efficiency_report",
    "robustness_report",
    "transfer_report",
]
