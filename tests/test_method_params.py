"""Method params: typed readers, declared keys, and one-line errors naming methods.<name>.<key>."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from spt.cli import main
from spt.config.checks import read_bool, read_choice, read_float, read_int, read_str
from spt.errors import SuiteError
from spt.harness.method import available_methods, build_method, method_class
from spt.model.method import spt_config_from
from tests.harness_synthetic import write_dataset

REPO_PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"
WHERE = "methods.demo"


def _error(call, *args, **kwargs) -> str:
    with pytest.raises(SuiteError) as info:
        call(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    ("read", "value", "limits", "expected"),
    [
        (read_int, "x", {}, "an integer"),
        (read_int, 2.0, {}, "an integer"),
        (read_int, True, {}, "an integer"),
        (read_int, -3, {"minimum": 1}, "an integer >= 1"),
        (read_float, "x", {}, "a number"),
        (read_float, None, {}, "a number"),
        (read_float, float("nan"), {}, "a number"),
        (read_float, 0, {"minimum": 0, "min_open": True}, "a number > 0"),
        (read_float, 1.0, {"minimum": 0, "maximum": 1, "max_open": True}, "in [0, 1)"),
        (read_bool, "maybe", {}, "true or false"),
        (read_bool, 1, {}, "true or false"),
        (read_str, 5, {}, "a string"),
    ],
)
def test_readers_reject_wrong_types_and_ranges(read, value, limits, expected):
    message = _error(read, {"knob": value}, WHERE, "knob", **limits)
    assert message.startswith(f"{WHERE}.knob must be ") and expected in message
    assert f"got {value!r}" in message and "params file" in message


def test_readers_accept_good_values_and_defaults():
    params = {"i": 3, "f": 2, "b": False, "c": "qv", "s": "a/b", "empty": ""}
    assert read_int(params, WHERE, "i", 1, minimum=1) == 3
    assert read_int(params, WHERE, "missing", 7) == 7
    assert read_float(params, WHERE, "f", 0.0) == 2.0 and isinstance(
        read_float(params, WHERE, "f", 0.0), float
    )
    assert read_bool(params, WHERE, "b", True) is False
    assert read_choice(params, WHERE, "c", "qkv", ("qkv", "qv")) == "qv"
    assert read_str(params, WHERE, "s") == "a/b"
    assert read_str(params, WHERE, "empty") is None and read_str(params, WHERE, "none") is None
    assert "one of qkv, qv" in _error(read_choice, {"c": "qk"}, WHERE, "c", "qkv", ("qkv", "qv"))


@pytest.mark.parametrize(
    ("method", "params", "key", "expected"),
    [
        ("spt", {"lora_rank": "x"}, "lora_rank", "an integer >= 1"),
        ("spt", {"lora_rank": -3}, "lora_rank", "an integer >= 1"),
        ("spt", {"relation_threshold": "x"}, "relation_threshold", "a number"),
        ("spt", {"detach_draft": "no"}, "detach_draft", "true or false"),
        ("spt", {"relation_blocks": [5]}, "relation_blocks", "null (every block)"),
        ("spt", {"loss_points": 0}, "loss_points", "an integer >= 1"),
        ("adapter", {"ratio": "x"}, "ratio", "a number > 0"),
        ("adapter", {"train_decoder": "yes"}, "train_decoder", "true or false"),
        ("wesam", {"lora_rank": "x"}, "lora_rank", "an integer >= 1"),
        ("wesam", {"temperature": 0}, "temperature", "a number > 0"),
        ("wesam", {"temperature": -0.3}, "temperature", "a number > 0"),
        ("wesam", {"focal_weight": "x"}, "focal_weight", "a number >= 0"),
        ("zero_shot", {"multimask_output": "maybe"}, "multimask_output", "true or false"),
        ("lora", {"multimask_output": "maybe"}, "multimask_output", "true or false"),
        ("lora", {"dropout": 5.0}, "dropout", "a number in [0, 1)"),
        ("lora", {"peft_adapter": 3}, "peft_adapter", "a string"),
        ("lora", {"loss_oversample": 0.5}, "loss_oversample", "a number >= 1"),
    ],
)
def test_bad_param_values_are_one_line_errors_naming_the_key(method, params, key, expected):
    message = _error(build_method, method, "tiny", params=params)
    assert message.startswith(f"methods.{method}.{key} must be ") and expected in message
    assert repr(params[key]) in message


@pytest.mark.parametrize(
    ("method", "typo"),
    [("spt", "lora_rnk"), ("zero_shot", "multimsk"), ("lora", "rnak"), ("adapter", "ration")],
)
def test_unknown_keys_are_errors_listing_the_valid_ones(method, typo):
    message = _error(build_method, method, "tiny", params={typo: 1})
    assert message.startswith(f"methods.{method}.{typo}: unknown param")
    for key in method_class(method).known_params:
        assert key in message


def test_every_method_declares_its_keys_and_accepts_the_train_overrides():
    for name in available_methods():
        assert method_class(name).known_params, name
    # The methods section of the repository's params.yaml, `train:` overrides included, as
    # `spt evaluate` passes it.
    sections = yaml.safe_load(REPO_PARAMS.read_text())["methods"]
    assert "train" in sections["wesam"]
    for name, params in sections.items():
        assert set(params) - {"train"} <= method_class(name).known_params, name
        build_method(name, "tiny", params=params)


def test_a_params_section_that_is_not_a_mapping_is_an_error():
    assert "methods.zero_shot must be a mapping" in _error(
        build_method, "zero_shot", "tiny", params=[1, 2]
    )


def test_spt_config_from_checks_types_without_building_a_model():
    config = spt_config_from({"lora_rank": 4, "lora_alpha": 2, "relation_blocks": [1]})
    assert (config.lora_rank, config.lora_alpha, config.relation_blocks) == (4, 2.0, (1,))
    assert "methods.spt.lora_alpha" in _error(spt_config_from, {"lora_alpha": 0})


def test_cli_reports_a_bad_method_param_in_one_line(tmp_path, capsys):
    write_dataset(tmp_path / "prepared", "synA", [("blob", 64, 64)], seed=1)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"methods": {"zero_shot": {"multimask_output": "maybe"}}}))
    argv = ["evaluate", "--no-progress", "--params", str(params), "--datasets", "synA"]
    argv += ["--prepared-root", str(tmp_path / "prepared"), "--out", str(tmp_path / "eval")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: methods.zero_shot.multimask_output")
