"""Bad command-line and params.yaml input: one `error:` line naming the file or key, exit 2.

Every case drives `spt.cli.main` in-process with a params file written to tmp_path and a tiny
prepared dataset (tests/harness_synthetic.py), and fails before any model runs unless it says
otherwise.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from spt.cli import main
from spt.errors import SuiteError
from tests.harness_synthetic import write_dataset


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    """Prepared root with dataset ``synA``: two test defect images and one train defect image."""
    root = tmp_path_factory.mktemp("bad_input") / "prepared"
    write_dataset(root, "synA", [("blob", 64, 64)] * 2, seed=1)
    return root


def write_params(tmp_path: Path, params: dict | str, name: str = "params.yaml") -> str:
    path = tmp_path / name
    path.write_text(params if isinstance(params, str) else yaml.safe_dump(params))
    return str(path)


def one_line_error(argv: list[str], capsys, *needles: str) -> str:
    """Run the CLI, expect exit 2 and a single `error:` line holding every needle."""
    code = main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def evaluate_argv(params: str, prepared: Path, out: Path, *extra: str) -> list[str]:
    return [
        "evaluate", "--params", params, "--prepared-root", str(prepared), "--out", str(out),
        "--limit", "1", "--no-progress", *extra,
    ]  # fmt: skip


def train_argv(params: str, prepared: Path, out: Path, *extra: str) -> list[str]:
    return [
        "train", "--params", params, "--prepared-root", str(prepared), "--out", str(out),
        "--no-progress", *extra,
    ]  # fmt: skip


# --- the params file itself ----------------------------------------------------------------------


def test_missing_params_file_is_an_error_and_keeps_the_report(tmp_path, capsys):
    out = tmp_path / "prep"
    out.mkdir()
    (out / "prepare_report.json").write_text("earlier run")
    typo = str(tmp_path / "typo.yaml")
    one_line_error(["prepare", "--params", typo, "--out", str(out)], capsys, typo, "--params")
    assert (out / "prepare_report.json").read_text() == "earlier run"
    one_line_error(["backbones", "--params", typo], capsys, typo, "not found")


def test_params_folder_is_an_error(tmp_path, capsys):
    one_line_error(
        ["report", "--params", str(tmp_path)], capsys, str(tmp_path), "folder", "--params"
    )


def test_without_params_defaults_apply_but_prepare_needs_datasets(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no params.yaml here
    assert main(["backbones"]) == 0
    capsys.readouterr()
    one_line_error(["prepare", "--out", "prep"], capsys, "params.yaml", "data.datasets")
    assert not (tmp_path / "prep").exists()


def test_prepare_with_no_dataset_configured_is_an_error(tmp_path, capsys):
    params = write_params(tmp_path, {"data": {"seed": 0}})
    one_line_error(["prepare", "--params", params], capsys, params, "data.datasets")


def test_non_utf8_params_is_one_line(tmp_path, capsys):
    path = tmp_path / "params.yaml"
    path.write_bytes(b"data:\n  seed: 0  # caf\xe9\n")
    one_line_error(["backbones", "--params", str(path)], capsys, str(path), "UTF-8")


# --- file-system errors: the safety net in main ------------------------------------------------


def test_output_that_is_a_file_is_one_line(tmp_path, capsys, prepared):
    blocker = tmp_path / "taken"
    blocker.write_text("a file, not a folder")
    argv = [
        "synth",
        "--out",
        str(blocker),
        "--layouts",
        "mtd",
        "--params",
        write_params(tmp_path, {}),
    ]
    one_line_error(argv, capsys, str(blocker), "Not a directory", "permissions")
    params = write_params(tmp_path, {"evaluate": {"prompt_modes": ["box"]}})
    argv = evaluate_argv(params, prepared, blocker, "--datasets", "synA")
    one_line_error(argv, capsys, str(blocker))
    assert blocker.read_text() == "a file, not a folder"


def test_os_error_without_a_file_name_is_one_line(capsys, monkeypatch):
    import spt.commands.backbones as backbones

    def full_disk(args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(backbones, "run", full_disk)
    one_line_error(["backbones"], capsys, "No space left on device")


def test_closed_stdout_pipe_is_quiet(capsys, monkeypatch):
    import spt.commands.backbones as backbones

    def reader_gone(args):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(backbones, "run", reader_gone)
    assert main(["backbones"]) == 1
    assert capsys.readouterr().err == ""


# --- lists of names ------------------------------------------------------------------------------


def test_lone_strings_are_one_item_lists(tmp_path, capsys, prepared):
    pipeline = {"prepared_roots": str(prepared), "datasets": "synA", "optional_datasets": "nope"}
    argv = ["evaluate", "--out", str(tmp_path / "o"), "--limit", "1", "--no-progress"]
    params = write_params(tmp_path, {"pipeline": pipeline, "evaluate": {"prompt_modes": "box"}})
    assert main([*argv, "--params", params]) == 0
    assert "optional dataset nope is not prepared" in capsys.readouterr().out
    records = pd.read_parquet(tmp_path / "o" / "zero_shot" / "tiny" / "records.parquet")
    assert set(records["dataset"]) == {"synA"} and set(records["prompt_mode"]) == {"box"}
    evaluate = {"datasets": "synA", "prompt_modes": "box"}  # the same run: resumed, not redone
    params = write_params(
        tmp_path, {"pipeline": {"prepared_roots": str(prepared)}, "evaluate": evaluate}
    )
    assert main([*argv, "--params", params]) == 0
    assert pd.read_parquet(tmp_path / "o" / "zero_shot" / "tiny" / "records.parquet").equals(
        records
    )


def test_lone_strings_in_train_settings(tmp_path, capsys, prepared, monkeypatch):
    import spt.training.run as run_module

    seen = {}

    def stop(method, rows, config, options, out_dir, **kwargs):
        seen.update(datasets=set(rows["dataset"]), modes=options.prompt_modes)
        raise SuiteError("stop here")

    monkeypatch.setattr(run_module, "train_method", stop)
    params = write_params(tmp_path, {"train": {"datasets": "synA", "prompt_modes": "box"}})
    one_line_error(train_argv(params, prepared, tmp_path / "t"), capsys, "stop here")
    assert seen == {"datasets": {"synA"}, "modes": ("box",)}


@pytest.mark.parametrize(
    "params, key",
    [
        ({"evaluate": {"datasets": {"synA": 1}}}, "evaluate.datasets"),
        ({"evaluate": {"prompt_modes": [["box"]], "datasets": "synA"}}, "evaluate.prompt_modes"),
        ({"pipeline": {"datasets": 3}}, "pipeline.datasets"),
        ({"pipeline": {"optional_datasets": {"mtd": True}}}, "pipeline.optional_datasets"),
        ({"evaluate": [1]}, "evaluate"),
    ],
)
def test_other_types_where_a_list_is_expected(tmp_path, capsys, prepared, params, key):
    path = write_params(tmp_path, params)
    one_line_error(evaluate_argv(path, prepared, tmp_path / "o"), capsys, path, key)


@pytest.mark.parametrize(
    "params, key",
    [
        ({"evaluate": {"prompt_modes": [], "datasets": ["synA"]}}, "evaluate.prompt_modes"),
        ({"evaluate": {"datasets": []}}, "evaluate.datasets"),
        ({"pipeline": {"prepared_roots": [], "datasets": ["synA"]}}, "pipeline.prepared_roots"),
    ],
)
def test_empty_lists_are_errors(tmp_path, capsys, prepared, params, key):
    path = write_params(tmp_path, params)
    argv = ["evaluate", "--params", path, "--out", str(tmp_path / "o"), "--no-progress"]
    if key != "pipeline.prepared_roots":
        argv += ["--prepared-root", str(prepared)]
    one_line_error(argv, capsys, path, key, "empty")
    assert not (tmp_path / "o").exists()


def test_empty_train_lists_are_errors(tmp_path, capsys, prepared):
    path = write_params(tmp_path, {"methods": {"spt": {"train": {"datasets": []}}}})
    one_line_error(train_argv(path, prepared, tmp_path / "t"), capsys, "methods.spt.train.datasets")


# --- booleans and mappings ------------------------------------------------------------------------


def test_instances_must_be_a_real_boolean(tmp_path, capsys, prepared):
    path = write_params(tmp_path, {"evaluate": {"instances": "no", "datasets": ["synA"]}})
    one_line_error(evaluate_argv(path, prepared, tmp_path / "o"), capsys, "evaluate.instances")


@pytest.mark.parametrize(
    "params, key",
    [
        ({"train": [1]}, "train must be a mapping"),
        ({"methods": {"spt": {"train": [1]}}}, "methods.spt.train must be a mapping"),
        ({"methods": {"spt": [1]}}, "methods.spt must be a mapping"),
        ({"train": {"augment": [1]}}, "train.augment must be a mapping"),
        ({"methods": {"spt": {"train": {"augment": "x"}}}}, "methods.spt.train.augment"),
    ],
)
def test_sections_must_be_mappings(tmp_path, capsys, prepared, params, key):
    path = write_params(tmp_path, params)
    argv = train_argv(path, prepared, tmp_path / "t", "--datasets", "synA")
    one_line_error(argv, capsys, path, key)


def test_synthetic_sizes_must_be_a_mapping(tmp_path, capsys):
    path = write_params(tmp_path, {"data": {"synthetic": [1]}})
    argv = ["prepare", "--params", path, "--synthetic", str(tmp_path / "twins")]
    one_line_error(argv, capsys, path, "data.synthetic must be a mapping")
    assert not (tmp_path / "twins").exists()


def test_sam_settings_are_checked(tmp_path, capsys):
    path = write_params(tmp_path, {"sam": {"checkpoints": ["vit_b.pth"]}})
    one_line_error(["backbones", "--params", path], capsys, path, "sam.checkpoints")


# --- train limits and duplicates ------------------------------------------------------------------


def test_train_refuses_negative_limit_and_repeated_datasets(tmp_path, capsys, prepared):
    path = write_params(tmp_path, {})
    out = tmp_path / "t"
    one_line_error(train_argv(path, prepared, out, "--limit", "-1"), capsys, "--limit -1")
    argv = train_argv(path, prepared, out, "--datasets", "synA", "synA")
    one_line_error(argv, capsys, "synA", "more than once", "--datasets")
    path = write_params(tmp_path, {"train": {"datasets": ["synA", "synA"]}})
    one_line_error(train_argv(path, prepared, out), capsys, "more than once", "train.datasets")
    assert not out.exists()


# --- weights: published checkpoints and trained methods -----------------------------------------


@pytest.mark.parametrize("command", ["evaluate", "train"])
def test_published_backbone_without_its_checkpoint(
    tmp_path, capsys, prepared, monkeypatch, command
):
    monkeypatch.delenv("SPT_SAM_CHECKPOINT_DIR", raising=False)
    folder = tmp_path / "ckpts"
    path = write_params(tmp_path, {"sam": {"checkpoint_dir": str(folder)}})
    argv = [command, "--params", path, "--backbone", "vit_b", "--datasets", "synA"]
    argv += ["--prepared-root", str(prepared), "--out", str(tmp_path / "o"), "--no-progress"]
    expected = str(folder / "sam_vit_b_01ec64.pth")
    one_line_error(argv, capsys, expected, "--checkpoint", "sam.checkpoints.vit_b")
    assert not (tmp_path / "o").exists()


def test_configured_checkpoint_is_used_when_none_is_given(tmp_path, capsys, prepared):
    missing = tmp_path / "tiny_sam.pth"
    path = write_params(tmp_path, {"sam": {"checkpoints": {"tiny": str(missing)}}})
    argv = evaluate_argv(path, prepared, tmp_path / "o", "--datasets", "synA")
    one_line_error(argv, capsys, str(missing), "not found")


def test_trainable_method_needs_trained_or_untrained(tmp_path, capsys, prepared):
    path = write_params(tmp_path, {})
    argv = evaluate_argv(path, prepared, tmp_path / "o", "--datasets", "synA")
    argv += ["--method", "spt", "--prompt-modes", "box"]
    one_line_error(argv, capsys, "--trained", "work/train/spt/tiny/trained.pt", "--untrained")
    assert not (tmp_path / "o").exists()
    assert main([*argv, "--untrained"]) == 0
    assert (tmp_path / "o" / "spt" / "tiny" / "records.parquet").is_file()


def test_official_spt_checkpoint_needs_no_trained(tmp_path, capsys, prepared):
    # methods.spt.official_checkpoint is the weights: the method loads it (here: not found)
    missing = str(tmp_path / "official.pth")
    path = write_params(tmp_path, {"methods": {"spt": {"official_checkpoint": missing}}})
    argv = evaluate_argv(path, prepared, tmp_path / "o", "--datasets", "synA", "--method", "spt")
    line = one_line_error(argv, capsys, missing)
    assert "--untrained" not in line


# --- messages that name the right thing -----------------------------------------------------------


def test_synth_names_the_flag(tmp_path, capsys):
    argv = ["synth", "--out", str(tmp_path / "s"), "--params", write_params(tmp_path, {})]
    argv += ["--defects-per-type", "1"]
    one_line_error(argv, capsys, "--defects-per-type 1")
    assert not (tmp_path / "s").exists()


def test_trained_that_is_a_folder_is_named_as_such(tmp_path, capsys, prepared):
    params = write_params(tmp_path, {})
    folder = tmp_path / "work" / "train"
    folder.mkdir(parents=True)
    argv = evaluate_argv(params, prepared, tmp_path / "eval", "--datasets", "synA")
    argv += ["--method", "spt", "--trained", str(folder)]
    one_line_error(argv, capsys, str(folder), "is a directory")


@pytest.mark.parametrize(
    "params, key, known",
    [
        ({"train": {"epochz": 2}}, "train.epochz", "epochs"),
        ({"methods": {"spt": {"train": {"lrr": 0.1}}}}, "methods.spt.train.lrr", "lr"),
        ({"train": {"augment": {"flip": 0.5}}}, "train.augment.flip", "hflip"),
    ],
)
def test_unknown_train_settings_are_named(tmp_path, capsys, prepared, params, key, known):
    path = write_params(tmp_path, params)
    one_line_error(train_argv(path, prepared, tmp_path / "t"), capsys, key, known)
