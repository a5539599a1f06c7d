"""Metric regression check: today's metrics against a committed reference.

CI evaluates the embedded default configuration and compares its metrics with the reference
committed at ``reports/reference/embedded_metrics.json``, a JSON document::

    {
      "description": "...what the file is and how to update it...",
      "made_on": "made on <CPU> (x86_64, AVX2), torch 2.x, 1 thread, cpu, portable numerics on",
      "numerics": {"mode": "portable", "arch": "x86_64", "cpu_fma": "yes", ...},
      "seeds": [0, 1, 2],
      "tolerance": {"iou": 0.005, "biou": 0.01},
      "metrics": [
        {"method": "zero_shot", "backbone": "tiny", "prompt_mode": "box", "stage": "final",
         "dataset": "mvtec", "iou": 0.412345, "biou": 0.201234, "n": 72,
         "seeds": {"0": {"iou": 0.41, "biou": 0.2, "n": 24}, "1": {...}, "2": {...}}},
        ...
      ]
    }

One metrics row per (method, backbone, prompt_mode, stage, dataset), one row per line so an
update shows as a line diff. Per seed: the mean IoU and boundary IoU over the records scorable
on both (status ok, both finite) and ``n``, how many records that was. The row's ``iou`` /
``biou`` are the means over seeds and its ``n`` the sum over seeds. Dataset ``mean`` holds the
unweighted mean over the row's datasets (per seed; ``n`` summed; null when a dataset has no
scorable record). Values are stored and compared at 6 decimals. ``numerics`` is
:func:`spt.numerics.describe` of the records the reference was made from (read from their
files; all must share one :func:`spt.numerics.fingerprint`) and ``made_on`` its one-line
summary.

The check runs in one of two modes, chosen by the numerics of the current records (read from
their files; all must share one fingerprint):

tight (bit-identical numerics: the fingerprints are equal)
    The run should reproduce the reference's numbers for the same seeds, so each row's mean
    over the current run's seeds is compared with the mean of the reference's per-seed values
    for those same seeds, within the absolute ``tolerance`` of the file (defaults 0.005 IoU,
    0.01 boundary IoU). Every current seed must be in the reference.
spread (other or unknown numerics: another CPU model in native mode, a CPU without FMA,
    other library builds, records written without numerics)
    Training amplifies last-bit differences into metric differences as large as the effect of
    another seed, so bit-for-bit comparison is meaningless. Each row's current mean is compared
    with the mean of all the reference's per-seed values within
    ``max(tolerance, k * pooled_sd)``, ``k = spread_k(values compared, reference seeds)``.
    ``pooled_sd`` is the seed-to-seed standard deviation of the metric pooled over every row of
    the same (record set, backbone, dataset): all methods, stages and prompt modes, the root of
    the mean of the rows' sample variances (ddof=1); the unweighted mean over datasets (dataset
    ``mean``) is its own group. Needs a reference of at
    least two seeds (``dvc exp run -S 'pipeline.seeds=[0,1,2]'``, then ``spt regress --update``).

Why so wide a pool: a training seed moves all prompt modes of one trained model together, so
pooling a method's prompt modes adds almost no information: one (method, dataset) from three
seeds has about 2 degrees of freedom however many modes are pooled, and its sd can come out
several times too small. Measured: the embedded default run in native mode (AVX-512, 2 threads)
against this reference gave 8 failing values out of 588 when the pool was a (method, dataset)'s
prompt modes, all of them adapter on mtd_twin, whose three seeds happened to agree (z up to
6.9); pooled over a dataset's methods as here, the same run had 0 at k=4 and at k=5.

Why k grows with the number of values compared (:func:`spread_k`): across a dataset's six
method-stages the pooled sd has about ``SPREAD_DF = 12`` degrees of freedom, and for a run that
behaves like one more seed (current minus reference mean has sd ``sd * sqrt(1 + 1/R)``, R
reference seeds) one value exceeds ``k`` pooled sd with probability
``P(|t_12| > k / sqrt(1 + 1/R))``: about 0.1% at k=5 and R=3. That is fine for a few hundred
values and not for thousands: with the analyses' rows the embedded default compares 3288
values, and a native run on this project's Intel Xeon (AVX-512, 2 threads) failed 6 of them at
k=5 (all adapter, z up to 6.3; one a main-evaluation row). So ``k`` is the Bonferroni bound that
keeps the chance of any failing value, for a platform that behaves like another seed, at
``SPREAD_ALPHA = 5%``: ``k = t_12^-1(1 - alpha / (2 N)) * sqrt(1 + 1/R)`` for N values compared
(never below ``SPREAD_K = 5``): 6.7 for the 588 main values, 8.0 for all 3288. The values are
correlated, so this is conservative. The price: in spread mode a real regression fails only when
it moves a value by more than about k seed sd of its dataset; tight mode (portable numerics,
CI) is unaffected, and n, missing and new rows are compared exactly in both modes.

Record sets: the analyses' evaluations (``spt robustness``, the label-efficiency and transfer
evaluate stages) score the same methods, prompt modes and images as the main one, in folders of
their own (``work/robust/seed0/spt/tiny/images/jpeg-3``). ``spt regress`` keeps them apart by
prefixing their prompt modes with the ``--records`` folder's name and the sub-folder
(:func:`variant_of`, :func:`labelled`): ``robust/images/jpeg-3/box``, ``robust/prompts/
box+shift0.1``, ``label_efficiency_eval/k1/box``, ``transfer_eval/without_mtd_twin/box``. The
folder's name is the row's record set (the main evaluation's is ""); a reference row is expected
only when its record set is among the records checked, and the rows of the others are counted
on a last line, so the main evaluation can still be checked alone.

The check also fails when ``n`` changes (the metric would average other images) or when a row
exists on one side only; a reference row counts as expected when it has a value for one of the
current run's seeds. An unexpected improvement fails too: the committed numbers would no longer
describe the code. Edit ``tolerance`` in the file to change it; ``--update`` keeps it.

A reference in the format before per-seed values (no ``seeds`` / ``numerics``) is rejected with
a one-line error asking to regenerate it: its single mean per row can be checked neither for
the same seeds nor against a spread.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from spt.artifacts import write_text_atomically
from spt.errors import SuiteError
from spt.harness import aggregate
from spt.harness.aggregate import scorable
from spt.harness.records import check_unique
from spt.numerics import fingerprint, mismatches, summary_line
from spt.reports.aggregate import MEAN_OVER_DATASETS
from spt.reports.records import check_records

KEY = ("method", "backbone", "prompt_mode", "stage", "dataset")
REFERENCE_METRICS = ("iou", "biou")
DEFAULT_TOLERANCE = {"iou": 0.005, "biou": 0.01}
DECIMALS = 6
COMPARED_WITHIN = ["backbone", "prompt_mode"]  # rows whose headlines are compared with each other
SPREAD_K = 5  # the least k of the spread mode (spread_k)
SPREAD_ALPHA = 0.05  # chance of any failing value for a platform that behaves like another seed
SPREAD_DF = 12  # degrees of freedom assumed for a pooled seed sd (a dataset's 6 method-stages)
SPREAD_GROUP = ("backbone", "dataset")  # rows whose seed variances are pooled, per record set
MIN_SPREAD_SEEDS = 2
TIGHT, SPREAD = "tight", "spread"
# prompt modes never hold it, folder paths do: "<record set>/<variant>/<mode>" (see labelled)
VARIANT_SEPARATOR = "/"
REFERENCE_SEEDS_COMMAND = "dvc exp run -S 'pipeline.seeds=[0,1,2]'"
REGENERATE = f"regenerate it from 3 seeds: `{REFERENCE_SEEDS_COMMAND}`, then `spt regress --update`"
DESCRIPTION = (
    "Mean IoU and boundary IoU per (method, backbone, prompt_mode, stage, dataset) of the "
    "embedded default evaluation, per seed ('seeds') and averaged over seeds; dataset 'mean' "
    "is the unweighted mean over datasets, n the number of scorable records (summed over "
    "seeds). Prompt modes prefixed '<folder>/<sub-folder>/' are the analyses' evaluations "
    "(robust/, label_efficiency_eval/, transfer_eval/ below work/). 'numerics' says how the "
    "numbers were computed. `spt regress` compares the same seeds within the absolute "
    "tolerance when the numerics are bit-identical, else within "
    "max(tolerance, k x the pooled seed sd), k at least 5 and grown with the number of values "
    "compared (spt.reports.regression.spread_k); it fails when n changes or a row appears "
    "or disappears. After an intended change, rewrite it with `spt regress --update` (from 3 "
    f"seeds: `{REFERENCE_SEEDS_COMMAND}`) and commit."
)
_UPDATE_HINT = "fix it or regenerate it with `spt regress --update`"
# The tolerance is set by hand and --update keeps it, so only a hand edit can repair it.
_TOLERANCE_HINT = f'edit "tolerance" in the file, e.g. {json.dumps(DEFAULT_TOLERANCE)}'


def _rounded(value) -> float | None:
    """A metric as stored: 6 decimals, None for NaN / None."""
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else round(value, DECIMALS)


def _sort_key(row: Mapping) -> tuple:
    # the mean over datasets after the datasets it summarises
    return (*(str(row[k]) for k in KEY[:-1]), row["dataset"] == MEAN_OVER_DATASETS, row["dataset"])


def _seeds_text(seeds) -> str:
    return ", ".join(str(s) for s in seeds)


def variant_of(folder: Path, records: pd.DataFrame) -> str:
    """What distinguishes the records in ``folder`` (a path below a ``--records`` folder) from
    other evaluations of the same method: the folder less its ``seed<N>`` and
    ``<method>/<backbone>`` parts. "" for the main evaluation's ``seed0/spt/tiny``;
    ``prompts``, ``images/gaussian_noise-3``, ``k1``, ``without_mtd_twin`` for the analyses'."""
    parts = list(Path(folder).parts)
    methods, backbones = records["method"].unique(), records["backbone"].unique()
    if len(methods) == 1 and len(backbones) == 1:
        pair = [str(methods[0]), str(backbones[0])]
        for index in range(len(parts) - 1):
            if parts[index : index + 2] == pair:
                del parts[index : index + 2]
                break
    seeds = records["seed"].unique()
    if len(seeds) == 1 and f"seed{int(seeds[0])}" in parts:
        parts.remove(f"seed{int(seeds[0])}")
    return "/".join(parts)


