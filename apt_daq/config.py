"""Pydantic models of the instrument, specimen, run and analysis, and their YAML loading.

A run file names (or inlines) an instrument and a specimen file, picks the driver backends and
describes the run. Every validation error names the file, the YAML line, the field path and what
was expected, e.g. ``configs/runs/x.yaml:12 run.laser_pj: must be > 0, got -5``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from apt_daq.driver_config import DriversConfig


class ConfigError(ValueError):
    """A config that does not validate. ``str()`` gives one line per problem."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


class Problems(ValueError):
    """What a model validator found, each at a key path below the model it validates, e.g.
    ``[(("run", "laser_pj"), "5000 pJ is above ...")]``: :func:`validation_problems` names
    each one's own file:line (a plain ValueError would be blamed on the model's first line)."""

    def __init__(self, problems: list[tuple[tuple[Any, ...], str]]):
        self.problems = problems
        super().__init__("; ".join(f"{'.'.join(map(str, loc))}: {msg}" for loc, msg in problems))


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


# --------------------------------------------------------------------------- instrument
class InstrumentConfig(_Model):
    """A LEAP 5000 (XS straight flight path, XR reflectron) as configuration."""

    name: str = "LEAP 5000 XS"
    model: Literal["XS", "XR"] = "XS"
    flight_path_mm: float = Field(100.0, gt=0, description="effective flight path L, mm")
    reflectron: bool = False
    detector_diameter_mm: float = Field(80.0, gt=0, description="active MCP diameter, mm")
    detection_efficiency: float = Field(0.80, gt=0, le=1, description="fraction of ions detected")
    tdc_bin_ns: float = Field(0.025, gt=0, description="TDC time bin, ns")
    signal_velocity_mm_per_ns: float = Field(
        1.0, gt=0, description="delay-line signal propagation speed along the detector axis, mm/ns"
    )
    delay_line_offset_ns: float = Field(
        60.0, ge=0, description="signal delay from detector centre to each delay-line end, ns"
    )
    dead_time_ns: float = Field(3.0, ge=0, description="pair dead time of the delay line, ns")
    dead_zone_mm: float = Field(4.0, ge=0, description="pair dead zone radius, mm")
    timing_jitter_ns: float = Field(0.05, ge=0, description="rms timing jitter of a hit, ns")
    t0_ns: float = Field(0.0, description="time offset between trigger and ion departure, ns")
    background_per_ns: float = Field(
        1e-7, ge=0, description="uniform background hits (dark counts, DC evaporation), per ns"
    )
    max_pulse_rate_hz: float = Field(500e3, gt=0)
    laser_wavelength_nm: float = Field(355.0, gt=0)
    max_voltage_v: float = Field(15000.0, gt=0, description="the supply's own ceiling, V")


# --------------------------------------------------------------------------- specimen
class MoNeutralConfig(_Model):
    """A share of an element's atoms that leaves in neutral MO molecules (never detected):
    ``share * exp(-(F - 22 V/nm) / field_scale)`` (docs/physics.md, "Molecular ions")."""

    element: str
    share: float = Field(..., ge=0, le=0.9, description="s0: the share at F = 22 V/nm")
    field_scale_v_per_nm: float = Field(
        ..., description="w_s, V/nm: > 0 grows at low field, < 0 at high field; 1e9: constant"
    )

    @model_validator(mode="after")
    def _nonzero(self) -> MoNeutralConfig:
        if self.field_scale_v_per_nm == 0:
            raise ValueError("field_scale_v_per_nm must not be 0")
        return self


def _default_mo_neutral() -> list[MoNeutralConfig]:
    return [MoNeutralConfig(element="Ni", share=0.05, field_scale_v_per_nm=1e9),
            MoNeutralConfig(element="Co", share=0.015, field_scale_v_per_nm=3.4),
            MoNeutralConfig(element="Mn", share=0.015, field_scale_v_per_nm=3.4)]


