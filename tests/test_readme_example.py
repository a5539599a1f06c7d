"""The README's "Adding a baseline" example runs as written against the current interface."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from spt.errors import SuiteError
from spt.harness.prompts import build_prompt

README = Path(__file__).resolve().parents[1] / "README.md"


def _example_class():
    text = README.read_text(encoding="utf-8")
    code = text.split("# baselines/my_method.py\n", 1)[1].split("```", 1)[0]
    namespace: dict = {}
    exec(compile(code, "README.md example", "exec"), namespace)
    return namespace["MyMethod"]


def test_readme_method_example_encodes_decodes_and_checks_its_params():
    example = _example_class()
    method = example("tiny", params={"init_seed": 3})
    with torch.inference_mode():
        state = method.encode(torch.randn(1, 3, 128, 128))
        mask = np.zeros((128, 128), np.uint8)
        mask[40:80, 30:70] = 255
        logits = method.decode(state, build_prompt("box", mask, 0, "x", 32))["final"]
    assert logits.shape == (1, 1, 32, 32)
    with pytest.raises(SuiteError, match="init_seed"):
        example("tiny", params={"init_seed": "x"})