def record_set_name(folder: Path) -> str:
    """The record set of the records below a ``--records`` folder: its name, or that of the
    nearest folder above it not named ``seed<N>`` (``work/robust/seed0`` is ``robust``)."""
    path = Path(folder).resolve()
    while re.fullmatch(r"seed[0-9]+", path.name) and path.parent != path:
        path = path.parent
    return path.name


def labelled(records: pd.DataFrame, record_set: str, variant: str) -> pd.DataFrame:
    """``records`` with ``<record_set>/<variant>/`` before their prompt modes (unchanged when
    ``variant`` is "": the main evaluation), so that the analyses' evaluations, which repeat the
    main one's methods and prompt modes, keep rows of their own."""
    if not variant:
        return records
    prefix = f"{record_set}{VARIANT_SEPARATOR}{variant}{VARIANT_SEPARATOR}"
    return records.assign(prompt_mode=prefix + records["prompt_mode"].astype(str))


def record_set_of(prompt_mode: str) -> str:
    """The record set of a row: the ``--records`` folder name its prompt mode was prefixed with
    (:func:`labelled`), or "" for the main evaluation."""
    head, separator, _ = str(prompt_mode).partition(VARIANT_SEPARATOR)
    return head if separator else ""


def record_sets_text(sets) -> str:
    return ", ".join(s or "the main evaluation" for s in sorted(sets))


