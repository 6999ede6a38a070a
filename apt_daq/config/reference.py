"""The run file's JSON Schema and the config reference of docs/config.md, generated from the
models."""

from __future__ import annotations

import json
import re

from pydantic import BaseModel

from apt_daq.config.models import (
    AnalysisConfig,
    CoatingConfig,
    FeedbackConfig,
    GrainConfig,
    InstrumentConfig,
    PhaseConfig,
    ReconstructionConfig,
    RunConfig,
    RunFile,
    SpecimenConfig,
    StepConfig,
    StopConfig,
)


def json_schema() -> str:
    """The JSON Schema of a run file."""
    return json.dumps(RunFile.model_json_schema(), indent=2)


def markdown_reference() -> str:
    """The config reference (docs/config.md), generated from the models' fields."""
    from apt_daq.driver_config import DldConfig, HvConfig, LaserConfig

    sections: list[tuple[str, type[BaseModel]]] = [
        ("Run file (top level)", RunFile), ("instrument", InstrumentConfig),
        ("specimen", SpecimenConfig), ("specimen.phases[]", PhaseConfig),
        ("specimen.grains[]", GrainConfig), ("specimen.coating", CoatingConfig),
        ("run", RunConfig), ("run.schedule[]", StepConfig), ("run.stop", StopConfig),
        ("run.feedback", FeedbackConfig), ("analysis", AnalysisConfig),
        ("analysis.reconstruction", ReconstructionConfig), ("drivers.laser", LaserConfig),
        ("drivers.hv", HvConfig), ("drivers.dld", DldConfig),
    ]
    out = [
        "# Config reference",
        "",
        "Generated from the pydantic models in `apt_daq/config/` and `drivers/config.py`",
        "(`python -m apt_daq.config > docs/config.md`). Units are in the key names. Unknown keys",
        "are errors. A run file may give `instrument`, `specimen`, `drivers` and `analysis` as a",
        "path to another YAML file (relative to the run file) or inline.",
        "",
    ]
    for title, model in sections:
        out += [f"## `{title}`", "", (model.__doc__ or "").strip().splitlines()[0], "",
                "| key | type | default | meaning |", "| --- | --- | --- | --- |"]
        for name, f in model.model_fields.items():
            if name == "source":
                continue
            ann = getattr(f.annotation, "__name__", None) or str(f.annotation)
            ann = re.sub(r"[\w.]+\.(\w+)", r"\1", ann).replace("|", "or")
            default = "required" if f.is_required() else (
                "(see below)" if f.default_factory else repr(f.default))
            sym = {"gt": ">", "ge": ">=", "lt": "<", "le": "<=", "min_length": "min length"}
            bounds = ", ".join(f"{sym[k]} {getattr(m, k)}" for m in f.metadata for k in sym
                               if getattr(m, k, None) is not None)
            desc = (f.description or "") + (f" ({bounds})" if bounds else "")
            out.append(f"| `{name}` | {ann} | {default} | {desc} |")
        out.append("")
    return "\n".join(out + _unit_slip_section())


def _unit_slip_section() -> list[str]:
    """The values that ``config check`` and ``run`` warn about as likely unit slips."""
    from apt_daq.config.preflight import UNIT_SLIPS

    out = ["## Likely unit slips (warnings)", "",
           "`config check` and `run` (before anything is switched on) warn about a value far "
           "below what a", "LEAP-class instrument uses: most likely a unit slip. It still runs. "
           "Above the range, the", "hard limits refuse a value already "
           "(`drivers.laser.max_energy_pj`, `instrument.max_pulse_rate_hz`,",
           "`drivers.hv.limit_v`, `instrument.max_voltage_v`).", "",
           "| key | warned below | in use | likely meant | why this threshold |",
           "| --- | --- | --- | --- | --- |"]
    for key, s in UNIT_SLIPS.items():
        keys = f"`run.{key}`" + (", `run.schedule[].laser_pj`" if key == "laser_pj" else "")
        out.append(f"| {keys} | {s.below:.6g} {s.unit} | {s.in_use} | {s.meant} | {s.why} |")
    return [*out, ""]