class PhaseChemistryConfig(_Model):
    """Field-dependent molecular-ion chemistry of a phase (empirical and calibrated; each value
    and its source in docs/physics.md, "Molecular ions"). The defaults are NMC811's."""

    o2_ratio_ref: float = Field(2.45, gt=0, description="intrinsic O2+/O+ at F = 22 V/nm")
    o2_field_scale_v_per_nm: float = Field(
        6.0, gt=0, description="w_O: O2+/O+ = o2_ratio_ref exp(-(F - 22) / w_O)")
    o2_loss_field_v_per_nm: float = Field(
        14.5, gt=0, description="F_l: half the free O leaves as neutral O2 at this field")
    o2_loss_scale_v_per_nm: float = Field(1.0, gt=0, description="w_l of the O2 loss sigmoid")
    lio_share: float = Field(0.01, ge=0, lt=1, description="share of Li leaving as LiO+")
    mo_neutral: list[MoNeutralConfig] = Field(
        default_factory=_default_mo_neutral,
        description="element-specific neutral MO losses (NiO, CoO, MnO, ...)")


class PhaseConfig(_Model):
    """A crystalline phase: stoichiometry, density, evaporation chemistry and Li mobility.

    The simulator reads the phase's properties, never its name."""

    name: str
    composition: dict[str, float] = Field(
        ..., description="atoms per formula unit, e.g. {Li: 1, Ni: 0.8, Co: 0.1, Mn: 0.1, O: 2}"
    )
    atomic_density_per_nm3: float = Field(..., gt=0, description="atoms per nm^3")
    chemistry: PhaseChemistryConfig = Field(
        default_factory=PhaseChemistryConfig,
        description="molecular-ion chemistry: o2_ratio_ref (2.45), o2_field_scale_v_per_nm (6), "
        "o2_loss_field_v_per_nm (14.5), o2_loss_scale_v_per_nm (1), lio_share (0.01), "
        "mo_neutral [{element, share, field_scale_v_per_nm}] (NMC811's NiO/CoO/MnO); "
        "docs/physics.md")
    li_episode_amplitude_coated: float = Field(
        0.17, ge=0, lt=1,
        description="amplitude a of the Li-rich/Li-poor episodes under a conducting shell "
        "(the Li agglomeration FDA measures; uncoated specimens: sim.physics LI_MIGRATION)")

    @model_validator(mode="after")
    def _positive(self) -> PhaseConfig:
        bad = [k for k, v in self.composition.items() if v < 0]
        if bad or not self.composition or sum(self.composition.values()) <= 0:
            raise ValueError(f"composition must be non-negative and not all zero: {bad}")
        return self


class GrainConfig(_Model):
    """A spherical grain of another phase inside the matrix (e.g. a Li-Mn-O grain in NMC811)."""

    phase: str
    center_nm: tuple[float, float, float] = Field(..., description="x, y, z of the centre, nm")
    radius_nm: float = Field(..., gt=0)


class CoatingConfig(_Model):
    """A metal shell deposited in the FIB around the specimen (Cr, with implanted Ga)."""

    material: str = "Cr"
    thickness_nm: float = Field(20.0, gt=0, le=200)
    ga_fraction: float = Field(0.02, ge=0, lt=1, description="implanted Ga atom fraction")
    oxide_fraction: float = Field(
        0.15, ge=0, lt=1, description="fraction of shell metal leaving as oxide ions (CrO)"
    )
    atomic_density_per_nm3: float = Field(83.3, gt=0, description="bcc Cr: 83.3 atoms/nm^3")
    apex_thickness_nm: float = Field(
        0.0, ge=0, le=200,
        description="shell left over the very apex when the run starts, nm (0: the ramp-up "
        "removed it and the oxide core is exposed in the centre)",
    )


class SpecimenConfig(_Model):
    """A needle-shaped specimen: geometry, phases, grains and an optional coating."""

    name: str
    apex_radius_nm: float = Field(30.0, gt=0, description="initial apex radius R0, nm")
    shank_half_angle_deg: float = Field(8.0, ge=0, lt=45, description="shank half-angle, deg")
    field_factor: float = Field(3.3, gt=1, description="k_f in F = V / (k_f R)")
    image_compression: float = Field(1.65, gt=0, description="xi, image compression factor")
    phases: list[PhaseConfig] = Field(..., min_length=1)
    matrix: str = Field(..., description="name of the phase that fills the specimen")
    grains: list[GrainConfig] = Field(default_factory=list)
    coating: CoatingConfig | None = None
    composition_spread: float = Field(
        0.0, ge=0, lt=0.5,
        description="particle-to-particle relative spread of cation ratios (drawn per seed)",
    )

    @model_validator(mode="after")
    def _phases_known(self) -> SpecimenConfig:
        names = {p.name for p in self.phases}
        for want in [self.matrix, *(g.phase for g in self.grains)]:
            if want not in names:
                raise ValueError(f"phase {want!r} is not among phases {sorted(names)}")
        return self

    def phase(self, name: str) -> PhaseConfig:
        return next(p for p in self.phases if p.name == name)