def summarise_for_reference(records: pd.DataFrame) -> dict:
    """Per-image records -> ``{"seeds": [...], "metrics": [rows]}`` in the reference format
    (no tolerance, no numerics)."""
    check_records(records)
    if records.empty:
        raise SuiteError("no evaluation records to summarise; run `spt evaluate` first")
    check_unique(records)
    # a record counts when both metrics are scorable, so iou and biou share one n
    usable = np.logical_and.reduce([scorable(records, m) for m in REFERENCE_METRICS])
    values = records[[*KEY, "status"]].astype(str)
    values["seed"] = pd.to_numeric(records["seed"]).astype(int)
    for metric in REFERENCE_METRICS:
        values[metric] = pd.to_numeric(records[metric], errors="coerce").where(usable)
    values["n_usable"] = usable.astype(int)

    metrics = list(REFERENCE_METRICS)
    per_seed = aggregate.group_means(values, [*KEY[:-1], "seed", "dataset"], metrics)
    per_seed["n"] = values.groupby([*KEY[:-1], "seed", "dataset"], sort=True)["n_usable"].sum()
    per_seed = per_seed[[*metrics, "n"]]
    # per seed, the mean over the datasets of the row's backbone and prompt mode (the report's
    # rule, spt.harness.aggregate): null when the seed lacks a score on one of them
    seed_means = aggregate.mean_over_datasets(per_seed, within=COMPARED_WITHIN, metrics=metrics)
    seed_means = seed_means[[*metrics, "n"]].assign(dataset=MEAN_OVER_DATASETS)
    seed_means = seed_means.set_index("dataset", append=True)
    per_seed = per_seed.reorder_levels([*KEY, "seed"])
    seed_means = seed_means.reorder_levels([*KEY, "seed"])
    # each row as the report's tables give it: per dataset the mean over the seeds that scored
    # it, then the unweighted mean over datasets by the same rule as above
    per_dataset = per_seed.groupby(level=list(KEY), sort=True, dropna=False).agg(
        {**dict.fromkeys(metrics, "mean"), "n": "sum"}
    )
    over_datasets = aggregate.mean_over_datasets(
        per_dataset.reorder_levels([*KEY[:-1], "dataset"]), within=COMPARED_WITHIN, metrics=metrics
    )[[*metrics, "n"]]
    over_datasets = over_datasets.assign(dataset=MEAN_OVER_DATASETS).set_index(
        "dataset", append=True
    )

    per_row_seeds: dict[tuple, dict] = {}
    for table in (per_seed, seed_means):
        for index, row in zip(table.index, table.to_dict(orient="records"), strict=True):
            *key, seed = index
            per_row_seeds.setdefault(tuple(str(k) for k in key), {})[int(seed)] = {
                **{m: _rounded(row[m]) for m in REFERENCE_METRICS},
                "n": int(row["n"]),
            }
    table = pd.concat([per_dataset, over_datasets]).reset_index()
    rows = []
    for row in table.to_dict(orient="records"):
        key = tuple(str(row[k]) for k in KEY)
        seeds = per_row_seeds[key]
        rows.append(
            {
                **dict(zip(KEY, key, strict=True)),
                **{m: _rounded(row[m]) for m in REFERENCE_METRICS},
                "n": int(row["n"]),
                "seeds": {str(s): seeds[s] for s in sorted(seeds)},
            }
        )
    return {
        "seeds": sorted(int(s) for s in values["seed"].unique()),
        "metrics": sorted(rows, key=_sort_key),
    }


