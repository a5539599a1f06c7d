"""The prepare step: raw dataset roots -> manifests, normalised masks and a report.

For each configured dataset: check the root, scan it with its layout's reader, inspect every
image (hash, decode, normalise the mask; in worker processes when asked), apply the split
protocol and write ``<prepared>/<dataset>/{manifest.csv, masks/, report.json}``. One dataset's
failure is recorded in its report and never stops the others.
"""

from __future__ import annotations

import os
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from spt.artifacts import write_text_atomically
from spt.data.config import DataConfig, DatasetConfig
from spt.data.inspect import Outcome, inspect_record
from spt.data.issues import Issue
from spt.data.manifest import MASKS_DIR, resolve_manifest_path, write_manifest
from spt.data.masks import rule_text
from spt.data.readers import ScanResult, get_reader
from spt.data.records import ImageRecord
from spt.data.report import DatasetReport, to_json
from spt.data.roots import diagnose_root
from spt.data.split import assign_splits
from spt.errors import SuiteError

MANIFEST = "manifest.csv"
REPORT = "report.json"
MASKS = MASKS_DIR
POOL_MIN_IMAGES = 64  # below this, starting worker processes costs more than it saves


def _inspect_job(job: tuple[ImageRecord, str, Path, int]) -> Outcome:
    return inspect_record(*job)


def _previous_masks(out_dir: Path) -> list[Path]:
    """The mask files the previous manifest in ``out_dir`` lists inside ``out_dir/masks``."""
    try:
        frame = pd.read_csv(out_dir / MANIFEST, dtype=str, keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError):
        return []  # no (readable) manifest: nothing is known to be ours
    if "mask_path" not in frame.columns:
        return []
    masks_dir = (out_dir / MASKS).resolve()
    listed = []
    for text in frame["mask_path"]:
        if text:
            path = resolve_manifest_path(text, out_dir)
            if path.suffix == ".png" and masks_dir in path.resolve().parents:
                listed.append(path)
    return listed


def _clear_outputs(out_dir: Path) -> None:
    """Remove what an earlier run wrote for this dataset, and only that: the masks its manifest
    lists, the folders under ``masks/`` they leave empty, the manifest and the report. Never a
    whole folder, so a wrong ``--out`` can not delete files the suite did not write."""
    for path in _previous_masks(out_dir):
        path.unlink(missing_ok=True)
    masks_dir = out_dir / MASKS
    if masks_dir.is_dir() and not masks_dir.is_symlink():
        for folder, _, _ in os.walk(masks_dir, topdown=False):  # deepest folders first
            try:
                os.rmdir(folder)  # only succeeds on an empty folder
            except OSError:
                pass
    for name in (MANIFEST, REPORT):
        (out_dir / name).unlink(missing_ok=True)


def _drop_duplicate_ids(records: list[ImageRecord], report: DatasetReport) -> list[ImageRecord]:
    """Two files with one id (``000.png`` and ``000.bmp``) are ambiguous: report both, keep none."""
    by_id = Counter(record.image_id for record in records)
    kept = []
    for record in records:
        if by_id[record.image_id] == 1:
            kept.append(record)
            continue
        others = sorted(
            r.image_path.name
            for r in records
            if r.image_id == record.image_id and r.image_path != record.image_path
        )
        report.issues.append(
            Issue(
                "skipped",
                "duplicate_id",
                str(record.image_path),
                f"image id {record.image_id} is also used by {', '.join(others)}",
                "remove or rename all but one of these files",
            )
        )
        report.count(record.category, record.defect_type, "found")
    return kept


def mask_sanity(config: DatasetConfig, rows: list[dict], issues: list[Issue]) -> list[Issue]:
    """Dataset-level warnings when the masks as a whole suggest another convention: none of
    them has foreground, or most of them cover their whole image. One line each, at the root.
    ``issues``: the dataset's report so far (only inspection gives the mask kinds counted)."""
    kinds = Counter(issue.kind for issue in issues)
    read = sum(1 for row in rows if row["mask_path"]) + kinds["empty_mask"]
    read += kinds["mask_below_threshold"] + kinds["tiny_defect"]
    root = config.root.as_posix()
    rule = rule_text(config.mask_convention)
    found = []
    unlabelled = kinds["empty_mask"] + kinds["mask_below_threshold"]
    if read and unlabelled == read:
        found.append(
            Issue(
                "warning",
                "no_mask_foreground",
                root,
                f"none of the {read} masks has foreground at {rule} "
                f"(mask_convention: {config.mask_convention})",
                "check the masks' values; class-id or 0/1 masks need mask_convention: nonzero",
            )
        )
    covering = kinds["mask_covers_image"]
    if read and covering * 2 > read:
        found.append(
            Issue(
                "warning",
                "masks_cover_images",
                root,
                f"{covering} of {read} masks cover more than 99% of their image at {rule}",
                "the background is probably not stored as 0: fix the masks, or use "
                "mask_convention: threshold if it is 1",
            )
        )
    return found


