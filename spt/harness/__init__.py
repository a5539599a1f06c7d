"""The shared evaluation harness: prompt modes, input protocol, metrics, methods, records.

See docs/harness.md for the protocol and how to add a method.
"""

from spt.harness.method import Method, available_methods, build_method, register_method
from spt.harness.metrics import MaskScorer, boundary_iou, dice, iou
from spt.harness.prompts import DEFAULT_PROMPT_MODES, Prompt, PromptUnavailable, build_prompt

__all__ = [
    "DEFAULT_PROMPT_MODES",
    "MaskScorer",
    "Method",
    "Prompt",
    "PromptUnavailable",
    "available_methods",
    "boundary_iou",
    "build_method",
    "build_prompt",
    "dice",
    "iou",
    "register_method",
]