# --- numerics ----------------------------------------------------------------------------


def common_numerics(per_file, *, for_update: bool = False) -> dict | None:
    """The numerics shared by records files, from ``[(path, read_numerics(path)), ...]``.

    Files whose fingerprints differ are a SuiteError naming two of them. A file without
    numerics (written by an older spt) makes the whole set unknown (None) for a check; an
    update refuses it, since the reference must say how its numbers were made.
    """
    per_file = list(per_file)
    known = [(path, info) for path, info in per_file if info is not None]
    if for_update:
        unknown = [path for path, info in per_file if info is None]
        if unknown:
            raise SuiteError(
                f"{unknown[0]}: records without numerics (written by an older spt); the "
                "reference must record how its numbers were made: re-evaluate with this spt "
                "(`dvc repro --force` the eval stages) before `spt regress --update`"
            )
        mixed = [path for path, info in known if str(info.get("mode", "")).startswith("mixed")]
        if mixed:
            raise SuiteError(
                f"{mixed[0]}: records computed under mixed numerics (chunks from other runs); "
                "re-evaluate them in one run before `spt regress --update`"
            )
    for path, info in known[1:]:
        first_path, first = known[0]
        if fingerprint(info) != fingerprint(first):
            raise SuiteError(
                f"{first_path} and {path} were computed with other numerics "
                f"({'; '.join(numerics_differences(info, first))}); "
                + (
                    "make a reference from one machine and numerics mode"
                    if for_update
                    else "check the records of one evaluation setup at a time"
                )
            )
    if not known or len(known) < len(per_file):
        return None
    return dict(known[0][1])


# --- checking the document ---------------------------------------------------------------


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


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _checked_seeds(seeds, source: str) -> list[int]:
    if (
        not isinstance(seeds, list)
        or not seeds
        or not all(_is_int(s) for s in seeds)
        or len(set(seeds)) != len(seeds)
    ):
        raise SuiteError(
            f'{source}: "seeds" must be a non-empty list of distinct integer seeds, got '
            f"{seeds!r}; {_UPDATE_HINT}"
        )
    return sorted(seeds)


def _checked_numerics(numerics, source: str) -> dict:
    if (
        not isinstance(numerics, Mapping)
        or not isinstance(numerics.get("mode"), str)
        or not all(
            isinstance(v, str | int | float) and not isinstance(v, bool) or v is None
            for v in numerics.values()
        )
    ):
        raise SuiteError(
            f'{source}: "numerics" must be an object of spt.numerics.describe() values with a '
            f'"mode"; {_UPDATE_HINT}'
        )
    return dict(numerics)