def _covered(path: str, named: set[str]) -> bool:
    """Is ``path`` or one of its folders in ``named``?"""
    while True:
        if path in named:
            return True
        parent = os.path.dirname(path)
        if parent == path or not parent:
            return False
        path = parent


def unread_entries(root: Path, scan: ScanResult, title: str) -> list[Issue]:
    """Every file under ``root`` that the scan did not use or report: one ``not_read`` line per
    file, or one per folder when nothing inside it was used (MVTec AD 2's private test sets, a
    ``docs/`` folder). Hidden entries (``.DS_Store``, the synthetic twins' marker) are left out."""
    top = os.path.normpath(root)
    used = {
        os.path.normpath(str(p)) for r in scan.records for p in (r.image_path, r.mask_path) if p
    }
    used |= {os.path.normpath(str(p)) for p in scan.accounted}
    named = {os.path.normpath(issue.path) for issue in scan.issues}
    unread: list[str] = []
    has_used: set[str] = set()  # folders with a used file somewhere below them
    for folder, dirs, files in os.walk(root):  # links to folders are not followed
        folder = os.path.normpath(folder)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(n for n in files if not n.startswith(".")):
            path = os.path.join(folder, name)
            if path in used:
                probe = folder
                while probe not in has_used and probe != os.path.dirname(probe):
                    has_used.add(probe)
                    if probe == top:
                        break
                    probe = os.path.dirname(probe)
            elif not _covered(path, named):
                unread.append(path)

    def unused_folder(folder: str) -> str | None:
        """The highest folder above ``folder`` (itself included, the root not) with no file used."""
        if folder == top or folder in has_used:
            return None
        while os.path.dirname(folder) != top and os.path.dirname(folder) not in has_used:
            folder = os.path.dirname(folder)
        return folder

    issues, folders = [], Counter()
    for path in unread:
        folder = unused_folder(os.path.dirname(path))
        if folder is None:
            issues.append(
                Issue("ignored", "not_read", path, f"file not read by the {title} layout")
            )
        else:
            folders[folder] += 1
    for folder, count in sorted(folders.items()):
        issues.append(
            Issue(
                "ignored",
                "not_read",
                folder,
                f"folder not read by the {title} layout ({count} file{'s' if count != 1 else ''})",
                "move it out of the dataset root if it holds data to use",
            )
        )
    return issues


def _report_leaks(rows: list[dict], report: DatasetReport) -> None:
    """Identical image bytes on both sides of the split would leak test pixels into training."""
    by_hash: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_hash[row["image_sha256"]].append(row)
    for group in by_hash.values():
        if len({row["split"] for row in group}) > 1:
            train_ids = sorted(row["image_id"] for row in group if row["split"] == "train")
            for row in sorted(group, key=lambda r: r["image_id"]):
                if row["split"] == "test":
                    report.issues.append(
                        Issue(
                            "warning",
                            "identical_across_split",
                            row["image_path"],
                            f"test image has the same bytes as train image(s) {', '.join(train_ids)}",
                            "delete the duplicate file from the raw data",
                        )
                    )


def _run_jobs(
    jobs: list[tuple[ImageRecord, str, Path, int]],
    executor: Executor | None,
    label: str,
    progress: bool = True,
) -> Iterator[Outcome]:
    results: Iterable[Outcome]
    if executor is None or len(jobs) < POOL_MIN_IMAGES:
        results = map(_inspect_job, jobs)
    else:
        results = executor.map(_inspect_job, jobs, chunksize=16)  # keeps input order
    yield from tqdm(
        results, total=len(jobs), desc=f"prepare {label}", unit="img", disable=not progress
    )


def prepare_dataset(
    config: DatasetConfig,
    out_root: Path,
    seed: int,
    fraction: float,
    executor: Executor | None = None,
    min_defect_pixels: int = 1,
    progress: bool = True,
) -> DatasetReport:
    start = time.perf_counter()
    reader = get_reader(config.layout)
    report = DatasetReport(config.name, config.layout, config.root.as_posix())
    out_dir = out_root / config.name
    _clear_outputs(out_dir)
    if not config.root.is_dir():
        report.status = "missing"
        report.error = (
            f"{config.root.as_posix()} not found; put {reader.title} there "
            f"or set data.datasets.{config.name}.root in params.yaml"
        )
        return report
    try:
        problem = diagnose_root(config)
        if problem:
            raise SuiteError(problem)
        scan = reader.scan(config.name, config.root, config.options)
    except SuiteError as exc:
        report.status, report.error = "failed", str(exc)
    except OSError as exc:  # an unreadable folder fails this dataset, not the run
        report.status = "failed"
        report.error = f"{config.root.as_posix()}: cannot list files ({exc}); check permissions"
    else:
        report.issues.extend(scan.issues)
        report.issues.extend(unread_entries(config.root, scan, reader.title))
        protocol = (seed, fraction, min_defect_pixels)
        _build_manifest(config, scan.records, out_dir, protocol, executor, report, progress)
    report.seconds = time.perf_counter() - start
    write_text_atomically(out_dir / REPORT, to_json([report]))
    return report


