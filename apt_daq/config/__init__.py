"""Pydantic models of the instrument, specimen, run and analysis, and their YAML loading.

A run file names (or inlines) an instrument and a specimen file, picks the driver backends and
describes the run. Every validation error names the file, the YAML line, the field path and what
was expected, e.g. ``configs/runs/x.yaml:12 run.laser_pj: must be > 0, got -5``.

One concept per module, every name importable from here as before:

- :mod:`apt_daq.config.errors`: ``ConfigError``, ``Problems``;
- :mod:`apt_daq.config.models`: the pydantic models (``RunFile``, ``RunConfig``, ...) and the
  checks across sections (``instrument_problems``);
- :mod:`apt_daq.config.loader`: YAML with line numbers (``compose_yaml``, ``where``,
  ``validation_problems``, ``load_yaml_model``);
- :mod:`apt_daq.config.preflight`: what kind of file, and everything a run would trip over
  (``preflight``, ``load_run``);
- :mod:`apt_daq.config.reference`: the JSON Schema and docs/config.md
  (``python -m apt_daq.config > docs/config.md``).
"""

from __future__ import annotations

from apt_daq.config.errors import ConfigError, Problems
from apt_daq.config.loader import (
    _INCLUDES,
    KIND_WORDS,
    Lines,
    _explain,
    _load_tree,
    compose_yaml,
    file_kind,
    load_yaml_model,
    validation_problems,
    where,
)
from apt_daq.config.models import (
    AnalysisConfig,
    CoatingConfig,
    FeedbackConfig,
    GrainConfig,
    InstrumentConfig,
    MoNeutralConfig,
    PhaseChemistryConfig,
    PhaseConfig,
    ReconstructionConfig,
    RunConfig,
    RunFile,
    SpecimenConfig,
    StepConfig,
    StopConfig,
    _default_mo_neutral,
    _Model,
    _partial_instrument_problems,
    instrument_problems,
)
from apt_daq.config.preflight import (
    RATE_PERCENT_SUSPECT,
    UNIT_SLIPS,
    UnitSlip,
    _data_problems,
    _get,
    _model_problems,
    _not_a_run_file,
    _warnings,
    detect_model,
    load_run,
    preflight,
    preflight_tree,
    schedule_cut_short,
)
from apt_daq.config.reference import json_schema, markdown_reference
from apt_daq.driver_config import DriversConfig

__all__ = [
    "KIND_WORDS",
    "RATE_PERCENT_SUSPECT",
    "UNIT_SLIPS",
    "_INCLUDES",
    "AnalysisConfig",
    "CoatingConfig",
    "ConfigError",
    "DriversConfig",
    "FeedbackConfig",
    "GrainConfig",
    "InstrumentConfig",
    "Lines",
    "MoNeutralConfig",
    "PhaseChemistryConfig",
    "PhaseConfig",
    "Problems",
    "ReconstructionConfig",
    "RunConfig",
    "RunFile",
    "SpecimenConfig",
    "StepConfig",
    "StopConfig",
    "UnitSlip",
    "_Model",
    "_data_problems",
    "_default_mo_neutral",
    "_explain",
    "_get",
    "_load_tree",
    "_model_problems",
    "_not_a_run_file",
    "_partial_instrument_problems",
    "_warnings",
    "compose_yaml",
    "detect_model",
    "file_kind",
    "instrument_problems",
    "json_schema",
    "load_run",
    "load_yaml_model",
    "markdown_reference",
    "preflight",
    "preflight_tree",
    "schedule_cut_short",
    "validation_problems",
    "where",
]