def _checked_metric(value, where: str, metric: str) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise SuiteError(f"{where}: {metric} must be a number or null; {_UPDATE_HINT}")


def _checked_n(value, where: str) -> None:
    if not _is_int(value) or value < 0:
        raise SuiteError(f"{where}: n must be a non-negative integer; {_UPDATE_HINT}")


def _checked_rows(rows, source: str, seeds: list[int]) -> dict[tuple, dict]:
    """The metrics rows keyed by KEY, after checking their fields; per-seed values are
    re-keyed by integer seed."""
    if not isinstance(rows, list):
        raise SuiteError(f'{source}: "metrics" must be a list of rows; {_UPDATE_HINT}')
    known_seeds = {str(s): s for s in seeds}
    keyed = {}
    for index, row in enumerate(rows):
        where = f'{source}: "metrics" row {index}'
        if not isinstance(row, Mapping):
            raise SuiteError(f"{where} is not an object; {_UPDATE_HINT}")
        missing = [f for f in (*KEY, *REFERENCE_METRICS, "n", "seeds") if f not in row]
        if missing:
            raise SuiteError(f"{where} lacks {', '.join(missing)}; {_UPDATE_HINT}")
        for metric in REFERENCE_METRICS:
            _checked_metric(row[metric], where, metric)
        _checked_n(row["n"], where)
        per_seed = row["seeds"]
        if not isinstance(per_seed, Mapping) or not per_seed:
            raise SuiteError(
                f'{where}: "seeds" must be an object of per-seed values, e.g. '
                f'{{"0": {{"iou": 0.5, "biou": 0.4, "n": 24}}}}; {_UPDATE_HINT}'
            )
        checked_seeds = {}
        for name, value in per_seed.items():
            seed_where = f"{where} seed {name}"
            if name not in known_seeds:
                raise SuiteError(
                    f'{seed_where}: not in the top-level "seeds" {seeds}; {_UPDATE_HINT}'
                )
            if not isinstance(value, Mapping) or any(
                f not in value for f in (*REFERENCE_METRICS, "n")
            ):
                raise SuiteError(
                    f"{seed_where}: must be an object with iou, biou, n; {_UPDATE_HINT}"
                )
            for metric in REFERENCE_METRICS:
                _checked_metric(value[metric], seed_where, metric)
            _checked_n(value["n"], seed_where)
            checked_seeds[known_seeds[name]] = {f: value[f] for f in (*REFERENCE_METRICS, "n")}
        total = sum(v["n"] for v in checked_seeds.values())
        if total != row["n"]:
            raise SuiteError(
                f"{where}: n {row['n']} is not the sum of its seeds' n ({total}); {_UPDATE_HINT}"
            )
        key = tuple(str(row[k]) for k in KEY)
        if key in keyed:
            raise SuiteError(f"{where} repeats {dict(zip(KEY, key, strict=True))}; {_UPDATE_HINT}")
        keyed[key] = {**dict(row), "seeds": dict(sorted(checked_seeds.items()))}
    return keyed


def _checked_document(document: Mapping, source: str) -> tuple[list[int], dict[tuple, dict]]:
    seeds = _checked_seeds(document.get("seeds"), source)
    return seeds, _checked_rows(document.get("metrics"), source, seeds)


