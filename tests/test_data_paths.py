"""Where prepared files go and how manifest paths are found again: the output folder never
overlaps raw data, clean-up removes only what prepare wrote, mask paths are relative to the
manifest (a prepared folder can move), and a manifest has one row per image id."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from spt.cli import main
from spt.data.config import parse_data_config
from spt.data.manifest import read_manifest, resolve_manifest_path
from spt.data.prepare import prepare_all
from spt.data.synthetic import FOLDER_OPTIONS, TwinSize, write_twin
from spt.errors import SuiteError

SIZE = TwinSize(normal_train=1, normal_test=1, defects_per_type=2)
MYLINE = {"layout": "folder", "root": "data/myline", **FOLDER_OPTIONS}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    """A folder-layout line (images/, masks/ with _mask masks), written once."""
    root = tmp_path_factory.mktemp("pristine") / "myline"
    write_twin("folder", root, seed=2, size=SIZE)
    return root


@pytest.fixture
def project(pristine, tmp_path, monkeypatch) -> Path:
    """A project folder (the working directory) with the line at data/myline, as docs/data.md
    suggests, and a params.yaml configuring it."""
    shutil.copytree(pristine, tmp_path / "data/myline")
    (tmp_path / "params.yaml").write_text(
        yaml.safe_dump({"data": {"datasets": {"myline": MYLINE}}})
    )
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _raw_masks(project: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in (project / "data/myline/masks").iterdir()}


def _prepare(out: str) -> int:
    return main(["prepare", "--params", "params.yaml", "--out", out, "--workers", "1"])


@pytest.mark.parametrize("out", ["data", "data/myline/prepared"])
def test_output_overlapping_a_raw_root_is_refused_before_anything_is_removed(project, capsys, out):
    # --out data: the output folder data/myline is the raw root; the other lies inside it.
    masks = _raw_masks(project)
    assert len(masks) == 2 * SIZE.defects_per_type
    assert _prepare(out) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "overlaps the raw-data root of dataset myline (data/myline)" in err
    assert "--out" in err and "data.prepared_root" in err
    assert _raw_masks(project) == masks
    assert not (project / "data/myline/manifest.csv").exists()
    assert not (project / "data/myline/prepared").exists()


def test_output_folder_containing_a_raw_root_is_refused(pristine, tmp_path):
    # <out>/<dataset> would hold the raw root: clearing it could reach raw files.
    shutil.copytree(pristine, tmp_path / "prep/myline/raw")
    config = parse_data_config(
        {"datasets": {"myline": {**MYLINE, "root": str(tmp_path / "prep/myline/raw")}}}
    )
    with pytest.raises(SuiteError, match="overlaps the raw-data root of dataset myline"):
        prepare_all(config, out_root=tmp_path / "prep", workers=1)
    assert sorted(p.name for p in (tmp_path / "prep/myline").iterdir()) == ["raw"]


def test_clean_up_removes_only_masks_the_previous_manifest_lists(project):
    assert _prepare("prep") == 0
    masks_dir = project / "prep/myline/masks"
    written = sorted(masks_dir.rglob("*.png"))
    assert len(written) == 2 * SIZE.defects_per_type
    user_file = masks_dir / "notes.txt"
    user_file.write_text("mine")
    gone = project / "data/myline/masks" / f"{written[0].stem}_mask.png"
    gone.unlink()  # its image becomes normal: its old normalised mask is stale
    assert _prepare("prep") == 0
    assert user_file.read_text() == "mine"
    assert not written[0].exists() and all(p.exists() for p in written[1:])


def test_clean_up_of_an_old_manifest_with_working_directory_paths(project):
    # Manifests written before mask paths were relative to the manifest named prep/<ds>/masks.
    assert _prepare("prep") == 0
    manifest = project / "prep/myline/manifest.csv"
    stale = project / "prep/myline/masks/stale.png"
    shutil.copy(next((project / "prep/myline/masks").rglob("*.png")), stale)
    frame = read_manifest(manifest)
    frame["mask_path"] = [f"prep/myline/{p}" if p else "" for p in frame["mask_path"]]
    frame.loc[0, "mask_path"] = "prep/myline/masks/stale.png"
    frame.to_csv(manifest, index=False)
    assert resolve_manifest_path(frame.loc[0, "mask_path"], manifest.parent) == Path(
        "prep/myline/masks/stale.png"
    )  # old manifests still read from the working directory
    assert _prepare("prep") == 0
    assert not stale.exists()


def test_mask_paths_are_relative_to_the_manifest_so_the_folder_can_move(project):
    assert _prepare("prep") == 0
    frame = read_manifest(project / "prep/myline/manifest.csv")
    defects = frame[frame["label"] == "defect"]
    assert len(defects) and all(p.startswith("masks/") for p in defects["mask_path"])
    assert all(p.startswith("data/myline/images/") for p in frame["image_path"])
    row = defects.iloc[0]
    original = np.asarray(Image.open(Path("prep/myline") / row["mask_path"]))
    # A renamed copy whose mask differs from the original: the copy's own mask is read.
    shutil.copytree("prep", "moved")
    moved_mask = Path("moved/myline") / row["mask_path"]
    Image.fromarray(255 - original).save(moved_mask)
    resolved = resolve_manifest_path(row["mask_path"], Path("moved/myline"))
    assert resolved == moved_mask
    assert np.array_equal(np.asarray(Image.open(resolved)), 255 - original)
    # Raw images stay relative to the working directory.
    assert resolve_manifest_path(row["image_path"], Path("moved/myline")) == Path(row["image_path"])
    # A missing mask resolves to the path that was tried (inside the moved folder).
    shutil.rmtree("prep")
    moved_mask.unlink()
    assert resolve_manifest_path(row["mask_path"], Path("moved/myline")) == moved_mask


def test_resolution_rule(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    manifest_dir = tmp_path / "prep/ds"
    (manifest_dir / "images").mkdir(parents=True)
    (manifest_dir / "images/a.png").write_bytes(b"x")
    (tmp_path / "masks").mkdir()
    (tmp_path / "masks/a.png").write_bytes(b"x")  # a decoy in the working directory
    assert resolve_manifest_path("/abs/a.png", manifest_dir) == Path("/abs/a.png")
    assert resolve_manifest_path("masks/a.png", manifest_dir) == manifest_dir / "masks/a.png"
    assert resolve_manifest_path("data/a.png", manifest_dir) == Path("data/a.png")
    # A relative image missing from the working directory but next to the manifest.
    assert resolve_manifest_path("images/a.png", manifest_dir) == manifest_dir / "images/a.png"


def test_duplicate_image_ids_are_refused(tmp_path):
    rows = {
        "image_id": ["ds/a", "ds/b", "ds/a"],
        "dataset": "ds",
        "category": "c",
        "defect_type": "d",
        "label": "defect",
        "split": "test",
        "image_path": ["a.png", "b.png", "a2.png"],
        "mask_path": "masks/a.png",
        "height": 4,
        "width": 4,
        "mask_pixels": 1,
        "image_sha256": "x",
        "mask_sha256": "y",
        "prepared_mask_sha256": "",
    }
    path = tmp_path / "manifest.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    with pytest.raises(SuiteError) as info:
        read_manifest(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message and "'ds/a'" in message
    assert "spt prepare" in message
