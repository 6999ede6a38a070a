"""Laser heating and heat flow of the apex (docs/physics.md, "laser" and "cooling").

Laser:      U(T_peak) = U(T_base) + A (1 - exp(-E / E_s)),  U the Debye lattice energy;
Cooling:    heat diffusion along the shank: T(t) = T_base + dT (1 + t / tau_1)^(-1/2)
            (1 + t / tau_c)^(-1), dT = T_peak - T_base; tau_1 = l^2 / (2 D(T_peak)), tau_c the
            cone's widening; D = kappa(T) / C(T) of the cross-section (oxide core, Cr shell in
            parallel); l = l_0 x / (1 - exp(-x)), x = E / E_s, grows with the pulse energy.
            Closed forms in numpy, called once per sub-block of pulses.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

K_B_EV_PER_K = 8.617333262e-5


@dataclass(frozen=True)
class ThermalParams:
    """Laser heating and cooling of the apex (docs/physics.md, "laser")."""

    # absorbed pulse energy per apex atom, in kelvin of a Dulong-Petit (3 k_B per atom)
    # lattice: A (1 - exp(-E / E_s)); reflectivity and conduction losses saturate it
    absorbed_rise_k: float = 1400.0  # A
    saturation_pj: float = 110.0  # E_s
    # the lattice heat capacity is Debye's: at 60-150 K an oxide's is a fraction of 3 k_B,
    # so the first pJ raises T far more than a linear law fitted at 5-50 pJ says
    debye_temperature_k: float = 400.0
    # heat flow along the shank (docs/physics.md, "cooling"): D(T) = kappa(T) / C(T), C the
    # Debye heat capacity of the lattice, kappa = kappa_300 (300 K / T)^m (Umklapp, m = 1 for
    # a crystalline insulator); hotter apexes diffuse their heat more slowly
    # l_0: the apex length a weak pulse heats, set so that l(5 pJ) = 150 nm, the heated length
    # calibrated at 5 pJ (coated O2+ MRP, Fig. 4) before it grew with the energy:
    # 150 (1 - exp(-5 / 110)) / (5 / 110) = 146.64 nm (tests/sim/test_heat_flow.py)
    heated_length_nm: float = 146.64
    oxide_conductivity_w_per_mk: float = 5.0  # kappa_300 of the layered oxide
    oxide_conductivity_exponent: float = 1.0  # m of the oxide
    shell_conductivity_w_per_mk: float = 30.0  # kappa_300 of the sputtered Cr shell (bulk 94)
    shell_conductivity_exponent: float = 0.4  # m of Cr (bulk: 158 / 94 / ~80 at 100/300/600 K)
    shell_debye_temperature_k: float = 630.0  # Cr
    lateral_mode: float = 5.78  # j_0,1^2: the core's slowest radial mode into the shell
    # tau_c = l (2.9 x_c + 1.0 l) / (2 D), x_c = R / tan(a): fitted to a finite-difference
    # solution of the heat equation in a cone (tests/sim/test_heat_flow.py), x_c / l = 0.5-8
    cone_crossover_slope: float = 2.9
    cone_crossover_offset: float = 1.0
    attempt_frequency_hz: float = 1e13  # nu
    site_density_per_nm2: float = 0.4  # kink sites able to evaporate, per nm^2 of apex


THERMAL = ThermalParams()


def conductivity_w_per_mk(temp_k: float, kappa_300: float, exponent: float) -> float:
    """kappa(T) = kappa_300 (300 K / T)^m: phonon-phonon (Umklapp) scattering above ~Theta/4."""
    return kappa_300 * (300.0 / max(temp_k, 1.0)) ** exponent


def heat_capacity_j_per_m3k(temp_k: float, theta_k: float, atoms_per_nm3: float) -> float:
    """Volumetric heat capacity 3 k_B n c_D(T / Theta) of a Debye lattice, J / (m^3 K)."""
    _, u = _debye_energy_table(float(theta_k))
    i = int(min(max(temp_k, 2.0), 4000.0))  # the table is exact to ~1e-3 below 4000 K
    c = (u[i + 1] - u[i - 1]) / 2.0  # dU/dT per 3 k_B and atom (1 K grid)
    return 3.0 * 1.380649e-23 * atoms_per_nm3 * 1e27 * c


@dataclass(frozen=True)
class Cooling:
    """The apex's temperature after a pulse: T_base + dT (1 + t/tau_1)^(-1/2) (1 + t/tau_c)^(-1)."""

    tau_1_ns: float  # 1-D diffusion of the heated length along the shank
    tau_cone_ns: float  # when the spreading heat reaches the cone's widening (-> 3-D decay)
    diffusivity_nm2_per_ns: float  # D of the apex cross-section at T_peak

    def shape(self, t_ns: np.ndarray) -> np.ndarray:
        """(T(t) - T_base) / dT."""
        t = np.asarray(t_ns, float)
        return 1.0 / (np.sqrt(1.0 + t / self.tau_1_ns) * (1.0 + t / self.tau_cone_ns))


def heated_length_nm(energy_pj: float | None, p: ThermalParams = THERMAL) -> float:
    """rms length of the zone a pulse of ``energy_pj`` heats: l_0 x / (1 - exp(-x)),
    x = E / E_s (docs/physics.md, "cooling").

    The apex's rise A (1 - exp(-E / E_s)) saturates while the pulse still brings E: the energy
    the apex cannot take (its absorption saturates) is deposited further down the shank, so the
    heated volume, i.e. its length at a given cross-section, grows as E over the apex's rise.
    ``None``: l_0 (the weak-pulse limit)."""
    if energy_pj is None or energy_pj <= 0.0:
        return p.heated_length_nm
    x = energy_pj / p.saturation_pj
    return p.heated_length_nm * x / -math.expm1(-x)


