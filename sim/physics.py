"""Field-evaporation physics of the virtual LEAP: closed forms in numpy, hot loops in numba.

Per sub-block of pulses (constant V, laser energy, specimen state) the instrument calls the
numpy functions once (a few hundred flops) and the numba kernels once over arrays of events;
nothing here runs per pulse or per ion in Python. Equations, parameter values and sources are in
``docs/physics.md``; the names below follow it.

Geometry:   R(z) = R0 + z sin(a) / (1 - sin(a));  F = V / (k_f R)
Laser:      U(T_peak) = U(T_base) + A (1 - exp(-E / E_s)),  U the Debye lattice energy;
Cooling:    heat diffusion along the shank: T(t) = T_base + dT (1 + t / tau_1)^(-1/2)
            (1 + t / tau_c)^(-1), dT = T_peak - T_base; tau_1 = l^2 / (2 D(T_peak)) (1-D spread
            of the heated length l), tau_c ~ 1.55 l (R / tan a) / D (the cone's widening turns
            it 3-D); D = kappa(T) / C(T) of the cross-section (oxide core, Cr shell in parallel)
Evaporation per site and pulse:  P = int nu exp(-Q(F) / k T(t)) dt,  Q = q0 (1 - F / F_e),
            combined over the phase's elements as the harmonic mean of their rates weighted by
            composition (a steady-state surface: the slowest species sets the pace).
Departure time of each ion: sampled from the same Arrhenius-weighted T(t) (thermal tail).
Fracture:   Maxwell stress sigma = eps0 F^2 / 2; hazard h = h0 (sigma / sigma_c)^n.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from apt_daq.sim.correlated import LI_STREAM, STREAM, emit_neighbours, sublattice_tables
from apt_daq.sim.dissociation import (  # noqa: F401  (the first two re-exported)
    dissociation_potential_share,
    on_track,
    track_mass,
)
from apt_daq.sim.fracture import (  # noqa: F401  (re-exported: their home until Dec 2026)
    EPS0_F_PER_M,
    FRACTURE,
    FractureParams,
    draw_strength_gpa,
    fracture_hazard_per_s,
    maxwell_stress_gpa,
)
from apt_daq.sim.lithium import (  # noqa: F401  (re-exported)
    LI_MIGRATION,
    LiMigrationParams,
    li_burst_ratio,
    li_depletion,
)
from apt_daq.sim.sampling import (  # noqa: F401  (re-exported)
    counter_uniform,
    event_pulses,
    event_pulses_seeded,
    sample_cdf,
    sample_isotope,
)
from apt_daq.sim.thermal import (  # noqa: F401  (re-exported)
    K_B_EV_PER_K,
    THERMAL,
    Cooling,
    ThermalParams,
    absorbed_energy_k,
    conductivity_w_per_mk,
    cooling,
    debye_energy_k,
    heat_capacity_j_per_m3k,
    peak_temperature_k,
)
from numba import njit

# ------------------------------------------------------------------------------ parameters


# ------------------------------------------------------------------------------ closed forms
def apex_radius_nm(r0_nm: float, depth_nm: float, shank_half_angle_deg: float) -> float:
    """R(z) = R0 + z sin(a) / (1 - sin(a)): the apex blunts as the cone is evaporated."""
    s = math.sin(math.radians(shank_half_angle_deg))
    return r0_nm + depth_nm * s / (1.0 - s)


def field_v_per_nm(voltage_v: float, field_factor: float, radius_nm: float) -> float:
    """Apex field F = V / (k_f R), V/nm."""
    return voltage_v / (field_factor * radius_nm)


def barrier_ev(q0_ev: np.ndarray, fe_v_per_nm: np.ndarray, field: float) -> np.ndarray:
    """Q(F) = q0 (1 - F / F_e), floored at 0."""
    return np.maximum(np.asarray(q0_ev) * (1.0 - field / np.asarray(fe_v_per_nm)), 0.0)


@dataclass
class EvaporationProfile:
    """Per-site evaporation in one pulse period and the departure-time distribution."""

    p_pulse: float  # probability per site of evaporating within the laser pulse's heat
    p_dc: float  # ... between pulses at the base temperature (uncorrelated with the pulse)
    t_ns: np.ndarray  # grid of departure times after the pulse, ns
    cdf: np.ndarray  # cumulative departure-time distribution on t_ns (0 .. 1)
    tau_eff_ns: float  # mean of the thermal tail (for documentation and tests)

    def quantiles(self, n: int = 2048) -> np.ndarray:
        """Departure times at probabilities k / n, k = 0..n (inverse CDF table), ns."""
        c, idx = np.unique(self.cdf, return_index=True)
        return np.interp(np.linspace(0.0, 1.0, n + 1), c, self.t_ns[idx])


_UNIT_GRID = np.concatenate([[0.0], np.geomspace(1e-5, 200.0, 319)])


def _time_grid(tau_ns: float) -> np.ndarray:
    """Times after the pulse, ns: 0 and a geometric grid from 1e-5 to 200 tau_1."""
    return _UNIT_GRID * tau_ns


def log_site_rate(q_ev: np.ndarray, fractions: np.ndarray, temp_k: np.ndarray,
                  nu_hz: float) -> np.ndarray:
    """ln of the combined per-site rate at temperatures ``temp_k`` (1/s).

    k_eff = 1 / sum_i (c_i / k_i), k_i = nu exp(-Q_i / k T): in steady state the surface holds
    each species in proportion c_i / k_i, so the flux is stoichiometric and the slowest species
    sets it. Computed in logs (log-sum-exp), free of under/overflow.
    """
    q = np.asarray(q_ev, float)[:, None]
    c = np.asarray(fractions, float)[:, None]
    lk = math.log(nu_hz) - q / (K_B_EV_PER_K * np.asarray(temp_k, float)[None, :])
    terms = np.log(np.maximum(c, 1e-300)) - lk
    mx = terms.max(axis=0)
    return -(mx + np.log(np.exp(terms - mx).sum(axis=0)))


def evaporation_profile(q_ev: np.ndarray, fractions: np.ndarray, base_k: float, rise_k: float,
                        tau_ns: float, period_s: float, tau_cone_ns: float = math.inf,
                        p: ThermalParams = THERMAL) -> EvaporationProfile:
    """Integrate the Arrhenius rate over T(t) = T_base + dT (1 + t/tau)^(-1/2)
    (1 + t/tau_c)^(-1) (:class:`Cooling`; trapezoid on a geometric time grid reaching
    200 tau), plus the DC term at T_base for the rest of the period."""
    t = _time_grid(tau_ns)
    temp = base_k + rise_k * Cooling(tau_ns, tau_cone_ns, 0.0).shape(t)
    lk = log_site_rate(q_ev, fractions, temp, p.attempt_frequency_hz)
    lk_dc = float(log_site_rate(q_ev, fractions, np.array([base_k]), p.attempt_frequency_hz)[0])
    ref = lk.max()
    w = np.exp(lk - ref)
    seg = 0.5 * (w[1:] + w[:-1]) * np.diff(t)
    cum = np.concatenate([[0.0], np.cumsum(seg)])
    total = cum[-1]
    p_pulse_raw = total * 1e-9 * math.exp(ref) if math.isfinite(ref) else 0.0
    # the base-temperature rate is part of w at late times; remove it from the pulse share
    dc_rate = math.exp(lk_dc)
    p_pulse = max(p_pulse_raw - dc_rate * t[-1] * 1e-9, 0.0)
    p_dc = dc_rate * period_s
    cdf = cum / total if total > 0 else np.linspace(0, 1, len(t))
    mean_t = float(np.sum(seg * 0.5 * (t[1:] + t[:-1])) / total) if total > 0 else 0.0
    return EvaporationProfile(min(p_pulse, 50.0), min(p_dc, 50.0), t, cdf, mean_t)


def li_wait_table(q_ev: float, base_k: float, rise_k: float, cool: Cooling,
                  p: ThermalParams = THERMAL) -> tuple[np.ndarray, np.ndarray, float]:
    """Li's own departure after its site opens (:func:`li_departure`): the times ``t`` (ns),
    the integral of its rate k_Li = nu exp(-Q_Li / k T(t)) over the cooling from the pulse
    (per ns: the expected number of escapes of an exposed Li atom), and its rate at the base
    temperature, per ns. Q_Li(F) = q0 (1 - F / F_e) is Li's own barrier (docs/physics.md)."""
    t = _time_grid(cool.tau_1_ns)
    temp = base_k + rise_k * cool.shape(t)
    k = p.attempt_frequency_hz * 1e-9 * np.exp(-q_ev / (K_B_EV_PER_K * temp))
    cum = np.concatenate([[0.0], np.cumsum(0.5 * (k[1:] + k[:-1]) * np.diff(t))])
    base = p.attempt_frequency_hz * 1e-9 * math.exp(-q_ev / (K_B_EV_PER_K * base_k))
    return t, cum, base