# --------------------------------------------------------------------------- run
class StepConfig(_Model):
    """One section of a schedule: a laser energy held until an ion count or a duration."""

    laser_pj: float = Field(..., gt=0, description="laser pulse energy, pJ")
    ions: int | None = Field(None, gt=0, description="detected ions in this step")
    duration_s: float | None = Field(None, gt=0, description="instrument time in this step, s")
    label: str | None = None

    @model_validator(mode="after")
    def _one_end(self) -> StepConfig:
        if self.ions is None and self.duration_s is None:
            raise ValueError("a step needs ions or duration_s")
        return self


class StopConfig(_Model):
    """Stop conditions; the first one met ends the run."""

    ions: int | None = Field(1_000_000, gt=0, description="detected ions")
    max_voltage_v: float | None = Field(None, gt=0, description="stop when V_dc would exceed, V")
    instrument_time_s: float | None = Field(None, gt=0, description="instrument time, s")
    on_fracture: bool = Field(True, description="stop when the specimen fractures")


class FeedbackConfig(_Model):
    """Detection-rate feedback on V_dc: integral control on the log of the rate, gain-scheduled
    by the measured sensitivity of the rate to the voltage.

    Every readout block: e = ln(target / rate), clipped to [-4 ln(max_error_ratio),
    ln(max_error_ratio)] (no ions: the upper clip; a burst is corrected four times faster). The setpoint moves by d ln V = gain * e / s, where s = d ln(rate) / d ln(V) is
    estimated from successive blocks (a secant, smoothed, clipped to [5, 300]). Field
    evaporation is exponential in the field, so s is large (tens to hundreds) and changes with
    laser energy and temperature; scheduling the gain on it keeps the loop equally fast and
    stable for any specimen. There is no integral state to wind up: clamping dV to the ramp
    rate, the step limit and the HV limit is the anti-windup.
    """

    gain: float = Field(0.5, gt=0, le=1, description="fraction of the log error corrected/block")
    sensitivity_initial: float = Field(
        50.0, ge=5, le=300, description="initial d ln(rate) / d ln(V), before it is measured"
    )
    max_error_ratio: float = Field(3.0, gt=1, description="rate error clip upwards (no ions)")
    max_step_v: float = Field(200.0, gt=0, description="largest setpoint change per block, V")
    laser_step_backoff: float = Field(
        0.05, ge=0, lt=0.5, description="fraction V is lowered before a laser-energy increase"
    )


class RunConfig(_Model):
    """The acquisition: laser, pulsing, temperature, target rate, stop conditions, seed."""

    name: str = "run"
    laser_pj: float | None = Field(None, gt=0, description="constant laser energy, pJ")
    schedule: list[StepConfig] | None = Field(None, description="laser-energy steps in order")
    pulse_rate_hz: float = Field(100e3, gt=0, description="laser pulse repetition rate, Hz")
    base_temperature_k: float = Field(60.0, gt=0, description="specimen base temperature, K")
    target_detection_rate: float = Field(
        0.005, gt=0, lt=1, description="ions detected per pulse (0.005 = 0.5 %)"
    )
    start_voltage_v: float = Field(2000.0, ge=0, description="V_dc before the feedback takes over")
    chunk_pulses: int = Field(1_000_000, gt=0, description="pulses per DLD readout block")
    store_raw: bool = Field(True, description="also store the raw DLD records in /raw")
    fracture_rate_fraction: float = Field(
        0.02, gt=0, lt=1, description="rate below this fraction of target after settling ..."
    )
    fracture_blocks: int = Field(3, gt=0, description="... for this many blocks: a fracture")
    feedback: FeedbackConfig = Field(default_factory=FeedbackConfig)
    stop: StopConfig = Field(default_factory=StopConfig)
    seed: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _laser(self) -> RunConfig:
        if (self.laser_pj is None) == (self.schedule is None):
            raise ValueError("give exactly one of laser_pj or schedule")
        return self

    def steps(self) -> list[StepConfig]:
        """The schedule; a constant laser energy is one open-ended step."""
        if self.schedule is not None:
            return list(self.schedule)
        return [StepConfig(laser_pj=self.laser_pj, ions=self.stop.ions or 2**62)]


