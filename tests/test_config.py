"""The typed configuration (spt/config/): one loader, strict keys, typed values, params.yaml
documenting exactly what the schema holds, and command-line values checked like the file's.

The command-level cases drive `spt.cli.main` with a params file and a tiny prepared dataset and
expect the one-line error before any model is built: each is a silent coercion or a silently
accepted key that an audit found (issue #12).
"""

from __future__ import annotations

import dataclasses
import os
import typing
from pathlib import Path

import pytest
import yaml

from spt.config import SuiteConfig, load_config, override, parse_config
from spt.config.schema import is_section, walk
from spt.errors import SuiteError
from tests.harness_synthetic import write_dataset
from tests.test_cli_bad_input import evaluate_argv, one_line_error, train_argv, write_params

REPO = Path(__file__).resolve().parent.parent
PARAMS = REPO / "params.yaml"


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("config") / "prepared"
    write_dataset(root, "synA", [("blob", 64, 64)] * 2, seed=1)
    return root


# --- params.yaml and the schema document the same keys ----------------------------------------


def _documented(node: dict, prefix: str = "") -> set[str]:
    keys = set()
    for key, value in node.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        keys.add(dotted)
        if isinstance(value, dict) and not _opaque(dotted):
            keys |= _documented(value, dotted)
    return keys


def _opaque(dotted: str) -> bool:
    """Mappings whose entries another layer checks (datasets, methods, checkpoints)."""
    hint = _schema_types().get(dotted)
    return typing.get_origin(hint) is dict


def _schema_types() -> dict[str, object]:
    return {key: hint for key, _, hint in walk(SuiteConfig)}


def test_params_yaml_documents_every_setting_and_no_other():
    documented = _documented(yaml.safe_load(PARAMS.read_text()))
    schema = set(_schema_types())
    assert sorted(schema - documented) == [], "settings the code reads that params.yaml lacks"
    assert sorted(documented - schema) == [], "keys in params.yaml the schema does not know"


def test_params_yaml_loads_and_round_trips():
    config = load_config(PARAMS, required=True)
    raw = yaml.safe_load(PARAMS.read_text())
    for key, _, hint in walk(SuiteConfig):
        if is_section(hint):
            continue
        node, value = raw, config
        for part in key.split("."):
            node, value = node[part], getattr(value, part)
        if isinstance(value, tuple):
            value = list(value)
        if typing.get_origin(hint) is not dict:
            assert node == value or (node is None and value is None), key
    # Every default of the code matches the file, except where the file sets the embedded
    # default's own choices; these are listed here, so a drifting default shows up.
    defaults = SuiteConfig()
    differs = {
        key
        for key, _, hint in walk(SuiteConfig)
        if not is_section(hint) and _get(config, key) != _get(defaults, key)
    }
    assert differs == {
        "data.synthetic.normal_train", "data.synthetic.normal_test",
        "data.synthetic.defects_per_type", "data.datasets", "pipeline.sam_checkpoint",
        "pipeline.prepared_roots", "pipeline.datasets", "pipeline.optional_datasets",
        "pipeline.trained_methods", "sam.checkpoint_dir", "methods",
        # the analyses' small embedded versions (the code's defaults are the full ones)
        "analyses.robustness.box_shift", "analyses.robustness.box_scale",
        "analyses.robustness.box_hqsam", "analyses.robustness.point_counts",
        "analyses.robustness.click_px", "analyses.robustness.coarse_tolerance",
        "analyses.robustness.severities", "analyses.label_efficiency.methods",
        "analyses.label_efficiency.k", "analyses.transfer.methods", "analyses.transfer.held_out",
    }  # fmt: skip


def _get(config, key):
    for part in key.split("."):
        config = getattr(config, part)
    return config


def test_schema_defaults_match_the_layers_that_use_them():
    from spt.harness.prompts import DEFAULT_MASK_PROMPT_LOGIT, DEFAULT_PROMPT_MODES
    from spt.training.engine import TrainConfig
    from spt.training.samples import TRAIN_PROMPT_MODES, SampleOptions

    defaults = SuiteConfig()
    assert defaults.evaluate.prompt_modes == tuple(DEFAULT_PROMPT_MODES)
    assert defaults.evaluate.mask_prompt_logit == DEFAULT_MASK_PROMPT_LOGIT
    assert defaults.train.prompt_modes == tuple(TRAIN_PROMPT_MODES)
    engine = TrainConfig()
    for f in dataclasses.fields(TrainConfig):
        if f.name != "extra":
            assert getattr(defaults.train, f.name) == getattr(engine, f.name), f.name
    options, augment = SampleOptions(), defaults.train.augment
    assert (options.hflip, options.lsj_prob, tuple(options.lsj_scale)) == (
        augment.hflip, augment.lsj_prob, augment.lsj_scale,
    )  # fmt: skip


