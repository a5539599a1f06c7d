"""The cost table: what each method costs to train and to run, gathered from the logs.

Nothing here is re-measured. Per (backbone, method) it reads:

- ``trained.pt`` (``spt train``): trainable parameters, the device, precision, attention and
  whether the encoder blocks were checkpointed;
- ``<method>/<backbone>.cost.csv`` beside the training folder: wall seconds per epoch and per
  step, and the peak memory after each epoch;
- ``records.parquet`` (``spt evaluate``): ``encode_seconds`` (one encoder pass per image) and
  ``seconds`` (one decode call per prompt, all stages), and the records' cost metadata (device,
  precision, attention, processes and the peak memory of the processes that computed them).

Over several runs (one folder per seed) timings are averaged and peak memory is the largest.
Peak memory is CUDA's max allocated on a GPU and the process's peak RSS on a CPU (which also
counts the interpreter, libraries and data): the kind is named in the table.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from spt.artifacts import read_trained
from spt.errors import SuiteError
from spt.harness.records import STATUS_OK, read_cost, read_records

TRAINED_FILE = "trained.pt"
RECORDS_FILE = "records.parquet"
GIB = 1024**3

#: column -> markdown header
COLUMNS = {
    "method": "method",
    "trainable": "trainable params",
    "train_s_per_step": "train s/step",
    "train_s_per_epoch": "train s/epoch",
    "train_peak_gib": "train peak GiB",
    "train_compute": "train device, precision",
    "encode_s_per_image": "encode s/image",
    "decode_s_per_prompt": "decode s/prompt",
    "eval_peak_gib": "eval peak GiB",
    "eval_compute": "eval device, precision",
}


def _runs(root: Path, method: str, backbone: str, name: str | None) -> list[Path]:
    """``<root>/[<run>/]<method>/<backbone>/<name>`` that exist, sorted; with ``name`` None
    the cost logs ``<root>/[<run>/]<method>/<backbone>.cost.csv``."""
    tail = f"{backbone}.cost.csv" if name is None else f"{backbone}/{name}"
    direct = Path(root) / method / tail
    found = [direct] if direct.is_file() else []
    return found + sorted(Path(root).glob(f"*/{method}/{tail}"))


def _trained_info(path: Path) -> dict:
    blob = read_trained(path)
    compute = blob.get("compute") or {}
    numerics = blob.get("numerics") or {}
    return {
        "trainable": blob.get("trainable_parameters"),
        "device": numerics.get("gpu") or numerics.get("device", "?"),
        "precision": compute.get("precision", "fp32"),
        "attention": compute.get("attention", "sam"),
        "checkpoint_encoder": bool(compute.get("checkpoint_encoder", False)),
    }


def _train_log(path: Path) -> pd.DataFrame | None:
    """A training cost log; None for one without the cost columns."""
    try:
        log = pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise SuiteError(f"{path}: unreadable cost log ({exc}); rerun `spt train`") from None
    needed = ("seconds", "seconds_per_step", "peak_memory_bytes")
    if any(column not in log.columns for column in needed):
        return None
    return log


def _compute_text(device: str, precision: str, attention: str, checkpointed: bool) -> str:
    parts = [str(device), str(precision)]
    if attention != "sam":
        parts.append(f"{attention} attention")
    if checkpointed:
        parts.append("checkpointed encoder")
    return ", ".join(parts)


def _memory_kind(kinds: set[str]) -> str:
    return " / ".join(sorted(k for k in kinds if k)) or "?"


def cost_rows(eval_root: Path, train_root: Path, backbone: str, methods: list[str]) -> pd.DataFrame:
    """One row per method (in ``methods`` order) with the :data:`COLUMNS` filled from the logs;
    NaN / empty where a method has no such log (zero-shot is not trained)."""
    rows = []
    memory_kinds: set[str] = set()
    for method in methods:
        row: dict = {"method": method}
        trained = _runs(train_root, method, backbone, TRAINED_FILE)
        logs = [
            log
            for log in (_train_log(p) for p in _runs(train_root, method, backbone, None))
            if log is not None
        ]
        if trained:
            info = _trained_info(trained[0])
            row["trainable"] = info["trainable"]
            row["train_compute"] = _compute_text(
                info["device"], info["precision"], info["attention"], info["checkpoint_encoder"]
            )
        else:
            row["trainable"] = 0 if method == "zero_shot" else None
        if logs:
            everything = pd.concat(logs, ignore_index=True)
            row["train_s_per_step"] = float(everything["seconds_per_step"].mean())
            row["train_s_per_epoch"] = float(everything["seconds"].mean())
            row["train_peak_gib"] = float(everything["peak_memory_bytes"].max()) / GIB
            memory_kinds |= set(everything.get("peak_memory_kind", pd.Series(dtype=str)))
        encode, decode, peaks, computes = [], [], [], set()
        for path in _runs(eval_root, method, backbone, RECORDS_FILE):
            records = read_records(path)
            ok = records[records["status"] == STATUS_OK]
            encode.append(records.drop_duplicates("image_id")["encode_seconds"])
            # one decode call per (image, prompt mode) covers all the method's stages
            decode.append(ok.drop_duplicates(["image_id", "prompt_mode"])["seconds"])
            cost = read_cost(path)
            if cost is not None:
                peaks.append(int(cost.get("peak_memory_bytes", 0)))
                memory_kinds.add(str(cost.get("peak_memory_kind", "")))
                computes.add(
                    _compute_text(
                        cost.get("device", "?"),
                        cost.get("precision", "fp32"),
                        cost.get("attention", "sam"),
                        False,
                    )
                    + (f", {cost['processes']} processes" if cost.get("processes", 1) > 1 else "")
                )
        if encode:
            row["encode_s_per_image"] = float(pd.concat(encode).mean())
            row["decode_s_per_prompt"] = float(pd.concat(decode).mean())
        if peaks:
            row["eval_peak_gib"] = max(peaks) / GIB
            row["eval_compute"] = "; ".join(sorted(computes))
        rows.append(row)
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    table.attrs["memory_kind"] = _memory_kind(memory_kinds)
    return table


def _cell(value, column: str) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "–"
    if column == "trainable":
        return f"{int(value):,}"
    if column.endswith("_gib"):
        return f"{value:.2f}"
    if isinstance(value, float):
        return f"{value:.3g}" if value >= 1e-3 else f"{value:.2e}"
    return str(value)


def cost_markdown(table: pd.DataFrame, backbone: str) -> str:
    """The table as markdown with a title and the sentence on what the memory column is."""
    lines = [
        f"# Cost per method, backbone {backbone}",
        "",
        "| " + " | ".join(COLUMNS.values()) + " |",
        "|" + "|".join("---" for _ in COLUMNS) + "|",
    ]
    for _, row in table.iterrows():
        lines.append("| " + " | ".join(_cell(row[c], c) for c in COLUMNS) + " |")
    lines += [
        "",
        f"Peak memory: {table.attrs.get('memory_kind', '?')} (CUDA: max allocated tensors; "
        "CPU: the process's peak resident set, which includes the interpreter, the libraries "
        "and the data). Seconds are wall time from the training and evaluation logs; encode is "
        "one image-encoder pass per image, decode one prompt's decoder call with all of the "
        "method's stages. A dash: the method has no such log (zero-shot is not trained).",
        "",
    ]
    return "\n".join(lines)