def _build_manifest(
    config: DatasetConfig,
    records: list[ImageRecord],
    out_dir: Path,
    protocol: tuple[int, float, int],
    executor: Executor | None,
    report: DatasetReport,
    progress: bool = True,
) -> None:
    """Inspect every record, split the usable ones and write the manifest. ``protocol``:
    (split seed, train fraction, minimum defect pixels)."""
    seed, fraction, min_defect_pixels = protocol
    records = _drop_duplicate_ids(records, report)
    jobs = [(r, config.mask_convention, out_dir, min_defect_pixels) for r in records]
    rows = []
    for outcome in _run_jobs(jobs, executor, config.name, progress):
        report.issues.extend(outcome.issues)
        report.count(outcome.record.category, outcome.defect_type, "found")
        if outcome.row is not None:
            rows.append(outcome.row)
    assign_splits(rows, seed, fraction)
    for row in rows:
        report.count(row["category"], row["defect_type"], "in_manifest")
        report.count(row["category"], row["defect_type"], row["split"])
    _report_leaks(rows, report)
    report.issues.extend(mask_sanity(config, rows, report.issues))
    if rows:
        report.manifest = (out_dir / MANIFEST).as_posix()
        write_manifest(pd.DataFrame(rows), out_dir / MANIFEST)
    else:
        report.status = "failed"
        report.error = (
            f"{config.root.as_posix()}: no usable images found "
            f"(expected {get_reader(config.layout).expected}); see the issues in its report"
        )


def _refuse_output_over_raw_data(
    out_root: Path, names: list[str], datasets: dict[str, DatasetConfig]
) -> None:
    """Raw data stays as shipped: no prepared file goes into a raw-data root and no clean-up
    runs in one. Each output folder ``<out>/<dataset>`` must not be, contain or lie inside any
    configured dataset root (a folder dataset at ``data/<name>`` prepared with ``--out data``
    would otherwise have its ``masks/`` cleared as stale output)."""
    checks = [(out_root, False)] + [(out_root / name, True) for name in names]
    for out_dir, may_not_contain in checks:
        out = out_dir.resolve()
        for dataset in datasets.values():
            root = dataset.root.resolve()
            if out == root or root in out.parents or (may_not_contain and out in root.parents):
                raise SuiteError(
                    f"{out_dir.as_posix()}: prepared output overlaps the raw-data root of "
                    f"dataset {dataset.name} ({dataset.root.as_posix()}); choose another --out "
                    "or data.prepared_root, outside every dataset root"
                )


def resolve_workers(requested: int) -> int:
    return requested if requested > 0 else max(1, os.cpu_count() or 1)


def check_plan(config: DataConfig, names: list[str] | None, out_root: Path) -> list[str]:
    """The datasets to prepare, in name order, once the names are known and the output is
    known not to overlap any raw root: both checked before anything is created or removed."""
    names = sorted(set(config.datasets if names is None else names))
    unknown = [n for n in names if n not in config.datasets]
    if unknown:
        raise SuiteError(
            f"unknown dataset(s) {', '.join(unknown)}; configured in params.yaml data.datasets: "
            f"{', '.join(sorted(config.datasets)) or 'none'}"
        )
    _refuse_output_over_raw_data(out_root, names, config.datasets)
    return names


def prepare_all(
    config: DataConfig,
    names: list[str] | None = None,
    out_root: Path | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> list[DatasetReport]:
    """Prepare the named datasets (default: every configured one) in name order."""
    out_root = out_root or config.prepared_root
    names = check_plan(config, names, out_root)
    count = resolve_workers(config.workers if workers is None else workers)
    executor = ProcessPoolExecutor(max_workers=count) if count > 1 else None
    try:
        return [
            prepare_dataset(
                config.datasets[n],
                out_root,
                config.seed,
                config.train_fraction,
                executor,
                config.min_defect_pixels,
                progress,
            )
            for n in names
        ]
    finally:
        if executor is not None:
            executor.shutdown()
