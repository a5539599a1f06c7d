"""The suite's configuration: params.yaml's schema (one frozen, typed dataclass per section,
:mod:`spt.config.sections`), the machinery that checks a file against it
(:mod:`spt.config.schema`), the one loader (:mod:`spt.config.loader`) and the value checks the
methods' own params share (:mod:`spt.config.checks`). A base layer: imports nothing of the
suite but :mod:`spt.errors`."""

from spt.config.loader import DEFAULT_PARAMS, load_config, override, parse_config
from spt.config.sections import (
    AugmentSection,
    DataSection,
    EvaluateSection,
    PipelineSection,
    PretrainSection,
    ReportSection,
    SamSection,
    SuiteConfig,
    SyntheticSize,
    TrainSection,
)

__all__ = [
    "DEFAULT_PARAMS",
    "AugmentSection",
    "DataSection",
    "EvaluateSection",
    "PipelineSection",
    "PretrainSection",
    "ReportSection",
    "SamSection",
    "SuiteConfig",
    "SyntheticSize",
    "TrainSection",
    "load_config",
    "override",
    "parse_config",
]
