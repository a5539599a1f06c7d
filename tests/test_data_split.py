"""The split protocol: deterministic, order-free, per-dataset, and no test image in train."""

from __future__ import annotations

import hashlib
import random
import shutil
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from spt.data.config import parse_data_config
from spt.data.manifest import read_manifest
from spt.data.prepare import prepare_all
from spt.data.split import assign_splits, train_count
from spt.data.synthetic import FOLDER_OPTIONS, TWIN_LAYOUTS, TwinSize, write_all_twins

SIZE = TwinSize(normal_train=2, normal_test=2, defects_per_type=5)


@pytest.fixture(scope="module")
def twins(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("twins")
    write_all_twins(out, seed=2, size=SIZE)
    return out


def _config(root: Path, names=TWIN_LAYOUTS, seed: int = 0, fraction: float = 0.5):
    datasets = {}
    for name in names:
        datasets[name] = {"layout": name, "root": str(root / name)}
        if name == "folder":
            datasets[name].update(FOLDER_OPTIONS)
    return parse_data_config({"seed": seed, "train_fraction": fraction, "datasets": datasets})


def _prepare(root: Path, out: Path, names=TWIN_LAYOUTS, workers: int = 1, **kw):
    reports = prepare_all(_config(root, names, **kw), out_root=out, workers=workers)
    assert all(r.status == "prepared" for r in reports), [r.error for r in reports]
    return {name: read_manifest(out / name / "manifest.csv") for name in names}


def _splits(manifests) -> dict[str, str]:
    return {row.image_id: row.split for m in manifests.values() for row in m.itertuples()}


def _bytes(out: Path, name: str) -> bytes:
    """The manifest's bytes: mask paths are relative to the manifest, so the output folder
    is no part of them."""
    data = (out / name / "manifest.csv").read_bytes()
    assert b",masks/" in data and out.as_posix().encode() not in data
    return data


def test_train_count_rule():
    # floor(f * n + 0.5), clamped to [1, n - 1]; a single image goes to test.
    assert [train_count(n, 0.5) for n in range(1, 8)] == [0, 1, 2, 2, 3, 3, 4]
    assert train_count(10, 0.3) == 3 and train_count(10, 0.05) == 1 and train_count(10, 0.99) == 9


def test_no_test_image_reaches_train(twins, tmp_path):
    manifests = _prepare(twins, tmp_path / "out")
    for name, manifest in manifests.items():
        assert manifest["image_id"].is_unique, name
        assert set(manifest["split"]) <= {"train", "test"}
        train = set(manifest.loc[manifest.split == "train", "image_id"])
        test = set(manifest.loc[manifest.split == "test", "image_id"])
        assert not train & test
        # No bytes shared across the split either.
        hashes = manifest.groupby("image_sha256")["split"].nunique()
        assert (hashes == 1).all(), name
    # Publisher-test normal images stay in test; publisher-train normals stay in train.
    for name in ("mvtec", "mpdd", "btad"):
        normals = manifests[name][manifests[name].label == "normal"]
        for row in normals.itertuples():
            assert row.split == ("train" if "/train/" in row.image_path else "test"), row.image_id


def test_publisher_split_with_defects_on_both_sides_is_kept(twins, tmp_path):
    manifests = _prepare(twins, tmp_path / "out", names=("ksdd2", "spt_archive"))
    for manifest in manifests.values():
        for row in manifest.itertuples():
            assert row.split == Path(row.image_path).parent.name, row.image_id
        defects = manifest[manifest.label == "defect"]
        assert set(defects.split) == {"train", "test"}


def test_defect_strata_follow_the_fraction(twins, tmp_path):
    manifests = _prepare(twins, tmp_path / "out", names=("mvtec", "visa", "mtd"), fraction=0.4)
    for name, manifest in manifests.items():
        defects = manifest[manifest.label == "defect"]
        for (category, defect_type), group in defects.groupby(["category", "defect_type"]):
            n_train = int((group.split == "train").sum())
            assert n_train == train_count(len(group), 0.4), (name, category, defect_type)


def test_rank_is_the_documented_hash(twins, tmp_path):
    """Recompute the split from its definition: rank by sha256(f"{seed}|{image_id}")."""
    manifest = _prepare(twins, tmp_path / "out", names=("mvtec",), seed=9)["mvtec"]
    defects = manifest[manifest.label == "defect"]
    for _, group in defects.groupby(["category", "defect_type"]):
        ranked = sorted(group.image_id, key=lambda i: hashlib.sha256(f"9|{i}".encode()).hexdigest())
        expected_train = set(ranked[: train_count(len(ranked), 0.5)])
        assert set(group.loc[group.split == "train", "image_id"]) == expected_train


def test_identical_across_runs_and_worker_counts(twins, tmp_path, monkeypatch):
    _prepare(twins, tmp_path / "a", workers=1)
    monkeypatch.setattr("spt.data.prepare.POOL_MIN_IMAGES", 1)  # use the pool even for twins
    _prepare(twins, tmp_path / "b", workers=2)
    for name in TWIN_LAYOUTS:
        assert _bytes(tmp_path / "a", name) == _bytes(tmp_path / "b", name), name
        masks_a = sorted((tmp_path / "a" / name / "masks").rglob("*.png"))
        masks_b = sorted((tmp_path / "b" / name / "masks").rglob("*.png"))
        assert [p.relative_to(tmp_path / "a") for p in masks_a] == [
            p.relative_to(tmp_path / "b") for p in masks_b
        ]
        assert all(a.read_bytes() == b.read_bytes() for a, b in zip(masks_a, masks_b, strict=True))
    report_a = (tmp_path / "a" / "mtd" / "report.json").read_text()
    report_b = (tmp_path / "b" / "mtd" / "report.json").read_text()
    assert report_a.replace(str(tmp_path / "a"), "") == report_b.replace(str(tmp_path / "b"), "")


def test_independent_of_file_system_order(twins, tmp_path, monkeypatch):
    reference = _prepare(twins, tmp_path / "ref")
    original = Path.iterdir
    shuffler = random.Random(1234)  # local generator: the test's own, never the global one

    def shuffled(self):
        entries = list(original(self))
        shuffler.shuffle(entries)
        return iter(entries)

    monkeypatch.setattr(Path, "iterdir", shuffled)
    again = _prepare(twins, tmp_path / "shuffled")
    monkeypatch.undo()
    for name in TWIN_LAYOUTS:
        assert _bytes(tmp_path / "ref", name) == _bytes(tmp_path / "shuffled", name), name
    assert _splits(reference) == _splits(again)


def test_independent_of_creation_order(twins, tmp_path):
    """The same files created in reverse order (a different inode/listing order) split alike."""
    reversed_root = tmp_path / "reversed"
    for layout in ("mvtec", "mtd"):
        files = sorted(p for p in (twins / layout).rglob("*") if p.is_file())
        for path in reversed(files):
            target = reversed_root / path.relative_to(twins)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
    a = _prepare(twins, tmp_path / "a", names=("mvtec", "mtd"))
    b = _prepare(reversed_root, tmp_path / "b", names=("mvtec", "mtd"))
    assert _splits(a) == _splits(b)


def test_adding_or_removing_datasets_changes_nothing(twins, tmp_path):
    _prepare(twins, tmp_path / "alone", names=("mvtec",))
    _prepare(twins, tmp_path / "pair", names=("mvtec", "ksdd2"))
    _prepare(twins, tmp_path / "all")
    for out in ("pair", "all"):
        assert _bytes(tmp_path / "alone", "mvtec") == _bytes(tmp_path / out, "mvtec")
    assert _bytes(tmp_path / "pair", "ksdd2") == _bytes(tmp_path / "all", "ksdd2")


def test_seed_changes_the_split(twins, tmp_path):
    a = _splits(_prepare(twins, tmp_path / "a", names=("mvtec", "mtd"), seed=0))
    b = _splits(_prepare(twins, tmp_path / "b", names=("mvtec", "mtd"), seed=1))
    assert a.keys() == b.keys() and a != b


def test_assign_splits_ignores_row_order():
    rows = [
        {
            "image_id": f"d/c/{t}/{i}",
            "category": "c",
            "defect_type": t,
            "label": "defect",
            "split": None,
        }
        for t in ("a", "b")
        for i in range(7)
    ] + [
        {
            "image_id": f"d/c/n/{i}",
            "category": "c",
            "defect_type": "good",
            "label": "normal",
            "split": "train",
        }
        for i in range(3)
    ]
    forward = [dict(r) for r in rows]
    backward = [dict(r) for r in reversed(rows)]
    assign_splits(forward, seed=4, fraction=0.5)
    assign_splits(backward, seed=4, fraction=0.5)
    assert {r["image_id"]: r["split"] for r in forward} == {
        r["image_id"]: r["split"] for r in backward
    }
    counts = Counter((r["defect_type"], r["split"]) for r in forward)
    assert counts[("a", "train")] == counts[("b", "train")] == 4
    assert counts[("good", "train")] == 3  # a publisher's normal split is kept
    by_type = defaultdict(set)
    for r in forward:
        by_type[r["defect_type"]].add(r["split"])
    assert by_type["a"] == by_type["b"] == {"train", "test"}