# ------------------------------------------------------------------------------ kernels
@njit(cache=True)
def core_boundary_nm(depth_nm: float, radius_nm: float, cos_a: float, shell_nm: float,
                     apex_shell_nm: float, core_cap_nm: float) -> float:
    """Lateral radius of the core/shell boundary on the evaporating surface at this depth.

    The shell of normal thickness ``shell_nm`` wraps the cone (lateral thickness t / cos a);
    over the apex it is ``apex_shell_nm`` thick, and the core's own cap (radius
    ``core_cap_nm``) opens as it is cut: rho_b = sqrt(h (2 r_c - h)), h = depth - t_apex.
    """
    outer = radius_nm * cos_a - shell_nm / cos_a
    if apex_shell_nm <= 0.0:  # the apex shell went during the ramp-up: steady state
        return max(0.0, outer)
    h = depth_nm - apex_shell_nm
    if h <= 0.0:
        return 0.0
    if h < core_cap_nm:
        cap = math.sqrt(h * (2.0 * core_cap_nm - h))
        return max(0.0, min(outer, cap))
    return max(0.0, outer)


@njit(cache=True, nogil=True)
def generate_events(
    pulses: np.ndarray, seed: np.uint64,
    depth0_nm: float, r0_nm: float, sin_shank: float, rho_sample_nm: float,
    phase_density: np.ndarray, shell_phase: int, matrix_phase: int,
    shell_nm: float, apex_shell_nm: float, core_cap_nm: float,
    grain_c: np.ndarray, grain_r: np.ndarray, grain_phase: np.ndarray,
    ch_cdf: np.ndarray, ch_a: np.ndarray, ch_b: np.ndarray, ch_neutral: np.ndarray,
    ch_atoms: np.ndarray, n_ch: np.ndarray,
    li_ion: int, p_burst_start: float, p_burst_end: float, burst_spot: float,
    p_mod_flip: float, state: np.ndarray,
    iso_start: np.ndarray, iso_mass: np.ndarray, iso_cdf: np.ndarray,
    t_quant: np.ndarray, dc_share: float, period_ns: float,
    lio_ion: int, li_t: np.ndarray, li_cum: np.ndarray, li_rate_base_per_ns: float,
    charges: np.ndarray, diss_life_ps: np.ndarray, field_v_per_nm: float,
    corr_share: np.ndarray, corr_max: int, corr_spacing_nm: float, anion: np.ndarray,
):
    """Turn evaporation events into ions with species, m/n, origin and departure time.

    ``seed``: the sub-block's counter-generator seed (draw j of event i). ``state`` (float64[4], updated in place): burst
    on/off, Li modulation low/high, burst spot x, y (nm); it carries over between blocks.
    Channel tables are indexed by phase * 2 + modulation.
    The surface recedes by each event's atoms / (density * pi rho_s^2); R follows the depth.
    ``t_quant``: departure-time quantiles on a regular probability grid (ns): when the event's
    site opens. Li (``li_ion``, ``lio_ion``) then leaves after its own thermally activated
    wait (:func:`li_departure`; ``li_t``, ``li_cum``: the integral of Li's rate over the
    cooling, ``li_rate_base_per_ns`` its rate at the base temperature).
    A two-product event is a dissociation (MO)2+ -> M+ + O+ on the way out: the parent
    (mean lifetime ``diss_life_ps[phase, M+]``) breaks after an exponential time, and each
    fragment's apparent m/n (``tof_mass``, what its flight time says) lies on the dissociation
    track between its own and the parent's (:func:`track_mass`).
    ``corr_*``: correlated neighbours on the same pulse (:mod:`apt_daq.sim.correlated`),
    ``corr_share[phase]`` the neighbour share of the event's phase, ``anion[s]`` 1 for a
    species of only anion-sublattice atoms (O+, O2+); a Li burst's events take no neighbours
    (their Li comes from the field-driven supply, not from the lattice around them).
    Returns (pulse, species, mass, x0, y0, z0, t_dep_ns, neutral, depth_end_nm, atoms).
    """
    n = pulses.shape[0]
    cap = 2 * n * (1 + (corr_max if corr_share.max() > 0.0 else 0))
    an_c, w_an = sublattice_tables(ch_cdf, ch_a, ch_b, n_ch, anion)
    o_pulse = np.empty(cap, np.int64)
    o_sp = np.empty(cap, np.int16)
    o_mass = np.empty(cap, np.float32)
    o_x = np.empty(cap, np.float32)
    o_y = np.empty(cap, np.float32)
    o_z = np.empty(cap, np.float32)
    o_t = np.empty(cap, np.float32)
    o_neu = np.empty(cap, np.uint8)
    o_tof = np.empty(cap, np.float32)
    k = 0
    depth = depth0_nm
    slope = sin_shank / (1.0 - sin_shank)
    cos_a = math.sqrt(1.0 - sin_shank * sin_shank)
    area = math.pi * rho_sample_nm * rho_sample_nm
    burst = int(state[0])
    mod = int(state[1])
    spot_x = state[2]
    spot_y = state[3]
    atoms_total = 0
    for i in range(n):
        r = r0_nm + depth * slope
        rho_s = min(rho_sample_nm * r / (r0_nm + depth0_nm * slope), r * cos_a)
        rho_b = r * cos_a
        if shell_phase >= 0:
            rho_b = core_boundary_nm(depth, r, cos_a, shell_nm, apex_shell_nm, core_cap_nm)
        # state machine in evaporation order: Li bursts and Li-rich/poor episodes
        if burst == 1:
            if counter_uniform(seed, i, 0) < p_burst_end:
                burst = 0
        elif p_burst_start > 0.0 and counter_uniform(seed, i, 0) < p_burst_start and rho_b > 0.5:
            burst = 1
            rr = rho_b * math.sqrt(counter_uniform(seed, i, 1)) * 0.8
            ph = 2.0 * math.pi * counter_uniform(seed, i, 2)
            spot_x = rr * math.cos(ph)
            spot_y = rr * math.sin(ph)
        if counter_uniform(seed, i, 3) < p_mod_flip:
            mod = 1 - mod
        # origin on the hemispherical cap
        if burst == 1 and li_ion >= 0:
            g = burst_spot * rho_b * math.sqrt(-2.0 * math.log(1.0 - counter_uniform(seed, i, 4)))
            ph = 2.0 * math.pi * counter_uniform(seed, i, 5)
            x = spot_x + g * math.cos(ph)
            y = spot_y + g * math.sin(ph)
            rl = math.sqrt(x * x + y * y)
            if rl > rho_b:
                x *= rho_b / rl
                y *= rho_b / rl
                rl = rho_b
        else:
            # uniform on the disk by rejection from the square (no trigonometry)
            x = 1.0
            y = 1.0
            tries = 0
            while x * x + y * y > 1.0:
                x = 2.0 * counter_uniform(seed, i, 4) - 1.0 if tries == 0 else \
                    2.0 * counter_uniform(seed, n + i * 7 + tries, 4) - 1.0
                y = 2.0 * counter_uniform(seed, i, 5) - 1.0 if tries == 0 else \
                    2.0 * counter_uniform(seed, n + i * 7 + tries, 5) - 1.0
                tries += 1
            x *= rho_s
            y *= rho_s
            rl = math.sqrt(x * x + y * y)
        zc = depth + r - math.sqrt(max(r * r - rl * rl, 0.0))
        # phase at the origin
        phase = matrix_phase
        if shell_phase >= 0 and rl > rho_b:
            phase = shell_phase
        else:
            for gi in range(grain_r.shape[0]):
                dx = x - grain_c[gi, 0]
                dy = y - grain_c[gi, 1]
                dz = zc - grain_c[gi, 2]
                if dx * dx + dy * dy + dz * dz < grain_r[gi] * grain_r[gi]:
                    phase = grain_phase[gi]
                    break
        # channel
        in_burst = burst == 1 and li_ion >= 0 and phase != shell_phase
        if in_burst:
            a = li_ion
            b = -1
            neu = 0
            nat = 1
        else:
            row = phase * 2 + mod
            m = n_ch[row]
            j = 0
            uc = counter_uniform(seed, i, 6)
            while j < m - 1 and ch_cdf[row, j] < uc:
                j += 1
            a = ch_a[row, j]
            b = ch_b[row, j]
            neu = ch_neutral[row, j]
            nat = ch_atoms[row, j]
        pulsed = counter_uniform(seed, i, 7) >= dc_share
        t_open = 0.0
        if not pulsed:
            td = counter_uniform(seed, i, 8) * period_ns
        else:
            q = counter_uniform(seed, i, 8) * (t_quant.shape[0] - 1)
            iq = int(q)
            td = t_quant[iq] + (q - iq) * (t_quant[iq + 1] - t_quant[iq])
            t_open = td  # the site opens as the pulse's heat passes (chains leave then)
            if (a == li_ion or a == lio_ion) and a >= 0 and li_cum.shape[0] > 0:
                td = li_departure(td, counter_uniform(seed, i, 11), counter_uniform(seed, i, 12),
                                  li_t, li_cum, li_rate_base_per_ns, period_ns)
        for prod in range(2):
            s = a if prod == 0 else b
            if s < 0:
                continue
            uu = counter_uniform(seed, i, 9 + prod)
            o_pulse[k] = pulses[i]
            o_sp[k] = s
            o_mass[k] = sample_isotope(uu, s, iso_start, iso_mass, iso_cdf)
            o_tof[k] = o_mass[k]
            o_x[k] = x
            o_y[k] = y
            o_z[k] = zc
            o_t[k] = td
            o_neu[k] = neu
            k += 1
        if b >= 0 and neu == 0 and diss_life_ps[phase, a] > 0.0:
            on_track(k - 2, counter_uniform(seed, i, 13), diss_life_ps[phase, a], charges,
                     field_v_per_nm, r, o_sp, o_mass, o_tof)
        # neighbours leave on a laser pulse, still hot, when the event's site opens (not after
        # a Li parent's own wait, nor between pulses); a burst's Li comes from the supply;
        # the first neighbour's draw (emit_neighbours' first) is made here, sparing the call
        if (pulsed and corr_share[phase] > 0.0 and not in_burst
                and counter_uniform(seed ^ STREAM, i, 0) < corr_share[phase]):
            parent_anion = anion[a] == 1 and (b < 0 or anion[b] == 1)
            k0 = k
            k, n_nb = emit_neighbours(seed, i, corr_share[phase], corr_max, corr_spacing_nm,
                                      phase * 2 + mod, parent_anion, an_c, w_an, pulses[i], x, y,
                                      zc, t_open, ch_cdf, ch_a,
                                      ch_b, ch_neutral, ch_atoms, n_ch, iso_start, iso_mass,
                                      iso_cdf, o_pulse, o_sp, o_mass, o_x, o_y, o_z, o_t,
                                      o_neu, o_tof, k)
            nat += n_nb
            s3 = seed ^ LI_STREAM
            for rr in range(k0, k):
                if li_cum.shape[0] > 0 and (o_sp[rr] == li_ion or o_sp[rr] == lio_ion):
                    jj = 2 * (rr - k0)  # a Li neighbour still waits its own time
                    o_t[rr] = li_departure(t_open, counter_uniform(s3, i, jj),
                                           counter_uniform(s3, i, jj + 1), li_t, li_cum,
                                           li_rate_base_per_ns, period_ns)
                if (rr + 1 < k and o_x[rr] == o_x[rr + 1] and o_y[rr] == o_y[rr + 1]
                        and o_neu[rr] == 0 and diss_life_ps[phase, o_sp[rr]] > 0.0):
                    # a neighbour's (MO)2+ breaks on the way out too (its own break time)
                    on_track(rr, counter_uniform(s3, i, 12 + (rr - k0) // 2),
                             diss_life_ps[phase, o_sp[rr]], charges, field_v_per_nm, r, o_sp,
                             o_mass, o_tof)
        depth += nat / (phase_density[phase] * area)
        atoms_total += nat
    state[0] = burst
    state[1] = mod
    state[2] = spot_x
    state[3] = spot_y
    return (o_pulse[:k], o_sp[:k], o_mass[:k], o_x[:k], o_y[:k], o_z[:k], o_t[:k], o_neu[:k],
            o_tof[:k], depth, atoms_total)


@njit(cache=True, nogil=True)
def li_departure(t_open: float, u: float, u_dc: float, t: np.ndarray, cum: np.ndarray,
                 rate_base_per_ns: float, period_ns: float) -> float:
    """When a Li atom exposed at ``t_open`` (its neighbours left) leaves: after a wait with
    its own rate k_Li(T(t)), i.e. where the integrated rate ``cum`` (on the times ``t``)
    has grown by an Exp(1) draw -ln(1 - u) from ``t_open``; past the table's end at the
    base-temperature rate, and beyond the pulse period at a uniform time (uncorrelated)."""
    n = t.shape[0]
    lo, hi = 0, n - 1
    while hi - lo > 1:  # cum at t_open
        mid = (lo + hi) // 2
        if t[mid] <= t_open:
            lo = mid
        else:
            hi = mid
    f = (t_open - t[lo]) / (t[hi] - t[lo]) if t[hi] > t[lo] else 0.0
    target = cum[lo] + f * (cum[hi] - cum[lo]) - math.log(1.0 - u)
    if target >= cum[n - 1]:
        if rate_base_per_ns <= 0.0:
            return u_dc * period_ns
        td = t[n - 1] + (target - cum[n - 1]) / rate_base_per_ns
        return td if td < period_ns else u_dc * period_ns
    return sample_cdf(target, t, cum)


# ------------------------------------------------------------------------------ fast profile
@njit(cache=True)
def _log_site_rate_at(q_ev: np.ndarray, log_c: np.ndarray, log_nu: float, temp_k: float,
                      terms: np.ndarray) -> float:
    """:func:`log_site_rate` at one temperature (log-sum-exp over the phase's elements);
    ``terms``: scratch of the elements' size."""
    mx = -np.inf
    for i in range(q_ev.shape[0]):
        terms[i] = log_c[i] - (log_nu - q_ev[i] / (K_B_EV_PER_K * temp_k))
        if terms[i] > mx:
            mx = terms[i]
    acc = 0.0
    for i in range(q_ev.shape[0]):
        acc += math.exp(terms[i] - mx)
    return -(mx + math.log(acc))


@njit(cache=True, nogil=True)
def profile_kernel(q_ev: np.ndarray, fractions: np.ndarray, base_k: float, rise_k: float,
                   tau_ns: float, tau_cone_ns: float, period_s: float, nu_hz: float,
                   t: np.ndarray, n_quant: int):
    """:func:`evaporation_profile` followed by :meth:`EvaporationProfile.quantiles`, in one
    numba pass (the per-sub-block cost drops from ~1 ms of numpy calls to ~20 us).

    ``t``: the time grid (:func:`_time_grid` of ``tau_ns``); the cooling law is
    :class:`Cooling`'s (``tau_ns`` its tau_1). Returns
    (p_pulse, p_dc, tau_eff_ns, quantiles[n_quant + 1]); ``n_quant = 0``: no quantile table
    (an empty array). Tests hold the numpy twin.
    """
    n = t.shape[0]
    log_c = np.log(np.maximum(fractions, 1e-300))
    log_nu = math.log(nu_hz)
    lk = np.empty(n)
    terms = np.empty(q_ev.shape[0])
    ref = -np.inf
    for i in range(n):
        g = 1.0 / (math.sqrt(1.0 + t[i] / tau_ns) * (1.0 + t[i] / tau_cone_ns))
        lk[i] = _log_site_rate_at(q_ev, log_c, log_nu, base_k + rise_k * g, terms)
        if lk[i] > ref:
            ref = lk[i]
    lk_dc = _log_site_rate_at(q_ev, log_c, log_nu, base_k, terms)
    cum = np.empty(n)
    cum[0] = 0.0
    mean_acc = 0.0
    w = np.empty(n)
    for i in range(n):
        w[i] = math.exp(lk[i] - ref)
    for i in range(1, n):
        seg = 0.5 * (w[i] + w[i - 1]) * (t[i] - t[i - 1])
        cum[i] = cum[i - 1] + seg
        mean_acc += seg * 0.5 * (t[i] + t[i - 1])
    total = cum[n - 1]
    p_pulse_raw = total * 1e-9 * math.exp(ref) if math.isfinite(ref) else 0.0
    dc_rate = math.exp(lk_dc)
    p_pulse = max(p_pulse_raw - dc_rate * t[n - 1] * 1e-9, 0.0)
    p_dc = dc_rate * period_s
    mean_t = mean_acc / total if total > 0 else 0.0
    if n_quant <= 0:
        return min(p_pulse, 50.0), min(p_dc, 50.0), mean_t, np.empty(0)
    # inverse CDF on a regular probability grid (np.unique + np.interp of the numpy twin)
    c = np.empty(n)
    tc = np.empty(n)
    m = 0
    for i in range(n):
        v = cum[i] / total if total > 0 else i / (n - 1)
        if m == 0 or v > c[m - 1]:
            c[m] = v
            tc[m] = t[i]
            m += 1
    q = np.empty(n_quant + 1)
    j = 0
    for k in range(n_quant + 1):
        x = k / n_quant
        if x <= c[0]:
            q[k] = tc[0]
            continue
        if x >= c[m - 1]:
            q[k] = tc[m - 1]
            continue
        while c[j + 1] <= x:
            j += 1
        q[k] = tc[j] + (tc[j + 1] - tc[j]) / (c[j + 1] - c[j]) * (x - c[j])
    return min(p_pulse, 50.0), min(p_dc, 50.0), mean_t, q