# --------------------------------------------------------------------------- analysis
class ReconstructionConfig(_Model):
    """Point-projection reconstruction (Bas et al. 1995, or the Geiser/Gault variant)."""

    method: Literal["bas", "geiser"] = "bas"
    evaporation_field_v_per_nm: float = Field(28.0, gt=0, description="F_e, V/nm")
    field_factor: float | None = Field(None, gt=1, description="k_f; default: the specimen's")
    image_compression: float | None = Field(None, gt=0, description="xi; default: specimen's")
    atomic_volume_nm3: float = Field(0.0094, gt=0, description="Omega per detected ion, nm^3")


class AnalysisConfig(_Model):
    """What ``apt-daq analyze`` does by default: ranges, ROI, FDA, corrections."""

    ranges: str | None = Field(None, description="RRNG/RNG file; relative to the run file")
    roi: str | None = Field(None, description="e.g. 'cylinder:25' (diameter nm) or 'box:20,20,50'")
    fda_block_ions: int = Field(100, gt=1, description="ions per FDA block (Moody 2008)")
    fda_ions: list[str] = Field(default_factory=lambda: ["Li+", "O2+"])
    voltage_correction: bool = True
    bowl_correction: bool = True
    reference_peak: str | None = Field(None, description=(
        "range name for the corrections (None: the most counted range within half the "
        "detector radius)"))
    reconstruction: ReconstructionConfig = Field(default_factory=ReconstructionConfig)


# --------------------------------------------------------------------------- run file
class RunFile(_Model):
    """A whole run description: what ``apt-daq run RUN.yaml`` reads."""

    instrument: InstrumentConfig
    specimen: SpecimenConfig
    drivers: DriversConfig = Field(default_factory=DriversConfig)
    run: RunConfig
    analysis: AnalysisConfig = Field(default_factory=AnalysisConfig)
    source: str | None = Field(None, description="the file this was loaded from")

    @model_validator(mode="after")
    def _within_the_instruments(self) -> RunFile:
        found = instrument_problems(self.run, self.drivers, self.instrument)
        if found:
            raise Problems(found)
        return self

    def resolve(self, relative: str | None) -> Path | None:
        """A path given in the run file, relative to the run file's folder."""
        if relative is None:
            return None
        p = Path(relative)
        if not p.is_absolute() and self.source:
            p = Path(self.source).parent / p
        return p


def instrument_problems(run: RunConfig, drivers: DriversConfig,
                        instrument: InstrumentConfig | None) -> list[tuple[tuple[Any, ...], str]]:
    """What the drivers would refuse when the run starts (or reaches a step): laser energies
    above the laser driver's maximum, a pulse rate above the instrument's, a supply limit
    below the start voltage. Each at the key path to blame."""
    laser, hv = drivers.laser, drivers.hv
    found: list[tuple[tuple[Any, ...], str]] = []
    energies = ([(("run", "laser_pj"), run.laser_pj)] if run.laser_pj is not None else
                [(("run", "schedule", i, "laser_pj"), s.laser_pj)
                 for i, s in enumerate(run.schedule or [])])
    for loc, pj in energies:
        if pj > laser.max_energy_pj:
            found.append((loc, f"{pj:g} pJ is above drivers.laser.max_energy_pj "
                               f"{laser.max_energy_pj:g} (the laser driver refuses it)"))
    if instrument is not None and run.pulse_rate_hz > instrument.max_pulse_rate_hz:
        found.append((("run", "pulse_rate_hz"), (
            f"{run.pulse_rate_hz:g} Hz is above instrument.max_pulse_rate_hz "
            f"{instrument.max_pulse_rate_hz:g} ({instrument.name})")))
    if run.start_voltage_v > hv.limit_v:
        loc = (("drivers", "hv", "limit_v") if "limit_v" in hv.model_fields_set
               else ("run", "start_voltage_v"))
        found.append((loc, f"drivers.hv.limit_v {hv.limit_v:g} V is below "
                           f"run.start_voltage_v {run.start_voltage_v:g} V (the ramp to the "
                           "start voltage is refused)"))
    return found


def _partial_instrument_problems(data: dict[str, Any]) -> list[tuple[tuple[Any, ...], str]]:
    """:func:`instrument_problems` from the sections that validate on their own (when another
    section, a missing specimen file say, fails the run file as a whole)."""
    def part(model: type[BaseModel], key: str, default: Any) -> Any:
        try:
            return model.model_validate(data.get(key, default))
        except ValidationError:
            return None

    run, drivers = part(RunConfig, "run", None), part(DriversConfig, "drivers", {})
    if run is None or drivers is None:
        return []
    return instrument_problems(run, drivers, part(InstrumentConfig, "instrument", None))