def test_configuration_reference_is_current(capsys):
    from spt.cli import main

    assert main(["config", "--reference"]) == 0
    committed = (REPO / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert committed == capsys.readouterr().out, (
        "docs/configuration.md is stale: spt config --reference > docs/configuration.md"
    )
    for name in ("spt", "lora", "adapter", "wesam", "zero_shot"):
        assert f"## `methods.{name}`" in committed


def test_spt_config_prints_the_checked_settings(tmp_path, capsys):
    from spt.cli import main

    params = write_params(tmp_path, {"evaluate": {"seed": 4}, "methods": {"lora": {"rank": 2}}})
    assert main(["config", "--params", params]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["evaluate"]["seed"] == 4 and shown["evaluate"]["resize"] == "square"
    assert shown["methods"]["lora"]["rank"] == 2 and shown["methods"]["lora"]["alpha"] == 1.0
    assert shown["methods"]["wesam"]["lora_rank"] == 4  # defaults of unconfigured methods
    params = write_params(tmp_path, {"methods": {"lora": {"rnak": 2}}})
    one_line_error(["config", "--params", params], capsys, "methods.lora.rnak is not a known")
    params = write_params(tmp_path, {"data": {"datasets": {"x": {"layout": "nope"}}}})
    one_line_error(["config", "--params", params], capsys, "data.datasets.x.layout")


# --- the loader refuses what used to pass silently -------------------------------------------


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ({"train": {"augment": {"hflip": True}}}, "train.augment.hflip must be a number in [0, 1], got True"),
        ({"train": {"augment": {"hflip": "0.5"}}}, "train.augment.hflip must be a number in [0, 1], got '0.5'"),
        ({"train": {"augment": {"lsj_scale": "12"}}}, "train.augment.lsj_scale must be a list of 2 numbers"),
        ({"train": {"augment": {"lsj_scale": [2, 1]}}}, "train.augment.lsj_scale must be [low, high] with low <= high"),
        ({"evaluate": {"seed": 1.9}}, "evaluate.seed must be an integer in [0, 4294967295], got 1.9"),
        ({"evaluate": {"seed": True}}, "evaluate.seed must be an integer in [0, 4294967295], got True"),
        ({"report": {"n_boot": 2.7}}, "report.n_boot must be an integer in [1, 10000000], got 2.7"),
        ({"evaluate": {"mask_prompt_logit": float("nan")}}, "evaluate.mask_prompt_logit must be a number in (0, 1000], got nan"),
        ({"evaluate": {"mask_prompt_logit": float("inf")}}, "evaluate.mask_prompt_logit must be a number in (0, 1000], got inf"),
        ({"data": {"prepared_root": ["x"]}}, "data.prepared_root must be a non-empty string"),
        ({"evaluate": {"seeds": 1}}, "evaluate.seeds is not a known setting (did you mean seed?)"),
        ({"pipeline": {"backbon": "vit_b"}}, "pipeline.backbon is not a known setting"),
        ({"sam": {"checkpoint_folder": "x"}}, "sam.checkpoint_folder is not a known setting"),
        ({"report": {"nboot": 3}}, "report.nboot is not a known setting"),
        ({"data": {"rawroot": "x"}}, "data.rawroot is not a known setting (did you mean raw_root?)"),
        ({"evalute": {"seed": 1}}, "evalute is not a known setting (did you mean evaluate?)"),
        ({"methods": {"spt": {"train": {"lrr": 1}}}}, "methods.spt.train.lrr is not a known setting"),
        ({"methods": {"spt": {"train": {"augment": {"hflip": 2}}}}}, "methods.spt.train.augment.hflip must be"),
        ({"methods": {"spt": [1]}}, "methods.spt must be a mapping"),
        ({"pipeline": {"seeds": [0, "1"]}}, "pipeline.seeds must be a list of integers in [0, 4294967295]"),
        ({"pipeline": {"prepared_roots": []}}, "pipeline.prepared_roots must be a list of names"),
        ({"sam": {"checkpoints": {"vit_b": 3}}}, "sam.checkpoints must be a mapping whose values"),
        ({"evaluate": {"resize": "sq"}}, "evaluate.resize must be one of square, longest-side"),
        ({"train": [1]}, "train must be a mapping (key: value lines)"),
    ],
)  # fmt: skip
def test_loader_refuses_with_the_dotted_key(raw, needle):
    with pytest.raises(SuiteError) as caught:
        parse_config(raw, "my.yaml")
    text = str(caught.value)
    assert text.startswith("my.yaml: ") and needle in text and "\n" not in text, text


