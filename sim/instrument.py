"""The virtual LEAP 5000: device models, specimen and detector composed on a simpy clock.

Public API used by the drivers' ``sim`` backends and by the emulator:

- ``VirtualLeap(instrument, specimen, base_temperature_k=60, seed=0, realtime=False, speed=1)``
- ``.hv`` (:class:`apt_daq.sim.devices.HvSupplyModel`), ``.laser`` (:class:`apt_daq.sim.devices.LaserModel`)
- ``.now_s`` instrument time, ``.pulses`` pulses fired so far, ``.fractured``
- ``.idle(dt_s)``: let instrument time pass with no laser pulses (HV slews, nothing evaporates)
- ``.advance(n_pulses, max_records=None) -> SimBlock``: fire ``n_pulses`` laser pulses at the
  current settings and return the raw DLD records, their truth and the lost ions' truth; with
  ``max_records`` the block ends after the sub-block that filled that many records (a full TDC
  buffer)
- ``.ion_table``: the run's ion species (names, mass of the main isotopologue, charge), the
  index that ``TRUTH_DTYPE.species`` points into
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np
import simpy
import simpy.rt
from apt_daq.sim import correlated, physics
from apt_daq.sim.assembly import _assembler, _BlockBuffer, _wait
from apt_daq.sim.channel_tables import ChannelTablesMixin
from apt_daq.sim.detector import BLUR_MM, Detector, assemble_block, detect_seeded
from apt_daq.sim.devices import HvSupplyModel, LaserModel
from apt_daq.sim.species import ELEMENTS
from apt_daq.sim.specimen import Specimen

from apt_daq.config import InstrumentConfig, SpecimenConfig
from apt_daq.hits import RAW_DTYPE, TRUTH_DTYPE, empty


@dataclass
class SimBlock:
    """What one block of pulses produced."""

    raw: np.ndarray  # RAW_DTYPE, in pulse order
    truth: np.ndarray  # TRUTH_DTYPE, aligned row for row with raw (species -1: background)
    lost: np.ndarray  # TRUTH_DTYPE of evaporated ions that left no record
    pulses: int  # pulses fired in this block
    first_pulse: int  # pulse number of the first pulse of the block
    duration_s: float  # instrument time the block took


def make_environment(realtime: bool = False, speed: float = 1.0) -> simpy.Environment:
    """``simpy.Environment`` for runs; a real-time one (``speed`` x real time) for the emulator."""
    if realtime:
        return simpy.rt.RealtimeEnvironment(factor=1.0 / speed, strict=False)
    return simpy.Environment()


# A sub-block holds about this many evaporation events: the physics (field, temperature pulse,
# channel tables) is re-evaluated that often (the surface recedes < 0.1 nm), and the detection
# and assembly of one sub-block overlap the generation of the next (a few per readout block).
EVENTS_PER_SUB_BLOCK = 16_000
SUB_BLOCKS_PER_BUFFER = 8  # with max_records: a sub-block expects <= 1/8 of the buffer
MAX_EVENTS_PER_PULSE = 5.0  # beyond this the apex would flash off; the rate is capped here
N_QUANTILES = 2048  # departure-time inverse-CDF table (EvaporationProfile.quantiles)
CHANNEL_STEP_V_PER_NM = 0.01  # field grid of the interpolated channel tables


@dataclass
class _Profile:
    """What the sub-block needs of :class:`apt_daq.sim.physics.EvaporationProfile`."""

    p_pulse: float
    p_dc: float
    tau_eff_ns: float
    t_quant: np.ndarray

    def quantiles(self) -> np.ndarray:
        return self.t_quant


@dataclass
class PhysicsState:
    """The physics of the current sub-block, for logging, tests and the docs."""

    voltage_v: float = 0.0
    radius_nm: float = 0.0
    field_v_per_nm: float = 0.0
    peak_temperature_k: float = 0.0
    tau_ns: float = 0.0
    p_site: float = 0.0  # evaporation probability per site per pulse (matrix)
    sites: float = 0.0
    li_depletion: float = 0.0
    li_burst_ratio: float = 0.0
    events_per_pulse: float = 0.0
    hazard_per_s: float = 0.0
    tail_mean_ns: float = 0.0


class VirtualLeap(ChannelTablesMixin):
    """A LEAP 5000 XS/XR with a specimen in it, driven by its HV supply and laser models.

    ``advance(n)`` splits the block into sub-blocks in which V, R and F are nearly constant
    (the HV supply slews at most a few volts, the surface recedes at most a fraction of a nm),
    and for each: computes the field, the laser temperature pulse, the evaporation probability
    per site and the channel tables (numpy, once), samples the events' pulses, the ions and
    their detection in numba kernels, and integrates the fracture hazard. Instrument time
    advances on the simpy environment by the sub-block's duration.
    """

    def __init__(
        self,
        instrument: InstrumentConfig,
        specimen: SpecimenConfig,
        *,
        base_temperature_k: float = 60.0,
        seed: int = 0,
        realtime: bool = False,
        speed: float = 1.0,
    ):
        self.instrument = instrument
        self.specimen = specimen
        self.base_temperature_k = base_temperature_k
        self.seed = seed
        self.env = make_environment(realtime, speed)
        self.lock = threading.RLock()  # held by whoever fires pulses or sets the devices
        self.hv = HvSupplyModel(max_voltage_v=instrument.max_voltage_v,
                                limit_v=instrument.max_voltage_v)
        self.laser = LaserModel(max_pulse_rate_hz=instrument.max_pulse_rate_hz)
        self.pulses = 0
        self.fractured = False
        self.rng = np.random.default_rng(seed)
        self.tip = Specimen(specimen, np.random.default_rng([seed, 0x5EC]))
        self.detector = Detector(instrument)
        self.state = PhysicsState()
        self.evaporated_atoms = 0
        self.correlated = correlated.CORRELATED  # neighbours on one pulse (a test may set it)
        self.fracture_time_s: float | None = None
        self._hazard_budget = float(np.random.default_rng([seed, 0xF7]).exponential())
        self._hazard = 0.0
        self._burst_state = np.zeros(4, np.float64)
        self._sub_block = 0
        self.fracture_event = self.env.event()
        self.channel_step_v_per_nm = CHANNEL_STEP_V_PER_NM
        self._channel_cache: dict[int, tuple] = {}
        self._channel_peak_k = -1.0  # peak temperature the cached channel tables are for
        self._same_channels: dict[int, bool] = {}
        self._barrier_cache: dict[int, tuple] = {}
        self._charges = self.tip.species.charges
        self._static: tuple | None = None

    @property
    def now_s(self) -> float:
        return float(self.env.now)

    def _run_for(self, dt_s: float) -> None:
        if dt_s > 0:
            self.env.run(until=self.env.now + dt_s)
        self.hv.advance(dt_s)
        self.hv.now_s = self.laser.now_s = self.now_s

    def idle(self, dt_s: float) -> None:
        """Instrument time passes with no pulses: the HV output slews towards its setpoint."""
        self._run_for(dt_s)

    @property
    def ion_table(self) -> list[tuple[str, float, int]]:
        """(name, main m/n Da, charge) of every ion species; TRUTH species index into it."""
        return self.tip.species.as_list()

    # -- physics of one sub-block
    def _physics(self, volts: float) -> dict:
        tip, ins = self.tip, self.instrument
        st = self.state
        r = tip.radius_nm()
        f = physics.field_v_per_nm(volts, self.specimen.field_factor, r) if volts > 0 else 0.0
        energy = self.laser.energy_pj
        peak = physics.peak_temperature_k(self.base_temperature_k, energy)
        if peak != self._channel_peak_k:  # the charge states depend on it: new tables
            self._channel_peak_k = peak
            self._channel_cache.clear()
            self._same_channels.clear()
        cool = tip.cooling(peak, energy)
        tau, tau_c = cool.tau_1_ns, cool.tau_cone_ns
        period_s = 1.0 / self.laser.pulse_rate_hz
        rho_fov = self.detector.radius_mm * self.specimen.image_compression * r / (
            ins.flight_path_mm)
        cos_a = math.cos(math.radians(self.specimen.shank_half_angle_deg))
        rho_s = min(1.08 * rho_fov, r * cos_a)
        sites = physics.THERMAL.site_density_per_nm2 * math.pi * rho_s ** 2
        # area-weighted evaporation probability of core and shell (numba, one pass each)
        base = self.base_temperature_k
        prof = self._profile(tip.matrix_phase, f, base, peak - base, tau, tau_c, period_s)
        p_site, p_dc = prof.p_pulse, prof.p_dc
        shell_share = 0.0
        if tip.shell_phase >= 0:
            rho_b = tip.core_boundary_nm()
            shell_share = max(0.0, 1.0 - (min(rho_b, rho_s) / rho_s) ** 2)
            if shell_share > 0:
                sh = self._profile(tip.shell_phase, f, base, peak - base, tau, tau_c,
                                   period_s, quantiles=False)
                p_site = (1 - shell_share) * p_site + shell_share * sh.p_pulse
                p_dc = (1 - shell_share) * p_dc + shell_share * sh.p_dc
        depl = physics.li_depletion(f, tip.coated)
        burst = physics.li_burst_ratio(f, peak, tip.coated) if energy > 0 else 0.0
        # the matrix's atoms leave in chains (first events: atoms / chain size); the Li bursts
        # (b Li per matrix atom) come from the supply, one atom an event
        chain = self._chain_size(shell_share)
        lam = min(sites * (p_site + p_dc) * (1.0 / chain + burst), MAX_EVENTS_PER_PULSE)
        st.voltage_v, st.radius_nm, st.field_v_per_nm = volts, r, f
        st.peak_temperature_k, st.tau_ns, st.p_site, st.sites = peak, tau, p_site, sites
        st.li_depletion, st.li_burst_ratio, st.events_per_pulse = depl, burst, lam
        st.hazard_per_s = physics.fracture_hazard_per_s(f, tip.strength_gpa)
        st.tail_mean_ns = prof.tau_eff_ns
        return {"profile": prof, "cooling": (base, peak - base, cool), "rho_s": rho_s, "lam": lam, "burst": burst * chain, "depl": depl,
                "dc_share": p_dc / (p_site + p_dc) if p_site + p_dc > 0 else 0.0,
                "field": f, "period_ns": period_s * 1e9}

    def _barriers(self, phase: int, field: float) -> tuple[np.ndarray, np.ndarray]:
        arrs = self._barrier_cache.get(phase)
        if arrs is None:
            arrs = self._barrier_cache[phase] = self.tip.barrier_arrays(phase)
        q0, fe, frac = arrs
        return physics.barrier_ev(q0, fe, field), frac

    def _profile(self, phase: int, field: float, base_k: float, rise_k: float, tau_ns: float,
                 tau_cone_ns: float, period_s: float, quantiles: bool = True) -> _Profile:
        """:func:`apt_daq.sim.physics.evaporation_profile` and its quantile table, by the numba twin
        :func:`apt_daq.sim.physics.profile_kernel` (exact, not cached: the rate is steep in F)."""
        q, frac = self._barriers(phase, field)
        p_pulse, p_dc, mean_t, quant = physics.profile_kernel(
            q, frac, base_k, rise_k, tau_ns, tau_cone_ns, period_s,
            physics.THERMAL.attempt_frequency_hz, physics._time_grid(tau_ns),
            N_QUANTILES if quantiles else 0)
        return _Profile(p_pulse, p_dc, mean_t, quant)

    def _sub_block_pulses(self, remaining: int, lam: float, max_records: int | None) -> int:
        hv = self.hv
        rate = self.laser.pulse_rate_hz
        n = remaining
        if lam > 0:
            n = min(n, max(1000, int(EVENTS_PER_SUB_BLOCK / lam)))
            if max_records:  # the early end overshoots the buffer by about 1/8 at most
                n = min(n, max(1000, int(max_records / (SUB_BLOCKS_PER_BUFFER * lam))))
        target = hv.setpoint_v if hv.output_on else 0.0
        gap = abs(target - hv.output_v)
        if gap > 0.5:
            dv = max(5.0, 0.002 * hv.output_v)
            n = min(n, max(100, int(min(gap, dv) / hv.slew_v_per_s * rate)))
        return max(1, n)

    def _simulate(self, remaining: int, max_records: int | None = None
                  ) -> tuple[int, int, Callable[[_BlockBuffer], None]]:
        """One sub-block: the physics, the fracture hazard and the evaporation events, in
        instrument order. Returns (pulses consumed, an upper bound of its records, and the
        rest of its work: detection, delay lines and assembly into the block's buffer, which
        depends on nothing that comes later and may run on another thread)."""
        rate_hz = self.laser.pulse_rate_hz
        v0 = self.hv.measured_v()
        pre = self._physics(v0)
        n = self._sub_block_pulses(remaining, pre["lam"], max_records)
        first = self.pulses
        dt = n / rate_hz
        self._run_for(dt)
        v1 = self.hv.measured_v()
        ph = self._physics(0.5 * (v0 + v1)) if v1 != v0 else pre
        rng = np.random.default_rng([self.seed, 1, self._sub_block])
        seeds = rng.integers(0, 2**63, 3, dtype=np.uint64)
        self._sub_block += 1
        # fracture: cumulative hazard against an Exp(1) budget drawn at the start
        h = self.state.hazard_per_s
        cut = n
        if not self.fractured and self._hazard + h * dt >= self._hazard_budget:
            frac = (self._hazard_budget - self._hazard) / (h * dt)
            cut = int(frac * n)
            self.fractured = True
            self.fracture_time_s = self.now_s - dt + frac * dt
        self._hazard += h * dt
        lam = ph["lam"]
        if lam * cut > 0:
            pulses = physics.event_pulses_seeded(seeds[0], lam, cut)
        else:
            pulses = _NO_PULSES
        events, mag = self._events(pulses, ph, seeds[1])
        v_bg = max(v1, 1.0)
        n_bg = self.detector.background_count(rng, cut, v_bg)  # the rest of rng: in assemble
        eff = self.instrument.detection_efficiency
        laser_pj = self.laser.energy_pj

        def assemble(out: _BlockBuffer) -> None:
            bg = self.detector.background(rng, 0, cut, v_bg, n=n_bg)
            self._assemble(events, mag, bg, seeds[2], first, n, v0, v1, laser_pj,
                           (lam * eff, lam * (1.0 - eff)), out)

        self.pulses += n
        if self.fractured and not self.hv.tripped:
            self.hv.trip()
            self.fracture_event.succeed(self.fracture_time_s)
        return n, len(events[0]) + n_bg, assemble

    def _events(self, pulses: np.ndarray, ph: dict, seed_events: np.uint64) -> tuple:
        """The sub-block's evaporation events (pulse, species, m/n, origin, departure time,
        neutral), advancing the surface; and the projection's magnification at its start."""
        tip, sp = self.tip, self.tip.species
        mag = self.detector.magnification_mm_per_nm(tip.radius_nm(),
                                                    self.specimen.image_compression)
        if len(pulses) == 0:
            z32 = np.zeros(0, np.float32)
            return (_NO_PULSES, np.zeros(0, np.int16), z32, z32, z32, z32, z32,
                    np.zeros(0, np.uint8), z32), mag
        li = physics.LI_MIGRATION
        cdf, a, b, neu, atoms, nch = self._channel_tables(ph["field"])
        burst = ph["burst"]  # burst events per first event of the matrix
        phi = burst / (1.0 + burst)
        p_end = 1.0 / li.burst_mean_events
        p_start = phi / ((1.0 - phi) * li.burst_mean_events) if phi < 1 else 1.0
        prof = ph["profile"]
        if self._static is None:
            anion = np.array([set(ion.formula) <= {"O"} for ion in sp.ions], np.uint8)
            self._static = (np.array(tip.densities, np.float64), sp.index("Li+"),
                            sp.index("LiO+"), anion)
        densities, li_ion, lio_ion, anion = self._static
        li_el = ELEMENTS["Li"]
        q_li = max(li_el.q0_ev * (1.0 - ph["field"] / li_el.fe_v_per_nm), 0.0)
        li_t, li_cum, li_base = physics.li_wait_table(q_li, *ph["cooling"])
        out = physics.generate_events(
            pulses, seed_events, tip.depth_nm, self.specimen.apex_radius_nm, tip.sin_shank,
            ph["rho_s"], densities, tip.shell_phase, tip.matrix_phase,
            tip.shell_nm, tip.apex_shell_nm, tip.core_cap_nm,
            tip.grain_c, tip.grain_r, tip.grain_phase,
            cdf, a, b, neu, atoms, nch,
            li_ion, p_start, p_end, li.burst_spot_fraction,
            1.0 / li.modulation_mean_events, self._burst_state,
            sp.iso_start, sp.iso_mass, sp.iso_cdf,
            prof.quantiles(), ph["dc_share"], ph["period_ns"],
            lio_ion, li_t, li_cum, li_base,
            self._charges, tip.dissociation_lifetime_ps, ph["field"],
            correlated.phase_shares(self.correlated, tip.correlated_shares),
            self.correlated.max_neighbours, self.correlated.spacing_nm, anion)
        *events, depth_end, n_atoms = out
        tip.depth_nm = float(depth_end)
        self.evaporated_atoms += int(n_atoms)
        return tuple(events), mag

    def _chain_size(self, shell_share: float) -> float:
        """Mean events per first event over the surface: core and shell by their area."""
        tip, c = self.tip, self.correlated
        shares = correlated.phase_shares(c, tip.correlated_shares)
        size = correlated.mean_chain_size(float(shares[tip.matrix_phase]), c.max_neighbours)
        if shell_share > 0:
            shell = correlated.mean_chain_size(float(shares[tip.shell_phase]), c.max_neighbours)
            size = (1.0 - shell_share) * size + shell_share * shell
        return size

    def _assemble(self, events: tuple, mag: float, bg: tuple, seed_detect: np.uint64,
                  first: int, n: int, v0: float, v1: float, laser_pj: float,
                  per_pulse: tuple[float, float], out: _BlockBuffer) -> None:
        """Detection of a sub-block's events and its RAW / TRUTH / lost rows, written into the
        next rows of ``out`` (sub-blocks must be assembled in order)."""
        e_pulse, e_sp, e_mass, e_x, e_y, e_z, e_t, e_neu, e_tof = events
        ins = self.instrument
        if len(e_pulse):
            volts = v0 + (v1 - v0) * e_pulse.astype(np.float64) / n
            dx, dy, t, keep = detect_seeded(
                seed_detect, e_pulse, e_x, e_y, e_tof, e_t, volts, e_neu, mag,
                ins.flight_path_mm, ins.t0_ns, ins.timing_jitter_ns, BLUR_MM,
                ins.detection_efficiency, self.detector.radius_mm, ins.dead_time_ns,
                ins.dead_zone_mm)
            n_keep = int(np.count_nonzero(keep))
        else:
            dx = dy = t = np.zeros(0)
            keep = np.zeros(0, np.uint8)
            n_keep = 0
        bp, bt, bx, by = bg
        raw, truth, lost = out.take(n_keep + len(bp), len(e_pulse) - n_keep, per_pulse)
        if len(raw) or len(lost):
            assemble_block(e_pulse, dx, dy, t, keep, e_sp, e_neu, e_mass, e_x, e_y, e_z,
                           self._charges, bp, bt, bx, by, first, n, v0, v1, laser_pj,
                           ins.tdc_bin_ns, ins.delay_line_offset_ns,
                           ins.signal_velocity_mm_per_ns, raw, truth, lost)

    def advance(self, n_pulses: int, max_records: int | None = None) -> SimBlock:
        """Fire ``n_pulses`` pulses at the current settings (HV slewing within the block).

        With ``max_records`` the block ends after the sub-block that brought it to that many
        records, as a TDC whose buffer is read out when full (sub-blocks then expect at most
        1/8 of the buffer each); ``SimBlock.pulses`` says how many pulses were fired.
        """
        first = self.pulses
        rate = self.laser.pulse_rate_hz
        if not self.laser.emission_on or self.fractured or n_pulses <= 0:
            dt = max(n_pulses, 0) / rate
            self._run_for(dt)
            self.pulses += max(n_pulses, 0)
            return SimBlock(empty(RAW_DTYPE), empty(TRUTH_DTYPE), empty(TRUTH_DTYPE),
                            max(n_pulses, 0), first, dt)
        out = _BlockBuffer(n_pulses, max_records)
        pending: list[Future] = []  # sub-blocks being assembled, in order
        bound = 0  # records so far cannot exceed this (events + background)
        remaining = n_pulses
        while remaining > 0:
            if max_records and bound >= max_records:  # the exact count is needed now
                _wait(pending)
                bound = out.rows
                if out.rows >= max_records:
                    break
            if self.fractured:  # no more ions: time passes
                self._run_for(remaining / rate)
                self.pulses += remaining
                remaining = 0
                break
            used, most, assemble = self._simulate(remaining, max_records)
            remaining -= used
            bound += most
            if pending or most >= ASSEMBLE_ASIDE_EVENTS:
                pending.append(_assembler().submit(assemble, out))
            else:
                assemble(out)
        _wait(pending)
        fired = n_pulses - remaining
        raw, truth, lost = out.arrays()
        return SimBlock(raw, truth, lost, fired, first, fired / rate)