# --------------------------------------------------------------------------- YAML loading
Lines = dict[tuple[Any, ...], tuple[str, int]]
_INCLUDES = {"instrument", "specimen", "drivers", "analysis"}


def compose_yaml(path: Path) -> tuple[Any, Lines]:
    """Load YAML and remember, for every key path, the file and line it came from."""
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError([f"{path}: cannot read: {e.strerror or e}"]) from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError([f"{where}: not valid YAML: {getattr(e, 'problem', e)}"]) from None
    lines: Lines = {}

    def walk(n: yaml.Node, at: tuple[Any, ...]) -> None:
        lines.setdefault(at, (str(path), n.start_mark.line + 1))
        if isinstance(n, yaml.MappingNode):
            for k, v in n.value:
                lines[(*at, k.value)] = (str(path), k.start_mark.line + 1)
                walk(v, (*at, k.value))
        elif isinstance(n, yaml.SequenceNode):
            for i, v in enumerate(n.value):
                walk(v, (*at, i))

    if node is not None:
        walk(node, ())
    return data, lines


def _load_tree(path: Path, missing: dict[str, str] | None = None
               ) -> tuple[dict[str, Any], Lines]:
    """The YAML tree of ``path`` with its include files in place. An include file that does
    not exist raises, or, given ``missing``, is reported there (key: problem) and left out."""
    data, lines = compose_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError([f"{path}:1: expected a mapping at the top level"])
    gone: dict[str, str] = {}
    for key in sorted(_INCLUDES & set(data)):
        ref = data.get(key)
        if isinstance(ref, str):
            sub_path = (path.parent / ref) if not Path(ref).is_absolute() else Path(ref)
            if not sub_path.is_file():
                f, line = lines.get((key,), (str(path), 1))
                gone[key] = f"{f}:{line} {key}: file not found: {sub_path}"
                continue
            sub, sub_lines = compose_yaml(sub_path)
            data[key] = sub
            for k, v in sub_lines.items():
                lines[(key, *k)] = v
    if gone and missing is None:
        raise ConfigError(list(gone.values()))
    if missing is not None:
        missing.update(gone)
    return data, lines


def _explain(err: dict[str, Any]) -> str:
    kind, ctx = err["type"], err.get("ctx") or {}
    words = {
        "greater_than": "must be > {gt}",
        "greater_than_equal": "must be >= {ge}",
        "less_than": "must be < {lt}",
        "less_than_equal": "must be <= {le}",
        "extra_forbidden": "unknown key (misspelt?)",
        "missing": "required but missing",
        "literal_error": "must be one of {expected}",
    }
    msg = words.get(kind, err["msg"]).format(**ctx) if kind in words else err["msg"]
    if kind not in ("missing", "extra_forbidden"):
        msg += f", got {err.get('input')!r}"
    return msg


def where(lines: Lines, loc: tuple[Any, ...], default_file: str) -> str:
    """``file:line dotted.path`` of a key path (the nearest enclosing key the YAML has); a key
    set on the command line is named by what set it (``--ions``) instead of a file line."""
    spot = (default_file, 1)
    for n in range(len(loc), -1, -1):
        if loc[:n] in lines:
            spot = lines[loc[:n]]
            break
    dotted = ".".join(str(p) for p in loc) or "(top level)"
    return f"{spot[0]} {dotted}" if spot[1] == 0 else f"{spot[0]}:{spot[1]} {dotted}"


def validation_problems(e: ValidationError, lines: Lines, default_file: str,
                        skip: set[tuple[Any, ...]] | frozenset = frozenset()) -> list[str]:
    """Turn a pydantic error into lines of ``file:line path: what was expected``; errors at or
    below a key path in ``skip`` (already reported otherwise) are left out."""
    out = []
    for err in e.errors():
        loc = tuple(err["loc"])
        found = (err.get("ctx") or {}).get("error")
        items = ([((*loc, *sub), msg) for sub, msg in found.problems]
                 if isinstance(found, Problems) else [(loc, _explain(err))])
        for at, msg in items:
            if any(at[:len(k)] == k for k in skip):
                continue
            out.append(f"{where(lines, at, default_file)}: {msg}")
    return out


