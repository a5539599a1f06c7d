"""The pipeline as DVC sees it: `dvc exp run` twice in a temporary copy of this checkout, then
`dvc exp show --json` (the headline metric of both experiments) and `dvc plots show` (an HTML
page with the three declared plots, filled from the workspace).

The copy runs the real dvc.yaml and stage commands on a shrunken embedded default (one
synthetic dataset, one trained method, one epoch, box prompts), about two minutes here.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.external_tools import run_tool, tool

ROOT = Path(__file__).resolve().parent.parent
HEADLINE = "metrics/headline.json"
#: -S overrides that shrink the embedded default to a few images and one trained method.
SMALL = {
    "data.synthetic": {"normal_train": 1, "normal_test": 1, "defects_per_type": 2},
    "pipeline.datasets": ["mtd_twin"],
    "pipeline.optional_datasets": [],
    "pipeline.trained_methods": ["spt"],  # the report's reference method
    "evaluate.prompt_modes": ["box"],
    "train.epochs": 1,
    "train.prompt_modes": ["box"],
    "report.n_boot": 200,
    "report.figure_n_boot": 20,
    "report.examples": 1,
}
TWO_LRS = (0.001, 0.01)  # the two experiments differ in train.lr


def copy_checkout(target: Path) -> None:
    """The tracked and untracked-but-not-ignored files of this checkout (what a commit of the
    working tree would hold), as a fresh git repository with one commit."""
    git = tool("git")
    listing = subprocess.run(
        [git, "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout.decode().split("\0")  # fmt: skip
    for name in filter(None, listing):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    (target / "data").mkdir(exist_ok=True)
    params = yaml.safe_load((target / "params.yaml").read_text())
    for key, value in SMALL.items():
        section, *rest = key.split(".")
        node = params[section]
        for part in rest[:-1]:
            node = node[part]
        node[rest[-1]] = value
    (target / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run_tool(git, "init", "-q", cwd=target)
    run_tool(git, "add", "-A", cwd=target)
    run_tool(git, "commit", "-qm", "copy", cwd=target)


@pytest.fixture(scope="module")
def experiments(tmp_path_factory):
    tool("git")
    dvc = tool("dvc")
    repo = tmp_path_factory.mktemp("dvc_exp")
    copy_checkout(repo)
    for lr in TWO_LRS:
        # the main pipeline (its metrics stage and what it needs); a one-dataset pipeline has
        # no dataset to hold out for the transfer analysis
        run_tool(dvc, "exp", "run", "-n", f"lr{lr}", "-S", f"train.lr={lr}", "metrics", cwd=repo)
    shown = json.loads(run_tool(dvc, "exp", "show", "--json", cwd=repo))
    return repo, shown


def _experiment_metrics(shown: list[dict]) -> dict[str, dict]:
    """Experiment name -> the data of metrics/headline.json it holds."""
    found = {}
    for baseline in shown:
        for branch in baseline.get("experiments") or []:
            for revision in branch.get("revs") or []:
                metrics = (revision.get("data") or {}).get("metrics") or {}
                name = revision.get("name") or revision.get("rev")
                found[name] = (metrics.get(HEADLINE) or {}).get("data") or {}
    return found


def test_exp_show_holds_the_headline_metric_of_both_experiments(experiments):
    repo, shown = experiments
    found = _experiment_metrics(shown)
    names = [f"lr{lr}" for lr in TWO_LRS]
    assert set(names) <= set(found), f"experiments in exp show: {sorted(found)}"
    for name in names:
        headline = found[name]
        for key in (
            "box.spt.final.iou",
            "box.spt.draft.iou",
            "box.zero_shot.final.iou",
            "box.spt.final.biou",
        ):
            assert isinstance(headline.get(key), float), f"{name}: {key} missing: {headline}"
            assert 0.0 <= headline[key] <= 1.0
        assert headline["n_seeds"] == 1 and headline["n_datasets"] == 1
    # zero-shot does not train: the same in both; the trained method saw another lr
    first, second = (found[name] for name in names)
    assert first["box.zero_shot.final.iou"] == second["box.zero_shot.final.iou"]
    assert first["box.spt.final.iou"] != second["box.spt.final.iou"]


def test_plots_show_writes_a_page_with_the_three_plots(experiments):
    repo, _ = experiments
    out = repo / "page"
    run_tool(tool("dvc"), "plots", "show", "-o", str(out), cwd=repo)
    page = (out / "index.html").read_text()
    specs = re.findall(r"var spec = (\{.*?\});\n", page, flags=re.S)
    assert len(specs) == 3, page[:2000]
    titles = " | ".join(json.loads(t)["title"]["text"] for t in specs)
    assert "Training loss" in titles and "per dataset" in titles and "per seed" in titles
    rows = [row for spec in specs for row in json.loads(spec)["data"]["values"]]
    assert any(row.get("run") == "spt seed0" and row.get("epoch") == "1" for row in rows)
    assert {row.get("dataset") for row in rows if "dataset" in row} == {"mtd_twin", "mean"}
    assert {row.get("method") for row in rows if "seed" in row and "iou" in row} == {
        "zero_shot",
        "spt (draft)",
        "spt (final)",
    }
