"""Pydantic models of the instrument, specimen, run and analysis: the run file as data, and the
checks that need several of its sections at once (:func:`instrument_problems`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from apt_daq.config.errors import Problems
from apt_daq.driver_config import DriversConfig, _Strict


class _Model(_Strict):
    """Unknown keys, infinities (and NaN) and true/false for a number are refused."""

    model_config = ConfigDict(extra="forbid", validate_default=True, allow_inf_nan=False)


#: the most ions a run may stop at: ten times the largest LEAP datasets (~1e9 ions), ~1 TB of
#: run file; a count beyond it is a typo (2**64 + 1 crashed, 10**30 wrote GB a minute)
MAX_IONS = 10**10
#: the longest instrument time a run or a step may be given, s: 30 days (LEAP runs last hours
#: to days)
MAX_RUN_S = 30 * 86400.0
#: the most pulses in one readout block: at instrument.background_per_ns's ceiling (1e-6 /ns)
#: and the longest acquisition window (~12 us, a 100 V start) a block of 1e8 pulses holds
#: ~1.2e6 background hits, ~0.3 GB while it is simulated; 1e12 took 20 GB and the OOM killer
MAX_BLOCK_PULSES = 10**8


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
        1e-7, ge=0, le=1e-6, description="uniform background hits (dark counts, DC "
        "evaporation), per ns (1e-6: ~3e-3 per pulse in a 3 us window, as many as a "
        "0.5 % run's ions)")
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


class DissociationConfig(_Model):
    """(MO)2+ -> M+ + O+ in flight: a share d0 exp((F - F_d) / w_d) (at most 0.95) of the
    element's detected MO molecules (docs/physics.md, "Molecular ions")."""

    element: str
    share: float = Field(..., ge=0, le=1, description="d0, the share at F_d")
    field_v_per_nm: float = Field(19.0, gt=0, description="F_d, V/nm")
    scale_v_per_nm: float = Field(3.0, gt=0, description="w_d, V/nm: grows with the field")
    lifetime_ps: float = Field(
        0.05, ge=0, description="mean lifetime of the parent ion, ps: where it dissociates on "
        "its way out sets the fragments' apparent m/n along the dissociation track (Saxey 2011)")


class DirectChargeConfig(_Model):
    """Direct evaporation of the element's atoms as 2+ (not by post-ionisation of a 1+ ion),
    a share d_max / (1 + exp(-(T_peak - T_d) / w_T)) growing with the laser pulse's peak
    temperature (Schreiber et al. 2014, Fe in magnetite; docs/physics.md, "Charge states")."""

    element: str
    share_max: float = Field(..., ge=0, lt=1, description="d_max")
    temperature_k: float = Field(..., gt=0, description="T_d, K: half of d_max")
    scale_k: float = Field(..., gt=0, description="w_T, K")


def _default_dissociation() -> list[DissociationConfig]:
    return [DissociationConfig(element="Mn", share=0.30, field_v_per_nm=19.0,
                               scale_v_per_nm=3.0)]


def _default_direct_2plus() -> list[DirectChargeConfig]:
    return [DirectChargeConfig(element="Mn", share_max=0.97, temperature_k=150.0,
                               scale_k=100.0)]


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
    dissociation: list[DissociationConfig] = Field(
        default_factory=_default_dissociation,
        description="(MO)2+ -> M+ + O+ dissociation per element (NMC811's: Mn)")
    direct_2plus: list[DirectChargeConfig] = Field(
        default_factory=_default_direct_2plus,
        description="direct evaporation as 2+ per element, growing with the peak temperature "
        "(NMC811's: Mn)")


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
    correlated_share: float = Field(
        0.0, ge=0, lt=1,
        description="probability that a neighbour leaves on the same pulse after an event "
        "(correlated evaporation, a chain of up to 3; ~the share of ions in multi-hit events; "
        "docs/physics.md)")

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
    correlated_share: float = Field(
        0.02, ge=0, lt=1,
        description="correlated evaporation of the shell metal: a neighbour leaves on the same "
        "pulse with this probability (~4 % of ions in multi-hits, as Si and W; docs/physics.md)")
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
    ions: int | None = Field(None, gt=0, le=MAX_IONS, description="detected ions in this step")
    duration_s: float | None = Field(None, gt=0, le=MAX_RUN_S,
                                     description="instrument time in this step, s")
    label: str | None = None

    @model_validator(mode="after")
    def _one_end(self) -> StepConfig:
        if self.ions is None and self.duration_s is None:
            raise ValueError("a step needs ions or duration_s")
        return self