def settled_field_v_per_nm(instrument: InstrumentConfig, specimen: SpecimenConfig,
                           laser_pj: float, *, base_temperature_k: float = 60.0,
                           pulse_rate_hz: float = 100e3, target_rate: float = 0.005,
                           seed: int = 0) -> float:
    """The apex field at which ``specimen`` evaporates at ``target_rate`` detected ions per
    pulse at this laser energy: what the run engine's rate feedback settles to (the simulator
    knows its field; a reconstruction of a simulated run uses it as F_e, so that an ROI is the
    size it says). Bisection in V on the expected rate of the first sub-block's physics (the
    detected share taken as efficiency x 0.9 for the detector's edge and the neutrals); the
    field depends on the rate only logarithmically."""
    leap = VirtualLeap(instrument, specimen, base_temperature_k=base_temperature_k, seed=seed)
    leap.laser.set_pulse_rate(pulse_rate_hz)
    leap.laser.set_energy(laser_pj)
    eff = instrument.detection_efficiency * 0.9
    lo, hi = 100.0, 10 * instrument.max_voltage_v
    for _ in range(60):
        mid = math.sqrt(lo * hi)
        leap._physics(mid)
        if leap.state.events_per_pulse * eff > target_rate:
            hi = mid
        else:
            lo = mid
    leap._physics(math.sqrt(lo * hi))
    return float(leap.state.field_v_per_nm)


ASSEMBLE_ASIDE_EVENTS = 2_000  # smaller sub-blocks are assembled inline (handover ~50 us)
_NO_PULSES = np.zeros(0, np.int64)
