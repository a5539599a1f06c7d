"""The checks and labels reports need on per-image records (schema: :mod:`spt.harness.records`).

One row per (method, backbone, seed, dataset, image, prompt mode, stage). ``iou``, ``biou``
and ``dice`` are NaN unless ``status == 'ok'``; ``status == 'no_prompt'`` marks an image the
prompt mode could not prompt (the reason says why).
"""

from __future__ import annotations

import pandas as pd

from spt.errors import SuiteError
from spt.harness.metrics import METRIC_NAMES
from spt.harness.records import RECORD_COLUMNS

METRICS = METRIC_NAMES


def check_records(records: pd.DataFrame) -> None:
    """Raise a one-line SuiteError when ``records`` lacks a column reports need."""
    if not isinstance(records, pd.DataFrame):
        raise SuiteError(
            f"evaluation records must be a pandas DataFrame, got {type(records).__name__}"
        )
    missing = [c for c in RECORD_COLUMNS if c not in records.columns]
    if missing:
        raise SuiteError(
            f"evaluation records lack column(s) {', '.join(missing)}; "
            "re-run the evaluation harness to regenerate them"
        )


def check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise SuiteError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")


def method_label(method: str, stage: str, stages_of_method: int) -> str:
    """Row label of a method: the bare name, or ``name (stage)`` when it has several stages."""
    return f"{method} ({stage})" if stages_of_method > 1 else str(method)


def with_method_labels(records: pd.DataFrame) -> pd.DataFrame:
    """Copy of ``records`` with a ``label`` column: SPT's draft and final become two rows."""
    stage_counts = records.groupby("method")["stage"].nunique()
    labels = [
        method_label(m, s, int(stage_counts.get(m, 1)))
        for m, s in zip(records["method"], records["stage"], strict=True)
    ]
    return records.assign(label=labels)