def test_a_key_given_twice_is_refused(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("evaluate:\n  seed: 1\ntrain:\n  epochs: 1\nevaluate:\n  seed: 2\n")
    with pytest.raises(
        SuiteError, match=r"p.yaml line 5: .*'evaluate' is given twice \(first on line 1\)"
    ):
        load_config(path)
    path.write_text("train:\n  lr: 0.1\n  lr: 0.2\n")
    with pytest.raises(SuiteError, match="'lr' is given twice"):
        load_config(path)


def test_a_params_file_is_bounded_before_it_is_expanded(tmp_path):
    """An alias bomb, a deep nesting, a huge file or a pipe is one line, at once (issue #14)."""
    path = tmp_path / "p.yaml"
    lines = ["l0: &l0 [box, box, box, box, box, box, box, box, box, box]"]
    for level in range(1, 11):  # 10**11 strings once expanded
        lines.append(f"l{level}: &l{level} [" + ", ".join([f"*l{level - 1}"] * 10) + "]")
    lines.append("evaluate: {prompt_modes: *l8}")
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(SuiteError, match=r"p.yaml line \d+: more than 100 YAML aliases"):
        load_config(path)
    path.write_text("evaluate: {prompt_modes: " + "[" * 20_000 + "]" * 20_000 + "}\n")
    with pytest.raises(SuiteError, match="nested more than 32 levels deep"):
        load_config(path)
    path.write_text("# padding\n" * 200_000)
    with pytest.raises(SuiteError, match="bytes, more than a params file holds"):
        load_config(path)
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    with pytest.raises(SuiteError, match="not a regular file"):
        load_config(fifo, required=True)


def test_a_params_file_that_is_not_text_is_one_line(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_bytes(b"\x00\x01\x02\xc3\xbf")  # valid UTF-8, not YAML
    with pytest.raises(SuiteError) as caught:
        load_config(path)
    assert "not valid YAML" in str(caught.value) and "\n" not in str(caught.value)


def test_unknown_prompt_modes_are_refused_at_load_even_when_overridden():
    """A bad evaluate.prompt_modes was accepted when --prompt-modes replaced it (own audit)."""
    for section in ("evaluate", "train"):
        with pytest.raises(
            SuiteError, match=f"{section}.prompt_modes names an unknown prompt mode 'boxx'"
        ):
            parse_config({section: {"prompt_modes": ["box", "boxx"]}})
    with pytest.raises(SuiteError, match="pretrain.probe_modes names an unknown prompt mode"):
        parse_config({"pretrain": {"probe_modes": ["points-0"]}})
    with pytest.raises(SuiteError, match="evaluate.prompt_modes lists box more than once"):
        parse_config({"evaluate": {"prompt_modes": ["box", "coarse", "box"]}})
    with pytest.raises(SuiteError, match="methods.spt.train.prompt_modes names an unknown"):
        parse_config({"methods": {"spt": {"train": {"prompt_modes": ["coarse-boxes"]}}}})


def test_a_huge_wrong_value_gives_a_short_message_at_once():
    huge = [["x"] * 1000] * 1000  # a million strings, shared rows as YAML aliases build them
    with pytest.raises(SuiteError) as caught:
        parse_config({"pipeline": {"backbone": huge}})
    assert len(str(caught.value)) < 300 and "pipeline.backbone must be" in str(caught.value)


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ({"evaluate": {"seed": 10**20}}, "evaluate.seed must be an integer in [0, 4294967295]"),
        ({"pipeline": {"seeds": [0, 2**40]}}, "pipeline.seeds must be a list of integers in [0, 4294967295]"),
        ({"report": {"seed": -1}}, "report.seed must be an integer in [0, 4294967295], got -1"),
        ({"train": {"lr": 1.0e300}}, "train.lr must be a number in (0, 10], got 1e+300"),
        ({"report": {"n_boot": 10**12}}, "report.n_boot must be an integer in [1, 10000000]"),
        ({"methods": {"spt": {"init_seed": 2**64}}}, None),  # checked when the method is built
    ],
)  # fmt: skip
def test_numbers_are_range_checked_before_any_work(raw, needle):
    if needle is None:
        from spt.harness.method import build_method

        with pytest.raises(SuiteError, match=r"methods.spt.init_seed must be an integer in \[0, "):
            build_method("spt", "tiny", params=raw["methods"]["spt"])
        return
    with pytest.raises(SuiteError) as caught:
        parse_config(raw)
    assert needle in str(caught.value), str(caught.value)


def test_method_train_overrides_merge_key_by_key():
    config = parse_config(
        {"train": {"augment": {"lsj_scale": [0.5, 1.5]}, "lr": 0.01},
         "methods": {"wesam": {"lora_rank": 4, "train": {"augment": {"hflip": 0.0}}}}}
    )  # fmt: skip
    merged = config.train_for("wesam")
    assert merged.augment.hflip == 0.0 and merged.augment.lsj_scale == (0.5, 1.5)
    assert merged.lr == 0.01 and config.train_for("spt").augment.hflip == 0.5
    assert config.method_params("wesam") == {"lora_rank": 4}
    assert config.train_key("wesam", "augment") == "methods.wesam.train.augment"