def load_yaml_model(path: str | Path, model: type[_Model]) -> Any:
    """Load ``path`` as ``model`` (e.g. an InstrumentConfig file), errors with file:line."""
    path = Path(path)
    data, lines = _load_tree(path)
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ConfigError(validation_problems(e, lines, str(path))) from None


#: the kinds of apt-daq YAML file, as ``config check`` and a wrong ``run`` name them
KIND_WORDS = {"run": "a run file", "instrument": "an instrument file",
              "specimen": "a specimen file", "campaign": "a campaign (sweep) file"}
#: what a target detection rate above this most likely is: a percentage
RATE_PERCENT_SUSPECT = 0.05


def file_kind(data: Any) -> str:
    """Which kind of apt-daq YAML a loaded file is, from its keys."""
    if not isinstance(data, dict) or "run" in data:
        return "run"
    if "base" in data and ("axes" in data or "ions" in data):
        return "campaign"
    if "phases" in data or "matrix" in data:
        return "specimen"
    if "flight_path_mm" in data or "model" in data or "detector_diameter_mm" in data:
        return "instrument"
    return "run"


def _not_a_run_file(path: Path, kind: str) -> str:
    use = {"instrument": f"name it in a run file (instrument: {path})",
           "specimen": f"name it in a run file (specimen: {path})",
           "campaign": f"apt-daq campaign {path}"}[kind]
    return f"{path}:1: this is {KIND_WORDS[kind]}, not a run file: {use}"


def _get(data: Any, loc: tuple[str, ...]) -> Any:
    for k in loc:
        if not isinstance(data, dict):
            return None
        data = data.get(k)
    return data


def _data_problems(data: dict[str, Any], path: Path, lines: Lines) -> dict[tuple, str]:
    """What is wrong in the tree whether or not the models accept the rest: files that do not
    exist, ROI syntax, a detection rate given in percent."""
    found: dict[tuple, str] = {}
    ranges = _get(data, ("analysis", "ranges"))
    if isinstance(ranges, str):
        p = Path(ranges) if Path(ranges).is_absolute() else path.parent / ranges
        if not p.is_file():
            found[("analysis", "ranges")] = f"range file not found: {p}"
    roi = _get(data, ("analysis", "roi"))
    if isinstance(roi, str):
        from apt_daq.errors import UserError
        from apt_daq.roi import parse_roi

        try:
            parse_roi(roi)
        except UserError as e:
            found[("analysis", "roi")] = f"{e} (analyze would fail after the acquisition)"
    rate = _get(data, ("run", "target_detection_rate"))
    if isinstance(rate, int | float) and not isinstance(rate, bool) \
            and rate > RATE_PERCENT_SUSPECT:
        found[("run", "target_detection_rate")] = (
            f"{rate:g} ions per pulse means {100 * rate:g} % of pulses detect an ion: percent? "
            f"{rate:g} % is {rate / 100:g} (above {RATE_PERCENT_SUSPECT:g} the feedback drives "
            "the specimen to evaporate in bursts and fracture)")
    return found


def _model_problems(rf: RunFile) -> dict[tuple, str]:
    """What the models accept but the run would trip over."""
    r = rf.run
    found: dict[tuple, str] = {}
    if r.stop.max_voltage_v is not None and r.stop.max_voltage_v <= r.start_voltage_v:
        found[("run", "stop", "max_voltage_v")] = (
            f"{r.stop.max_voltage_v:g} V is not above run.start_voltage_v "
            f"{r.start_voltage_v:g} V: the run would stop at its first block")
    return found


def _warnings(rf: RunFile) -> dict[tuple, str]:
    """What runs, but likely not as meant."""
    r, found = rf.run, {}
    cut = schedule_cut_short(r)
    if cut:
        found[("run", "stop", "ions")] = f"{r.stop.ions} {cut}"
    if rf.drivers.hv.limit_v > rf.instrument.max_voltage_v:
        found[("drivers", "hv", "limit_v")] = (
            f"{rf.drivers.hv.limit_v:g} V is above instrument.max_voltage_v "
            f"{rf.instrument.max_voltage_v:g} V (the supply's own ceiling): the supply will "
            "refuse what the driver allows")
    return found


