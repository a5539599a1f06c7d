"""Method params: each method's typed config class, and one-line errors naming
methods.<name>.<key>."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

import pytest
import yaml

from spt.cli import main
from spt.config.schema import BadSetting, convert
from spt.errors import SuiteError
from spt.harness.method import available_methods, build_method, method_class, param_names
from spt.model.method import spt_config_from
from tests.harness_synthetic import write_dataset

REPO_PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


def _error(call, *args, **kwargs) -> str:
    with pytest.raises(SuiteError) as info:
        call(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    ("hint", "value", "meta", "expected"),
    [
        (int, "x", {}, "an integer"),
        (int, 2.0, {}, "an integer"),
        (int, True, {}, "an integer"),
        (int, -3, {"minimum": 1}, "an integer >= 1"),
        (float, "x", {}, "a number"),
        (float, None, {}, "a number"),
        (float, float("nan"), {}, "a number"),
        (float, 0, {"minimum": 0, "min_open": True}, "a number > 0"),
        (float, 1.0, {"minimum": 0, "maximum": 1, "max_open": True}, "in [0, 1)"),
        (bool, "maybe", {}, "true or false"),
        (bool, 1, {}, "true or false"),
        (str, 5, {}, "a non-empty string"),
        (Literal["qkv", "qv"], "qk", {}, "one of qkv, qv"),
    ],
)
def test_values_of_the_wrong_kind_or_range_are_refused(hint, value, meta, expected):
    with pytest.raises(BadSetting) as info:
        convert(value, hint, meta)
    assert expected in info.value.expected and info.value.value is value


def test_good_values_are_kept_and_ints_become_floats():
    assert convert(3, int, {"minimum": 1}) == 3
    assert convert(2, float, {}) == 2.0 and isinstance(convert(2, float, {}), float)
    assert convert(False, bool, {}) is False
    assert convert("qv", Literal["qkv", "qv"], {}) == "qv"
    assert convert(None, str | None, {}) is None
    assert convert("box", tuple[str, ...], {}) == ("box",)


@pytest.mark.parametrize(
    ("method", "params", "key", "expected"),
    [
        ("spt", {"lora_rank": "x"}, "lora_rank", "an integer >= 1"),
        ("spt", {"lora_rank": -3}, "lora_rank", "an integer >= 1"),
        ("spt", {"relation_threshold": "x"}, "relation_threshold", "a number"),
        ("spt", {"detach_draft": "no"}, "detach_draft", "true or false"),
        ("spt", {"relation_blocks": [5]}, "relation_blocks", "a list of integers in [0, 1]"),
        ("spt", {"relation_blocks": []}, "relation_blocks", "at least one"),
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
        ("lora", {"peft_adapter": 3}, "peft_adapter", "a non-empty string"),
        ("lora", {"targets": "k"}, "targets", "one of qkv, qv"),
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
    assert message.startswith(f"methods.{method}.{typo} is not a known setting (did you mean ")
    for key in param_names(method_class(method)):
        assert key in message


def test_params_yaml_documents_every_method_param_and_no_other():
    """params.yaml's methods section lists each method's declared params, no more, no less (the
    defaults where the embedded default keeps them), and builds every method."""
    sections = yaml.safe_load(REPO_PARAMS.read_text())["methods"]
    assert sorted(sections) == available_methods()
    assert "train" in sections["wesam"]
    for name, params in sections.items():
        declared = param_names(method_class(name))
        assert declared, name
        assert sorted(set(params) - {"train"}) == sorted(declared), name
        build_method(name, "tiny", params=params)


def test_method_configs_are_frozen_typed_dataclasses():
    for name in available_methods():
        cls = method_class(name).config_class
        assert dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen, name
        for field in dataclasses.fields(cls):
            assert field.metadata.get("doc"), f"{name}.{field.name} has no doc"
    method = build_method("lora", "tiny", params={"rank": 2})
    assert method.config.rank == 2 and method.config.targets == "qkv"


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
