"""Metric regression check: today's metrics against a committed reference, within a tolerance.

CI evaluates the embedded default configuration and compares its metrics with the reference
committed at ``reports/reference/embedded_metrics.json``, a JSON document::

    {
      "description": "...what the file is and how to update it...",
      "tolerance": {"iou": 0.005, "biou": 0.01},
      "metrics": [
        {"method": "zero_shot", "backbone": "tiny", "prompt_mode": "box", "stage": "final",
         "dataset": "mvtec", "iou": 0.412345, "biou": 0.201234, "n": 24},
        ...
      ]
    }

One metrics row per (method, backbone, prompt_mode, stage, dataset): the mean IoU and boundary
IoU over the records scorable on both (status ok, both finite; per seed, then averaged over
seeds) and ``n``, how many records that was. Dataset ``mean`` holds the unweighted mean over the
row's datasets (``n`` summed). Values are stored and compared at 6 decimals; a row with no
scorable record has ``null`` metrics.

The check fails when a metric differs from the reference by more than its absolute tolerance in
either direction (an unexpected improvement also means the committed numbers no longer describe
the code), when ``n`` changes (the metric would average other images), or when a row exists on
one side only. The default tolerances, 0.005 IoU and 0.01 boundary IoU, absorb floating-point
differences between CPUs and library builds, which flip a few pixels at the mask threshold;
boundary IoU scores only thin bands, so the same flips move it more. A real change of the model,
prompts or data moves the means by more. Edit ``tolerance`` in the file to change them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from spt.errors import SuiteError
from spt.reports.aggregate import MEAN_OVER_DATASETS
from spt.reports.records import check_records, scorable

KEY = ("method", "backbone", "prompt_mode", "stage", "dataset")
REFERENCE_METRICS = ("iou", "biou")
DEFAULT_TOLERANCE = {"iou": 0.005, "biou": 0.01}
DECIMALS = 6
RECORD_KEY = ["method", "backbone", "seed", "dataset", "image_id", "prompt_mode", "stage"]
DESCRIPTION = (
    "Mean IoU and boundary IoU per (method, backbone, prompt_mode, stage, dataset) of the "
    "embedded default evaluation; dataset 'mean' is the unweighted mean over datasets, n the "
    "number of scorable records. `spt regress` fails when a metric moves by more than its "
    "absolute tolerance (either direction), when n changes or when a row appears or "
    "disappears. After an intended change, rewrite it with `spt regress --update` and commit."
)
_UPDATE_HINT = "fix it or regenerate it with `spt regress --update`"
# The tolerance is set by hand and --update keeps it, so only a hand edit can repair it.
_TOLERANCE_HINT = f'edit "tolerance" in the file, e.g. {json.dumps(DEFAULT_TOLERANCE)}'


def _rounded(value) -> float | None:
    """A metric as stored: 6 decimals, None for NaN."""
    value = float(value)
    return None if math.isnan(value) else round(value, DECIMALS)


def _sort_key(row: Mapping) -> tuple:
    # the mean over datasets after the datasets it summarises
    return (*(str(row[k]) for k in KEY[:-1]), row["dataset"] == MEAN_OVER_DATASETS, row["dataset"])


def summarise_for_reference(records: pd.DataFrame) -> dict:
    """Per-image records -> ``{"metrics": [rows]}`` in the reference format (no tolerance)."""
    check_records(records)
    if records.empty:
        raise SuiteError("no evaluation records to summarise; run `spt evaluate` first")
    duplicated = records.duplicated(RECORD_KEY)
    if duplicated.any():
        first = records.loc[duplicated, RECORD_KEY].iloc[0].to_dict()
        raise SuiteError(
            f"{int(duplicated.sum())} duplicate evaluation record(s), e.g. {first}; "
            "pass each evaluation's records once"
        )
    usable = np.logical_and.reduce([scorable(records, m) for m in REFERENCE_METRICS])
    values = records[[*KEY, "seed"]].copy()
    for metric in REFERENCE_METRICS:
        values[metric] = pd.to_numeric(records[metric], errors="coerce").where(usable)
    values["n"] = usable.astype(int)

    by_seed = values.groupby([*KEY, "seed"], sort=True, dropna=False)
    per_seed = by_seed[list(REFERENCE_METRICS)].mean().join(by_seed["n"].sum())
    per_dataset = per_seed.groupby(level=list(KEY), sort=True, dropna=False).agg(
        {**dict.fromkeys(REFERENCE_METRICS, "mean"), "n": "sum"}
    )
    # a dataset without scorable records makes the mean null, not a mean over fewer datasets
    strict_mean = lambda s: s.mean(skipna=False)  # noqa: E731
    over_datasets = per_dataset.groupby(level=list(KEY[:-1]), sort=True, dropna=False).agg(
        {**dict.fromkeys(REFERENCE_METRICS, strict_mean), "n": "sum"}
    )
    over_datasets = over_datasets.assign(dataset=MEAN_OVER_DATASETS).set_index(
        "dataset", append=True
    )
    table = pd.concat([per_dataset, over_datasets]).reset_index()
    rows = [
        {
            **{k: str(row[k]) for k in KEY},
            **{m: _rounded(row[m]) for m in REFERENCE_METRICS},
            "n": int(row["n"]),
        }
        for row in table.to_dict(orient="records")
    ]
    return {"metrics": sorted(rows, key=_sort_key)}


def _checked_tolerance(tolerance, source: str) -> dict[str, float]:
    if not isinstance(tolerance, Mapping):
        raise SuiteError(
            f'{source}: "tolerance" must be an object like {json.dumps(DEFAULT_TOLERANCE)}, '
            f"got {tolerance!r}; {_TOLERANCE_HINT}"
        )
    checked = {}
    for metric in REFERENCE_METRICS:
        value = tolerance.get(metric)
        if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
            raise SuiteError(
                f'{source}: tolerance for "{metric}" must be a non-negative number, got '
                f"{value!r}; {_TOLERANCE_HINT}"
            )
        checked[metric] = float(value)
    return checked


def _checked_rows(rows, source: str) -> dict[tuple, dict]:
    """The metrics rows keyed by KEY, after checking their fields."""
    if not isinstance(rows, list):
        raise SuiteError(f'{source}: "metrics" must be a list of rows; {_UPDATE_HINT}')
    keyed = {}
    for index, row in enumerate(rows):
        where = f'{source}: "metrics" row {index}'
        if not isinstance(row, Mapping):
            raise SuiteError(f"{where} is not an object; {_UPDATE_HINT}")
        missing = [f for f in (*KEY, *REFERENCE_METRICS, "n") if f not in row]
        if missing:
            raise SuiteError(f"{where} lacks {', '.join(missing)}; {_UPDATE_HINT}")
        for metric in REFERENCE_METRICS:
            value = row[metric]
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float)
            ):
                raise SuiteError(f"{where}: {metric} must be a number or null; {_UPDATE_HINT}")
        if isinstance(row["n"], bool) or not isinstance(row["n"], int) or row["n"] < 0:
            raise SuiteError(f"{where}: n must be a non-negative integer; {_UPDATE_HINT}")
        key = tuple(str(row[k]) for k in KEY)
        if key in keyed:
            raise SuiteError(f"{where} repeats {dict(zip(KEY, key, strict=True))}; {_UPDATE_HINT}")
        keyed[key] = dict(row)
    return keyed


def load_reference(path: str | Path) -> dict:
    """Read and check a reference file; a missing or malformed file is a one-line SuiteError."""
    path = Path(path)
    if not path.is_file():
        raise SuiteError(
            f"{path}: metric reference not found; create it from current records with "
            f"`spt regress --records RECORDS --reference {path} --update`"
        )
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise SuiteError(
            f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}); {_UPDATE_HINT}"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SuiteError(f"{path}: unreadable ({exc}); {_UPDATE_HINT}") from None
    if not isinstance(document, dict):
        raise SuiteError(
            f"{path}: expected a JSON object with tolerance and metrics; {_UPDATE_HINT}"
        )
    _checked_tolerance(document.get("tolerance"), str(path))
    _checked_rows(document.get("metrics"), str(path))
    return document


def kept_tolerance(path: str | Path) -> dict[str, float]:
    """The tolerance an update of the reference at ``path`` keeps: its own, or the default when
    there is nothing to keep (no file, not a JSON object, no "tolerance" key). A malformed
    "tolerance" is a SuiteError: it was set by hand, so it is never silently reset."""
    path = Path(path)
    if not path.is_file():
        return dict(DEFAULT_TOLERANCE)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return dict(DEFAULT_TOLERANCE)  # nothing readable to keep; the update rewrites it all
    if not isinstance(document, dict) or "tolerance" not in document:
        return dict(DEFAULT_TOLERANCE)
    return _checked_tolerance(document["tolerance"], str(path))


def write_reference(
    path: str | Path, current: Mapping, tolerance: Mapping[str, float] | None = None
) -> Path:
    """Write ``current`` (from :func:`summarise_for_reference`) with ``tolerance`` to ``path``.

    ``tolerance`` None keeps the one of the reference already at ``path`` (the default for a
    new file). A reference whose tolerance is malformed is never overwritten (SuiteError),
    whatever ``tolerance`` says: the hand-set values must be repaired, not lost. One metrics
    row per line, sorted, so a reviewed update shows as a line diff.
    """
    path = Path(path)
    kept = kept_tolerance(path)
    checked = _checked_tolerance(kept if tolerance is None else tolerance, "tolerance")
    rows = sorted(_checked_rows(current.get("metrics"), "current metrics").values(), key=_sort_key)
    lines = [
        "{",
        f'  "description": {json.dumps(DESCRIPTION)},',
        f'  "tolerance": {json.dumps(checked)},',
        '  "metrics": [',
        ",\n".join(
            "    " + json.dumps({f: row[f] for f in (*KEY, *REFERENCE_METRICS, "n")})
            for row in rows
        ),
        "  ]",
        "}",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@dataclass(frozen=True)
class Difference:
    """One failing finding: a metric moved, n changed, or a row is on one side only."""

    change: str  # "moved", "n changed", "missing" (reference only) or "new" (current only)
    key: tuple
    field: str = ""
    reference: float | int | None = None
    current: float | int | None = None
    tolerance: float | None = None


def _value_text(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.{DECIMALS}f}"
    return str(value)


def _delta_text(difference: Difference) -> str:
    if difference.reference is None or difference.current is None:
        return "-"
    delta = difference.current - difference.reference
    return f"{delta:+d}" if isinstance(delta, int) else f"{delta:+.{DECIMALS}f}"


def _text_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)) for r in rows]
    head = "  ".join(cell.ljust(w) for cell, w in zip(header, widths, strict=True))
    return "\n".join(line.rstrip() for line in [head, *lines])


@dataclass(frozen=True)
class RegressionResult:
    differences: tuple[Difference, ...]
    n_compared: int  # rows present on both sides
    tolerance: dict[str, float]

    @property
    def passed(self) -> bool:
        return not self.differences

    def diff_table(self) -> str:
        """The failing findings as a fixed-width table; empty when the check passed."""
        if self.passed:
            return ""
        header = ["change", *KEY, "field", "reference", "current", "delta", "tolerance"]
        rows = [
            [
                d.change,
                *d.key,
                d.field or "-",
                _value_text(d.reference),
                _value_text(d.current),
                _delta_text(d),
                _value_text(d.tolerance),
            ]
            for d in self.differences
        ]
        return _text_table(header, rows)

    def summary(self) -> str:
        limits = ", ".join(f"{m} ±{t:g}" for m, t in self.tolerance.items())
        if self.passed:
            return f"metrics match the reference: {self.n_compared} rows within {limits}"
        return (
            f"metric regression: {len(self.differences)} finding(s) over {self.n_compared} "
            f"compared rows (tolerance {limits})"
        )

    def report(self) -> str:
        return "\n".join(part for part in (self.diff_table(), self.summary()) if part)


def _equal_within(reference, current, tolerance: float) -> bool:
    if reference is None or current is None:
        return reference is None and current is None
    # rounding the gap keeps a move of exactly the tolerance from failing on float noise
    return round(abs(current - reference), DECIMALS + 3) <= tolerance


def check_regression(current: Mapping, reference: Mapping) -> RegressionResult:
    """Compare ``current`` (``{"metrics": rows}``) with a reference document."""
    tolerance = _checked_tolerance(reference.get("tolerance"), "reference")
    ref_rows = _checked_rows(reference.get("metrics"), "reference")
    cur_rows = _checked_rows(current.get("metrics"), "current metrics")
    found = []
    for key in sorted(
        ref_rows.keys() | cur_rows.keys(), key=lambda k: _sort_key(dict(zip(KEY, k, strict=True)))
    ):
        if key not in cur_rows:
            found.append(Difference("missing", key))
            continue
        if key not in ref_rows:
            found.append(Difference("new", key))
            continue
        ref, cur = ref_rows[key], cur_rows[key]
        for metric, limit in tolerance.items():
            cur_value = None if cur[metric] is None else round(float(cur[metric]), DECIMALS)
            if not _equal_within(ref[metric], cur_value, limit):
                found.append(Difference("moved", key, metric, ref[metric], cur_value, limit))
        if ref["n"] != cur["n"]:
            found.append(Difference("n changed", key, "n", ref["n"], cur["n"]))
    n_compared = len(ref_rows.keys() & cur_rows.keys())
    return RegressionResult(tuple(found), n_compared, tolerance)