def load_reference(path: str | Path) -> dict:
    """Read and check a reference file; a missing or malformed file is a one-line SuiteError."""
    path = Path(path)
    if not path.is_file():
        raise SuiteError(
            f"{path}: metric reference not found; create it from current records with "
            f"`spt regress --records RECORDS --reference {path} --update` (3 seeds: "
            f"`{REFERENCE_SEEDS_COMMAND}`)"
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
    absent = [f for f in ("numerics", "made_on", "seeds") if f not in document]
    if absent:
        raise SuiteError(
            f"{path}: no {', '.join(absent)}: a reference in the old format (one mean per row, "
            f"unknown numerics) cannot be checked per seed or within a seed spread; {REGENERATE}"
        )
    _checked_numerics(document["numerics"], str(path))
    if not isinstance(document["made_on"], str) or "\n" in document["made_on"]:
        raise SuiteError(f'{path}: "made_on" must be a one-line string; {_UPDATE_HINT}')
    _checked_document(document, str(path))
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
    path: str | Path,
    current: Mapping,
    tolerance: Mapping[str, float] | None = None,
    *,
    numerics: Mapping | None,
) -> Path:
    """Write ``current`` (from :func:`summarise_for_reference`) with ``tolerance`` and the
    ``numerics`` of its records (:func:`common_numerics`) to ``path``.

    ``tolerance`` None keeps the one of the reference already at ``path`` (the default for a
    new file). A reference whose tolerance is malformed is never overwritten (SuiteError),
    whatever ``tolerance`` says: the hand-set values must be repaired, not lost. ``numerics``
    None (records of unknown numerics) is a SuiteError. One metrics row per line, sorted, so a
    reviewed update shows as a line diff.
    """
    path = Path(path)
    kept = kept_tolerance(path)
    checked = _checked_tolerance(kept if tolerance is None else tolerance, "tolerance")
    if numerics is None:
        raise SuiteError(
            "records of unknown numerics: a reference must record how its numbers were made; "
            "re-evaluate with this spt before `spt regress --update`"
        )
    numerics = _checked_numerics(numerics, "records")
    seeds, keyed = _checked_document(current, "current metrics")
    rows = sorted(keyed.values(), key=_sort_key)

    def line(row: Mapping) -> str:
        per_seed = {
            str(s): {m: _rounded(v[m]) for m in REFERENCE_METRICS} | {"n": v["n"]}
            for s, v in row["seeds"].items()
        }
        fields = {f: row[f] for f in (*KEY, *REFERENCE_METRICS, "n")}
        return "    " + json.dumps({**fields, "seeds": per_seed})

    lines = [
        "{",
        f'  "description": {json.dumps(DESCRIPTION)},',
        f'  "made_on": {json.dumps(summary_line(numerics))},',
        f'  "numerics": {json.dumps(numerics)},',
        f'  "seeds": {json.dumps(seeds)},',
        f'  "tolerance": {json.dumps(checked)},',
        '  "metrics": [',
        ",\n".join(line(row) for row in rows),
        "  ]",
        "}",
    ]
    # atomic: a full disk keeps the previous reference (and its hand-set tolerance) intact
    write_text_atomically(path, "\n".join(lines) + "\n")
    return path


@dataclass(frozen=True)
class Difference:
    """One failing finding: a metric moved, n changed, or a row is on one side only."""

    change: str  # "moved", "n changed", "missing" (reference only) or "new" (current only)
    key: tuple
    field: str = ""
    reference: float | int | None = None
    current: float | int | None = None
    tolerance: float | None = None  # the allowed difference the value was held to


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
    mode: str = TIGHT  # TIGHT or SPREAD
    note: str = ""  # spread mode: the one line saying why (printed first)
    seeds: tuple[int, ...] = ()  # the current run's seeds
    reference_seeds: tuple[int, ...] = ()
    checked_sets: tuple[str, ...] = ()  # record sets compared ("" the main evaluation)
    unchecked: tuple[tuple[str, int], ...] = ()  # (record set, reference rows) not given
    k: float = SPREAD_K  # spread mode: the multiple of the pooled sd allowed (spread_k)
    n_values: int = 0  # metric values compared

    @property
    def passed(self) -> bool:
        return not self.differences

    @property
    def mode_text(self) -> str:
        if self.mode == TIGHT:
            return "bit-identical numerics: tight tolerance"
        return f"other numerics: within the seed spread (k={self.k:.3g})"

    def diff_table(self) -> str:
        """The failing findings as a fixed-width table; empty when the check passed."""
        if self.passed:
            return ""
        limit = "tolerance" if self.mode == TIGHT else "allowed"
        header = ["change", *KEY, "field", "reference", "current", "delta", limit]
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
        if self.mode == TIGHT:
            within = limits
            seeds = f"seed(s) {_seeds_text(self.seeds)}"
        else:
            within = (
                f"max(tolerance, {self.k:.3g} x pooled seed sd; k for {self.n_values} values), "
                f"tolerance {limits}"
            )
            seeds = (
                f"seed(s) {_seeds_text(self.seeds)} against the reference's "
                f"{_seeds_text(self.reference_seeds)}"
            )
        if len(self.checked_sets) > 1:
            seeds += f"; record sets {record_sets_text(self.checked_sets)}"
        if self.passed:
            return (
                f"metrics match the reference ({self.mode_text}): {self.n_compared} rows "
                f"within {within}; {seeds}"
            )
        return (
            f"metric regression ({self.mode_text}): {len(self.differences)} finding(s) over "
            f"{self.n_compared} compared rows (within {within}; {seeds})"
        )

    def unchecked_text(self) -> str:
        """One line naming the reference's record sets that were not compared; "" if none."""
        if not self.unchecked:
            return ""
        rows = sum(n for _, n in self.unchecked)
        names = record_sets_text(s for s, _ in self.unchecked)
        return (
            f"not checked: {rows} reference rows of {names} (not among --records; nox -s "
            "regress passes them all)"
        )

    def report(self) -> str:
        parts = (self.note, self.diff_table(), self.summary(), self.unchecked_text())
        return "\n".join(part for part in parts if part)