def test_command_line_overrides_are_checked_like_the_file():
    config = parse_config({"evaluate": {"seed": 3}})
    assert override(config, "evaluate.seed", 5, "--seed").evaluate.seed == 5
    assert config.evaluate.seed == 3  # frozen: the override made a new config
    for value in (1.9, True, "3", -1):
        with pytest.raises(SuiteError, match=r"^--seed must be an integer in \[0, 4294967295\]"):
            override(config, "evaluate.seed", value, "--seed")
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.evaluate.seed = 4  # type: ignore[misc]


# --- through the commands: refused before any model is built ---------------------------------


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({"evaluate": {"seed": 1.9}}, "evaluate.seed must be an integer in [0, 4294967295], got 1.9"),
        ({"evaluate": {"seed": True}}, "evaluate.seed must be an integer in [0, 4294967295], got True"),
        ({"evaluate": {"mask_prompt_logit": float("nan")}}, "evaluate.mask_prompt_logit must be"),
        ({"evaluate": {"instance": True}}, "evaluate.instance is not a known setting"),
        ({"pipeline": {"backbon": "vit_b"}}, "pipeline.backbon is not a known setting"),
        ({"methods": {"zero_shott": {"multimask_output": True}}}, "methods.zero_shott names no registered method"),
        ({"reports": {"n_boot": 5}}, "reports is not a known setting (did you mean report?)"),
    ],
)  # fmt: skip
def test_evaluate_refuses_bad_params(tmp_path, capsys, prepared, params, needle):
    argv = evaluate_argv(write_params(tmp_path, params), prepared, tmp_path / "out")
    one_line_error([*argv, "--datasets", "synA"], capsys, needle)
    assert not (tmp_path / "out").exists()


def test_evaluate_refuses_a_duplicated_section(tmp_path, capsys, prepared):
    text = "evaluate:\n  prompt_modes: [box]\nevaluate:\n  prompt_modes: [coarse]\n"
    argv = evaluate_argv(write_params(tmp_path, text), prepared, tmp_path / "out")
    one_line_error([*argv, "--datasets", "synA"], capsys, "'evaluate' is given twice")


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({"train": {"augment": {"hflip": True}}}, "train.augment.hflip must be a number in [0, 1], got True"),
        ({"train": {"augment": {"hflip": "0.5"}}}, "train.augment.hflip must be a number in [0, 1], got '0.5'"),
        ({"train": {"augment": {"lsj_scale": "12"}}}, "train.augment.lsj_scale must be a list of 2 numbers"),
        ({"train": {"augment": {"lsj_prob": "1"}}}, "train.augment.lsj_prob must be a number in [0, 1], got '1'"),
        ({"methods": {"sptt": {"lora_rank": 4}}}, "methods.sptt names no registered method"),
    ],
)  # fmt: skip
def test_train_refuses_bad_params(tmp_path, capsys, prepared, params, needle):
    argv = train_argv(
        write_params(tmp_path, params), prepared, tmp_path / "out", "--method", "lora"
    )
    argv += ["--datasets", "synA"]
    one_line_error(argv, capsys, needle)


def test_report_refuses_a_fractional_n_boot(tmp_path, capsys):
    argv = ["report", "--params", write_params(tmp_path, {"report": {"n_boot": 2.7}}),
            "--eval-root", str(tmp_path / "none"), "--out", str(tmp_path / "rep")]  # fmt: skip
    one_line_error(argv, capsys, "report.n_boot must be an integer in [1, 10000000], got 2.7")


def test_report_reads_pipeline_prepared_roots(tmp_path, monkeypatch):
    """dvc.yaml declares pipeline.prepared_roots for the report stage: the report must read it."""
    import spt.reports.pipeline_report as pipeline_report
    from spt.cli import main

    seen = {}
    monkeypatch.setattr(pipeline_report, "build_report", lambda c: seen.setdefault("c", c) and [])
    params = write_params(tmp_path, {"pipeline": {"prepared_roots": ["somewhere/prepared"]}})
    assert main(["report", "--params", params, "--out", str(tmp_path / "rep")]) == 0
    assert seen["c"].prepared_roots == (Path("somewhere/prepared"),)


def test_prepare_refuses_a_list_as_prepared_root(tmp_path, capsys):
    params = write_params(tmp_path, {"data": {"prepared_root": [str(tmp_path / "x")]}})
    one_line_error(["prepare", "--params", params], capsys, "data.prepared_root must be")
    assert not any(p.name.startswith("[") for p in Path.cwd().iterdir())
