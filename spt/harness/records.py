"""Per-image evaluation records: the one schema (reports read it too) and atomic parquet I/O.

One record per (method, backbone, seed, image, prompt mode, output stage):

==============  =======  =============================================================
method          str      registered method name (``zero_shot``, ``spt``...)
backbone        str      SAM backbone (``vit_b``... ``tiny``)
seed            int64    prompt seed
dataset         str      dataset name from the manifest
category        str      product / class
defect_type     str      publisher's defect name
image_id        str      manifest image id (unique across datasets)
prompt_mode     str      ``box``, ``points-K``, ``points-pn``, ``coarse``, ``coarse-box`` (+ ``+<perturbation>``)
stage           str      method output (``final``; SPT also ``draft``)
iou             float64  IoU (NaN unless status is ok)
biou            float64  boundary IoU (NaN unless status is ok)
dice            float64  Dice (NaN unless status is ok)
seconds         float64  wall time of the method's decode call for this prompt (all stages of
                         one call share it); NaN when no prompt could be built
encode_seconds  float64  wall time of the image's single encoder pass (same on all its rows)
status          str      ``ok`` or ``no_prompt``
reason          str      why the prompt could not be built; empty when ok
==============  =======  =============================================================
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from spt.artifacts import replace_atomically
from spt.errors import SuiteError

DEFAULT_OUT_ROOT = Path("work/eval")  # where `spt evaluate` writes unless told otherwise
#: Images per resumable part file of an evaluation, and the unit processes share out.
DEFAULT_CHUNK_SIZE = 64

RECORD_SCHEMA = pa.schema(
    [
        ("method", pa.string()),
        ("backbone", pa.string()),
        ("seed", pa.int64()),
        ("dataset", pa.string()),
        ("category", pa.string()),
        ("defect_type", pa.string()),
        ("image_id", pa.string()),
        ("prompt_mode", pa.string()),
        ("stage", pa.string()),
        ("iou", pa.float64()),
        ("biou", pa.float64()),
        ("dice", pa.float64()),
        ("seconds", pa.float64()),
        ("encode_seconds", pa.float64()),
        ("status", pa.string()),
        ("reason", pa.string()),
    ]
)
RECORD_COLUMNS = RECORD_SCHEMA.names
#: What identifies one record: no two records of one comparison may share it.
RECORD_KEY = ("method", "backbone", "seed", "dataset", "image_id", "prompt_mode", "stage")
STATUS_OK = "ok"
STATUS_NO_PROMPT = "no_prompt"


def records_table(records: list[dict]) -> pa.Table:
    """A list of record dicts -> an arrow table with exactly :data:`RECORD_SCHEMA`."""
    columns = {name: [r[name] for r in records] for name in RECORD_COLUMNS}
    return pa.Table.from_pydict(columns, schema=RECORD_SCHEMA)


def check_output_file(path: str | Path) -> None:
    """A SuiteError when ``path``, where an output file goes, is a directory."""
    if Path(path).is_dir():
        raise SuiteError(
            f"{path}: is a directory, but the suite writes its output file there; move that "
            "directory away (or pass another --out) and rerun"
        )


def write_output(path: Path, write) -> None:
    """An evaluation output (records, summaries) via :func:`spt.artifacts.replace_atomically`,
    after :func:`check_output_file`."""
    check_output_file(path)
    replace_atomically(path, write)


NUMERICS_KEY = b"spt_numerics"
WEIGHTS_KEY = b"spt_weights"
COST_KEY = b"spt_cost"


def write_records(
    table: pa.Table,
    path: str | Path,
    numerics: dict | None = None,
    weights: dict | None = None,
    cost: dict | None = None,
) -> None:
    """Write a records table as parquet, atomically. ``numerics`` (:func:`spt.numerics.describe`
    of the run) and ``weights`` (the checkpoint files and their sha256,
    :func:`spt.harness.evaluate.weights_identity`) go into the file's schema metadata;
    :func:`read_numerics` and :func:`read_weights` read them back."""
    metadata = dict(table.schema.metadata or {})
    if numerics is not None:
        metadata[NUMERICS_KEY] = json.dumps(numerics).encode()
    if weights is not None:
        metadata[WEIGHTS_KEY] = json.dumps(weights, sort_keys=True).encode()
    if cost is not None:
        metadata[COST_KEY] = json.dumps(cost, sort_keys=True).encode()
    if metadata:
        table = table.replace_schema_metadata(metadata)
    write_output(Path(path), lambda tmp: pq.write_table(table, tmp))


def _metadata_object(path: str | Path, key: bytes) -> dict | None:
    """The JSON object stored under ``key`` in a records file's schema metadata; None when the
    file was written without it."""
    try:
        raw = (pq.read_schema(path).metadata or {}).get(key)
        value = None if raw is None else json.loads(raw)
    except (pa.ArrowInvalid, OSError, ValueError) as exc:
        raise SuiteError(
            f"{path}: unreadable records metadata ({exc}); rerun `spt evaluate`"
        ) from None
    return value if isinstance(value, dict) else None


def read_cost(path: str | Path) -> dict | None:
    """How a records file was computed and what it cost beyond the timing columns (device,
    precision, attention, processes, peak memory of the process and its kind); None for a file
    written without it."""
    return _metadata_object(path, COST_KEY)


def read_weights(path: str | Path) -> dict | None:
    """The weights a records file was computed with (checkpoint paths, sha256, whether the
    base SAM was randomly initialised); None for a file written without them."""
    return _metadata_object(path, WEIGHTS_KEY)


def read_numerics(path: str | Path) -> dict | None:
    """The numerics a records file was computed with; None for a file written without them
    (by an older version of the suite)."""
    try:
        metadata = pq.read_schema(path).metadata or {}
    except (pa.ArrowInvalid, OSError) as exc:
        raise SuiteError(f"{path}: unreadable records file ({exc}); rerun `spt evaluate`") from None
    raw = metadata.get(NUMERICS_KEY)
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        raise SuiteError(f"{path}: damaged numerics metadata; rerun `spt evaluate`") from None
    return value if isinstance(value, dict) else None


def read_records(path: str | Path) -> pd.DataFrame:
    """Read a records parquet file, checking it has the record columns."""
    path = Path(path)
    if path.is_dir():
        raise SuiteError(
            f"{path}: is a directory, not a records file; pass the records.parquet inside it"
        )
    if not path.is_file():
        raise SuiteError(f"{path}: records file not found; run `spt evaluate` first")
    # Often simply the wrong file (a manifest): say what is expected, never to delete it.
    fix = "pass the records.parquet written by `spt evaluate` (or rerun it if that file is damaged)"
    try:
        frame = pq.read_table(path).to_pandas()
    except (pa.ArrowInvalid, OSError) as exc:
        text = str(exc).strip()
        reason = text.splitlines()[0].split(". ")[0] if text else type(exc).__name__
        raise SuiteError(
            f"{path}: not an `spt evaluate` records file (unreadable as parquet: {reason}); {fix}"
        ) from None
    missing = [c for c in RECORD_COLUMNS if c not in frame.columns]
    if missing:
        raise SuiteError(
            f"{path}: not an `spt evaluate` records file (no column(s) {', '.join(missing)}); {fix}"
        )
    return frame


def check_unique(records: pd.DataFrame, source: str = "") -> None:
    """Refuse records that hold one (method, backbone, seed, dataset, image, prompt mode,
    stage) twice: a hand run's folder beside the pipeline's would otherwise be averaged in.
    With a ``source`` column (the file each record came from) the message names the files."""
    key = list(RECORD_KEY)
    duplicated = records.duplicated(key, keep=False)
    if not duplicated.any():
        return
    first = records.loc[duplicated, key].iloc[0].to_dict()
    where = ""
    if source and source in records:
        same = (records[key] == pd.Series(first)).all(axis=1)
        where = " in " + " and ".join(sorted(set(records.loc[same, source].astype(str)))[:2])
    count = int(records.duplicated(key).sum())
    raise SuiteError(
        f"{count} duplicate evaluation record(s), e.g. {first}{where}; pass each "
        "evaluation's records once (move or delete the extra folder)"
    )


#: Record values that become parts of file names (``overlay_<backbone>_<dataset>.png``): a
#: letter or digit, then letters, digits, ``_ - . +``; never a path separator or ``..``.
NAME_COLUMNS = ("method", "backbone", "dataset", "prompt_mode", "stage")
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")


def check_names(records: pd.DataFrame, source: str) -> None:
    """Refuse records whose names could make a path leave the output folder (a tampered or
    hand-written records file): one line naming the file and the value."""
    for column in NAME_COLUMNS:
        if column not in records:
            continue
        for value in records[column].astype(str).unique():
            if not SAFE_NAME.fullmatch(value) or ".." in value:
                raise SuiteError(
                    f"{source}: {column} {value[:60]!r} is not a plain name (letters, digits, "
                    "_ - . +); the file was not written by `spt evaluate`, regenerate it"
                )