def _equal_within(reference, current, tolerance: float) -> bool:
    if reference is None or current is None:
        return reference is None and current is None
    # rounding the gap keeps a move of exactly the tolerance from failing on float noise
    return round(abs(current - reference), DECIMALS + 3) <= tolerance


def _seed_mean(row: Mapping, seeds, metric: str) -> float | None:
    """The mean over ``seeds`` of the row's per-seed values (nulls left out; None if none)."""
    values = [
        row["seeds"][s][metric]
        for s in seeds
        if s in row["seeds"] and row["seeds"][s][metric] is not None
    ]
    return _rounded(sum(values) / len(values)) if values else None


def _seed_n(row: Mapping, seeds) -> int:
    return sum(row["seeds"][s]["n"] for s in seeds if s in row["seeds"])


def pooled_seed_sd(rows: Mapping[tuple, Mapping], metric: str) -> dict[tuple, float | None]:
    """Per (record set, backbone, dataset): the root of the mean over its rows (methods, stages,
    prompt modes) of the sample variance (ddof=1) of the per-seed values; rows with fewer than two
    non-null seeds are left out, and a group with none has None."""
    variances: dict[tuple, list[float]] = {}
    for key, row in rows.items():
        group = _spread_group(key)
        values = [v[metric] for v in row["seeds"].values() if v[metric] is not None]
        variances.setdefault(group, [])
        if len(values) >= MIN_SPREAD_SEEDS:
            variances[group].append(float(np.var(values, ddof=1)))
    return {g: math.sqrt(sum(v) / len(v)) if v else None for g, v in variances.items()}


def spread_k(n_values: int, n_reference_seeds: int) -> float:
    """The multiple of the pooled seed sd the spread mode allows when ``n_values`` metric values
    are compared with the mean of ``n_reference_seeds`` seeds: the Bonferroni bound at which a
    run that behaves like one more seed fails any value with chance at most ``SPREAD_ALPHA``
    (t with ``SPREAD_DF`` degrees of freedom), never below ``SPREAD_K``."""
    from scipy import stats

    if n_values < 1:
        return float(SPREAD_K)
    t = stats.t.ppf(1 - SPREAD_ALPHA / (2 * n_values), SPREAD_DF)
    return max(float(SPREAD_K), float(t) * math.sqrt(1 + 1 / n_reference_seeds))


def _spread_group(key: tuple) -> tuple:
    # per record set: a corruption or a label-starved training spreads otherwise than the main
    # evaluation, whose pooled sd stays what it was before the analyses joined
    named = dict(zip(KEY, key, strict=True))
    return (record_set_of(named["prompt_mode"]), *(named[k] for k in SPREAD_GROUP))


def check_mode(current_numerics: Mapping | None, reference: Mapping) -> tuple[str, str]:
    """``(mode, why)``: TIGHT and "" when the numerics fingerprints are equal, else SPREAD and
    a phrase saying how the numerics differ."""
    if current_numerics is None:
        return SPREAD, "numerics of the records unknown (written by an older spt)"
    differ = numerics_differences(current_numerics, reference.get("numerics") or {})
    if not differ:
        return TIGHT, ""
    return SPREAD, f"numerics differ from the reference's ({'; '.join(differ)})"


def numerics_differences(current: Mapping, reference: Mapping) -> list[str]:
    """``field: reference -> current`` for the fingerprint fields that differ (the mode first,
    then by name); empty exactly
    when :func:`spt.numerics.mismatches` is. Values come from the full descriptions, so a
    field that only one mode's fingerprint holds (native mode adds the CPU model) shows what
    the other side had rather than None."""
    current, reference = dict(current), dict(reference)
    if not mismatches(current, reference):
        return []
    mine, theirs = fingerprint(current), fingerprint(reference)
    fields = sorted(
        (k for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k)),
        key=lambda k: (k != "mode", k),  # the mode first: it decides which fields count
    )
    shown = [
        f"{k}: {reference.get(k)} -> {current.get(k)}"
        for k in fields
        if reference.get(k) != current.get(k)
    ]
    return shown or mismatches(current, reference)