def schedule_cut_short(run: RunConfig) -> str | None:
    """In words, which schedule steps the stop ion count leaves out (``ends the run in step 0
    (5 pJ, after 2000 of its 200000 ions): steps 1-3 (10 pJ, 15 pJ, 20 pJ) will not run``);
    None when every step runs or when a step ends on time (then nobody can tell)."""
    steps = run.schedule
    if not steps or not run.stop.ions:
        return None

    def name(s: StepConfig) -> str:
        return s.label or f"{s.laser_pj:g} pJ"

    before = 0
    for i, step in enumerate(steps):
        if step.ions is None:
            return None
        if before + step.ions >= run.stop.ions:
            if i == len(steps) - 1:
                return None
            rest = steps[i + 1:]
            which = f"step {i + 1}" if len(rest) == 1 else f"steps {i + 1}-{len(steps) - 1}"
            return (f"ends the run in step {i} ({name(step)}, after {run.stop.ions - before} "
                    f"of its {step.ions} ions): {which} ({', '.join(map(name, rest))}) will "
                    "not run")
        before += step.ions
    return None


def preflight(path: str | Path, overrides: dict[str, Any] | None = None,
              set_by: dict[str, str] | None = None) -> tuple[RunFile, list[str]]:
    """Everything that would fail or be dangerous when ``path`` runs, found before anything
    is switched on: the run file (with ``overrides``, dotted paths, e.g. ``{"run.stop.ions":
    1000}``; ``set_by`` names what set each, e.g. ``{"run.stop.ions": "--ions"}``) and its
    include files, validated; its range file present; its ROI parsed; energies, rates and
    voltages within the instruments'; a detection rate given in percent. Raises one
    ConfigError with every problem (``file:line path: what``); returns the run file and the
    warnings (``file:line path: what``: it runs, but likely not as meant)."""
    path = Path(path)
    data, lines = compose_yaml(path)
    kind = file_kind(data)
    if kind != "run":
        raise ConfigError([_not_a_run_file(path, kind)])
    missing: dict[str, str] = {}
    data, lines = _load_tree(path, missing)
    problems = list(missing.values())
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, last = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
        key = tuple(dotted.split("."))
        for k in [k for k in lines if k[:len(key)] == key]:
            del lines[k]
        lines[key] = ((set_by or {}).get(dotted, "override"), 0)
    data["source"] = str(path.resolve())  # so relative paths in it resolve from anywhere
    found = _data_problems(data, path, lines)
    problems += [f"{where(lines, loc, str(path))}: {msg}" for loc, msg in found.items()]
    skip = {(k,) for k in missing} | set(found)
    rf = None
    try:
        rf = RunFile.model_validate(data)
    except ValidationError as e:
        problems += validation_problems(e, lines, str(path), skip)
        if not any(isinstance((err.get("ctx") or {}).get("error"), Problems)
                   for err in e.errors()):  # not reached: check from the parts that validate
            problems += [f"{where(lines, loc, str(path))}: {msg}"
                         for loc, msg in _partial_instrument_problems(data)
                         if not any(loc[:len(k)] == k for k in skip)]
    if rf is not None:
        problems += [f"{where(lines, loc, str(path))}: {msg}"
                     for loc, msg in _model_problems(rf).items()]
    if problems:
        raise ConfigError(problems)
    assert rf is not None
    return rf, [f"{where(lines, loc, str(path))}: {msg}" for loc, msg in _warnings(rf).items()]


def load_run(path: str | Path, overrides: dict[str, Any] | None = None) -> RunFile:
    """Load a run file with its included instrument/specimen files, checked as by
    :func:`preflight` (every problem in one ConfigError, each naming file:line).

    ``overrides`` maps dotted paths to values, e.g. ``{"run.seed": 3, "run.stop.ions": 1000}``.
    """
    return preflight(path, overrides)[0]


def detect_model(data: dict[str, Any]) -> type[_Model]:
    """Guess which model a YAML file holds, from its keys."""
    return {"specimen": SpecimenConfig, "instrument": InstrumentConfig}.get(
        file_kind(data), RunFile)


def json_schema() -> str:
    """The JSON Schema of a run file."""
    return json.dumps(RunFile.model_json_schema(), indent=2)


def markdown_reference() -> str:
    """The config reference (docs/config.md), generated from the models' fields."""
    from apt_daq.driver_config import DldConfig, HvConfig, LaserConfig

    sections = [
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
        "Generated from the pydantic models in `apt_daq/config.py` and `drivers/config.py`",
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
    return "\n".join(out)


if __name__ == "__main__":
    print(markdown_reference())