class StopConfig(_Model):
    """Stop conditions; the first one met ends the run."""

    ions: int | None = Field(1_000_000, gt=0, le=MAX_IONS, description="detected ions")
    max_voltage_v: float | None = Field(None, gt=0, description="stop when V_dc would exceed, V")
    instrument_time_s: float | None = Field(None, gt=0, le=MAX_RUN_S,
                                            description="instrument time, s (2592000: 30 days)")
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

    name: str = Field("run", description="the run file's name (runs/NAME.h5): a plain file "
                      "name, no folders, at most 100 characters")
    laser_pj: float | None = Field(None, gt=0, description="constant laser energy, pJ")
    schedule: list[StepConfig] | None = Field(None, min_length=1,
                                              description="laser-energy steps in order")
    pulse_rate_hz: float = Field(100e3, ge=1, description="laser pulse repetition rate, Hz")
    base_temperature_k: float = Field(
        60.0, gt=0, le=400, description="specimen base temperature, K (a LEAP stage runs at "
        "20-100 K; above ~450 K the simulated specimen evaporates thermally at the start "
        "voltage, at hundreds of % detection rate)")
    target_detection_rate: float = Field(
        0.005, ge=1e-4, lt=1, description="ions detected per pulse (0.005 = 0.5 %; at least "
        "1e-4: a 1e6-pulse block then holds ~100 ions, the fewest the feedback steers on)"
    )
    start_voltage_v: float = Field(2000.0, ge=0, description="V_dc before the feedback takes over")
    chunk_pulses: int = Field(
        1_000_000, gt=0, le=MAX_BLOCK_PULSES, description="pulses per DLD readout block while "
        "the rate is off target (1e8: the simulator holds a block's background hits, "
        "~0.3 GB at instrument.background_per_ns's ceiling)")
    max_block_pulses: int | None = Field(None, gt=0, le=MAX_BLOCK_PULSES, description=(
        "largest readout block once settled, pulses (None: as the detector buffer and the "
        "feedback allow; = chunk_pulses: fixed blocks; the same ceiling as chunk_pulses)"))
    store_raw: bool = Field(True, description="also store the raw DLD records in /raw")
    fracture_rate_fraction: float = Field(
        0.02, gt=0, lt=1, description="rate below this fraction of target after settling ..."
    )
    fracture_blocks: int = Field(3, gt=0, le=1000,
                                 description="... for this many blocks: a fracture")
    feedback: FeedbackConfig = Field(default_factory=FeedbackConfig)
    stop: StopConfig = Field(default_factory=StopConfig)
    seed: int = Field(0, ge=0, le=2**64 - 1, description="random seed (numpy's and the run "
                      "file's /meta hold an unsigned 64-bit integer)")

    @field_validator("name")
    @classmethod
    def _file_name(cls, name: str) -> str:
        """The run is written to runs/NAME.h5: ``../x`` wrote outside runs/, ``''`` the hidden
        runs/.h5, a NUL failed at the run's end and 100000 characters at the file system."""
        if name in ("", ".", "..") or any(c in name for c in "/\\\0") or len(name) > 100:
            raise PydanticCustomError("file_name", "a plain file name (runs/NAME.h5): not "
                                      "empty, no folders or NUL, at most 100 characters")
        return name

    @model_validator(mode="after")
    def _laser(self) -> RunConfig:
        if (self.laser_pj is None) == (self.schedule is None):
            raise ValueError("give exactly one of laser_pj or schedule")
        return self

    def steps(self) -> list[StepConfig]:
        """The schedule; a constant laser energy is one open-ended step."""
        if self.schedule is not None:
            return list(self.schedule)
        assert self.laser_pj is not None  # _laser: one of the two
        # not validated: 2**62 (no stop count) is above a step's MAX_IONS on purpose
        return [StepConfig.model_construct(laser_pj=self.laser_pj, ions=self.stop.ions or 2**62)]


# --------------------------------------------------------------------------- analysis
def _ion_name(name: str) -> str:
    """An ion name as :func:`apt_daq.isotopes.parse_ion` reads it (``Li+``, ``Ni2+``,
    ``O2+``, ``(NiO)2+``), written as range tables name it (``Ni++`` -> ``Ni2+``, so it finds
    their ranges); else a validation error, at load time rather than at the analysis after
    the acquisition."""
    from apt_daq.isotopes import ion_name, parse_ion

    try:
        return ion_name(*parse_ion(name))
    except ValueError as e:
        why = str(e).split(": ", 1)[-1]
        if "e.g." not in why:
            why += " (ions are named e.g. Li+, Ni2+, O2+, (NiO)2+)"
        raise PydanticCustomError("ion_name", "not an ion name: {why}", {"why": why}) from None


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
    fda_block_ions: int = Field(100, gt=1, le=100_000,
                                description="ions per FDA block (Moody 2008: 50-500)")
    fda_ions: list[Annotated[str, AfterValidator(_ion_name)]] = Field(
        default_factory=lambda: ["Li+", "O2+"],
        description="ions the frequency distribution analysis (FDA) tests, e.g. Li+, O2+, (NiO)2+")
    voltage_correction: bool = True
    bowl_correction: bool = True
    reference_peak: str | None = Field(None, description=(
        "range name (an ion, e.g. Ni2+) for the corrections (None: the most counted range "
        "within half the detector radius)"))
    reconstruction: ReconstructionConfig = Field(default_factory=ReconstructionConfig)

    @field_validator("reference_peak")
    @classmethod
    def _reference_ion(cls, name: str | None) -> str | None:
        return None if name is None else _ion_name(name)


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
        at: tuple[str, ...] = (("drivers", "hv", "limit_v") if "limit_v" in hv.model_fields_set
                               else ("run", "start_voltage_v"))
        found.append((at, f"drivers.hv.limit_v {hv.limit_v:g} V is below "
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