def cooling(peak_k: float, radius_nm: float, shank_half_angle_deg: float,
            oxide_atoms_per_nm3: float, shell_nm: float = 0.0,
            shell_atoms_per_nm3: float = 83.3, p: ThermalParams = THERMAL,
            energy_pj: float | None = None) -> Cooling:
    """Heat flow out of the apex after a pulse (docs/physics.md, "cooling").

    1-D diffusion of a heated zone of rms length l along the shank: the apex temperature falls
    as (1 + t / tau_1)^(-1/2), tau_1 = l^2 / (2 D) (exact for a Gaussian zone); once the heat
    has spread over the length x_c = R / tan(a) the cone's cross-section widens and the decay
    turns 3-D: the factor (1 + t / tau_c)^(-1), tau_c = l (2.9 x_c + 1.0 l) / (2 D), fitted to
    the heat equation in a cone (within a few % of the rise up to 3 tau_1). D = kappa / C at
    the peak temperature (the evaporation happens within the first few % of the cooling): it
    falls as T rises (kappa ~ 1/T, C rising to Dulong-Petit), so the tails lengthen with the
    laser energy. A shell conducts in parallel with the oxide (area shares of the cross-section
    1 - (1 - t/R)^2 and (1 - t/R)^2) and the core's heat reaches it laterally in
    r_c^2 / (j_01^2 D_oxide), r_c = R - t: a Cr shell shortens tau_1 several-fold, and the
    shortening saturates with its thickness. The heated length l grows with the pulse energy
    (:func:`heated_length_nm`; ``energy_pj`` None: l_0).
    """
    tp = max(peak_k, 1.0)
    k_ox = conductivity_w_per_mk(tp, p.oxide_conductivity_w_per_mk, p.oxide_conductivity_exponent)
    c_ox = heat_capacity_j_per_m3k(tp, p.debye_temperature_k, oxide_atoms_per_nm3)
    d_ox = k_ox / c_ox * 1e9  # m^2/s -> nm^2/ns
    lateral = 0.0
    if shell_nm > 0:
        share = 1.0 - max(0.0, 1.0 - shell_nm / radius_nm) ** 2
        k_sh = conductivity_w_per_mk(tp, p.shell_conductivity_w_per_mk,
                                     p.shell_conductivity_exponent)
        c_sh = heat_capacity_j_per_m3k(tp, p.shell_debye_temperature_k, shell_atoms_per_nm3)
        d = (share * k_sh + (1 - share) * k_ox) / (share * c_sh + (1 - share) * c_ox) * 1e9
        r_core = max(radius_nm - shell_nm, 0.0)
        lateral = r_core ** 2 / (p.lateral_mode * d_ox)
    else:
        d = d_ox
    x_cone = radius_nm / math.tan(math.radians(shank_half_angle_deg))
    hl = heated_length_nm(energy_pj, p)
    return Cooling(hl ** 2 / (2 * d) + lateral,
                   hl * (p.cone_crossover_slope * x_cone + p.cone_crossover_offset * hl) / (2 * d),
                   d)


@functools.lru_cache(maxsize=8)
def _debye_energy_table(theta_k: float) -> tuple[np.ndarray, np.ndarray]:
    """Debye lattice energy per 3 k_B and atom, U(T) = T D3(Theta / T) in K, on a 1 K grid.

    D3(x) = 3 / x^3 int_0^x y^3 / (e^y - 1) dy (the zero-point energy cancels in differences).
    c = dU/dT tends to 1 (Dulong-Petit) for T >> Theta and to (4 pi^4 / 5) (T / Theta)^3 below
    Theta / 10."""
    y = np.linspace(0.0, 200.0, 200_001)
    f = y ** 3 / np.expm1(np.maximum(y, 1e-12))
    f[0] = 0.0
    cum = np.concatenate([[0.0], np.cumsum(0.5 * (f[1:] + f[:-1]) * np.diff(y))])
    t = np.arange(0.0, 5001.0)
    x = theta_k / np.maximum(t, 1e-9)
    d3 = 3.0 / x ** 3 * np.interp(x, y, cum)
    return t, t * d3


def debye_energy_k(temp_k: float | np.ndarray, theta_k: float) -> np.ndarray:
    """Lattice energy per 3 k_B and atom (K) of a Debye solid at ``temp_k``."""
    t, u = _debye_energy_table(float(theta_k))
    return np.interp(temp_k, t, u)


def absorbed_energy_k(energy_pj: float, p: ThermalParams = THERMAL) -> float:
    """Pulse energy deposited per apex atom, in K of a Dulong-Petit lattice:
    A (1 - exp(-E / E_s)) (linear at low E; reflectivity and conduction saturate it)."""
    return p.absorbed_rise_k * (1.0 - math.exp(-max(energy_pj, 0.0) / p.saturation_pj))


def peak_temperature_k(base_k: float, energy_pj: float, p: ThermalParams = THERMAL) -> float:
    """T_peak from U(T_peak) = U(T_base) + A (1 - exp(-E / E_s)), U the Debye lattice energy.

    The absorbed energy heats a lattice whose heat capacity at cryogenic temperature is far
    below 3 k_B per atom (c ~ T^3 below Theta / 10), so the rise per pJ is largest at low
    energy and the base temperature matters (docs/physics.md, "laser")."""
    t, u = _debye_energy_table(float(p.debye_temperature_k))
    target = float(np.interp(base_k, t, u)) + absorbed_energy_k(energy_pj, p)
    return float(np.interp(target, u, t))