def check_regression(
    current: Mapping,
    reference: Mapping,
    numerics: Mapping | None = None,
    record_sets: set[str] | None = None,
) -> RegressionResult:
    """Compare ``current`` (from :func:`summarise_for_reference`), whose records were computed
    with ``numerics`` (:func:`common_numerics`; None: unknown), with a reference document.

    ``record_sets``: the record sets the current records hold (:func:`record_set_of`; None:
    every set of the reference); the reference's rows of other sets are not expected, and the
    result counts them as unchecked."""
    tolerance = _checked_tolerance(reference.get("tolerance"), "reference")
    ref_seeds, ref_rows = _checked_document(reference, "reference")
    cur_seeds, cur_rows = _checked_document(current, "current metrics")
    mode, why = check_mode(numerics, reference)
    note = f"{why}: comparing within the reference's seed spread, not bit-for-bit" if why else ""
    if mode == SPREAD and len(ref_seeds) < MIN_SPREAD_SEEDS:
        raise SuiteError(
            f"{why}, and the reference has only seed {_seeds_text(ref_seeds)}: "
            "with no seed spread to compare within, this platform cannot be checked against "
            f"this reference; make one with `spt regress --update` from 3 seeds "
            f"(`{REFERENCE_SEEDS_COMMAND}`)"
        )
    absent = [s for s in cur_seeds if s not in ref_seeds]
    if absent:
        reason = "the same seeds are compared" if mode == TIGHT else "n is compared per seed"
        raise SuiteError(
            f"seed {absent[0]} of the records is missing from the reference (seeds "
            f"{_seeds_text(ref_seeds)}; {reason}): evaluate seeds the reference has, or update it "
            f"with `spt regress --update` from records of the seeds to check"
        )
    # a reference row is expected when it has a value for one of the seeds compared, and is
    # of a record set given (the main evaluation can be checked without the analyses)
    mode_at = KEY.index("prompt_mode")
    given = (
        {record_set_of(k[mode_at]) for k in ref_rows}
        | {record_set_of(k[mode_at]) for k in cur_rows}
        if record_sets is None
        else set(record_sets)
    )
    unchecked: dict[str, int] = {}
    expected = {}
    for key, row in ref_rows.items():
        if not any(s in row["seeds"] for s in cur_seeds):
            continue
        row_set = record_set_of(key[mode_at])
        if row_set in given:
            expected[key] = row
        else:
            unchecked[row_set] = unchecked.get(row_set, 0) + 1
    sds = {m: pooled_seed_sd(ref_rows, m) for m in REFERENCE_METRICS}
    n_compared = len(expected.keys() & cur_rows.keys())
    n_values = n_compared * len(tolerance)
    k = spread_k(n_values, len(ref_seeds))
    found = []
    for key in sorted(
        expected.keys() | cur_rows.keys(), key=lambda k: _sort_key(dict(zip(KEY, k, strict=True)))
    ):
        if key not in cur_rows:
            found.append(Difference("missing", key))
            continue
        if key not in expected:
            found.append(Difference("new", key))
            continue
        ref, cur = expected[key], cur_rows[key]
        for metric, limit in tolerance.items():
            cur_value = _seed_mean(cur, cur_seeds, metric)
            if mode == TIGHT:
                ref_value, allowed = _seed_mean(ref, cur_seeds, metric), limit
            else:
                ref_value = _seed_mean(ref, ref_seeds, metric)
                sd = sds[metric].get(_spread_group(key))
                allowed = limit if sd is None else max(limit, k * sd)
            if not _equal_within(ref_value, cur_value, allowed):
                found.append(Difference("moved", key, metric, ref_value, cur_value, allowed))
        ref_n, cur_n = _seed_n(ref, cur_seeds), _seed_n(cur, cur_seeds)
        if ref_n != cur_n:
            found.append(Difference("n changed", key, "n", ref_n, cur_n))
    return RegressionResult(
        tuple(found), n_compared, tolerance, mode, note, tuple(cur_seeds), tuple(ref_seeds),
        tuple(sorted(given)), tuple(sorted(unchecked.items())), k, n_values,
    )  # fmt: skip
