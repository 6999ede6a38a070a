"""Heat flow out of the apex after a laser pulse (sim.physics.cooling): the cooling law
against a finite-difference solution of the heat equation along a cone, the diffusivity's
limits, and what follows from them: hotter pulses cool more slowly, a Cr shell cools faster."""

from __future__ import annotations

import math

import numpy as np
import pytest
from apt_daq.sim import physics
from apt_daq.sim.physics import THERMAL, Cooling, cooling
from apt_daq.sim.thermal import heated_length_nm

from apt_daq.analysis.mrp import mrp, mrp_window
from apt_daq.pipeline.decode import decode
from apt_daq.tof import mass_to_charge
from tests.sim.helpers import held_run


def heat_equation_apex(l_nm: float, x_cone_nm: float, d: float, times: np.ndarray,
                       n: int = 3000) -> np.ndarray:
    """Temperature rise at the apex (x = 0, insulated) of a cone whose cross-section grows as
    (1 + x / x_c)^2, heated at t = 0 to a Gaussian of rms l: explicit finite volumes of
    dT/dt = (1 / A) d/dx (A D dT/dx), a route independent of the closed form."""
    length = 60.0 * l_nm
    dx = length / n
    x = (np.arange(n) + 0.5) * dx
    xf = np.arange(n + 1) * dx
    area = (1 + x / x_cone_nm) ** 2
    af = (1 + xf / x_cone_nm) ** 2
    af[0] = af[-1] = 0.0
    temp = np.exp(-x ** 2 / (2 * l_nm ** 2))
    dt = 0.2 * dx * dx / d
    out, t = [], 0.0
    for target in times:
        while t < target:
            h = min(dt, target - t)
            flux = af[1:-1] * d * (temp[1:] - temp[:-1]) / dx
            change = np.zeros(n)
            change[:-1] += flux
            change[1:] -= flux
            temp += h * change / (area * dx)
            t += h
        out.append(temp[0])
    return np.array(out)


@pytest.mark.parametrize("ratio", [0.5, 1.0, 2.0, 8.0, math.inf])
def test_cooling_law_solves_the_heat_equation_in_a_cone(ratio):
    """g(t) = (1 + t/tau_1)^(-1/2) (1 + t/tau_c)^(-1): exact in 1-D (x_c -> inf), and within
    0.03 of the (unit) rise up to 3 tau_1 for x_c / l = 0.5-8 (the shipped specimens: 1-2)."""
    hl, d = 100.0, 1000.0
    tau_1 = hl * hl / (2 * d)
    x_c = ratio * hl
    p = THERMAL
    tau_c = hl * (p.cone_crossover_slope * x_c + p.cone_crossover_offset * hl) / (2 * d)
    times = np.array([0.1, 0.3, 1.0, 2.0, 3.0]) * tau_1
    want = heat_equation_apex(hl, x_c, d, times)
    got = Cooling(tau_1, tau_c, d).shape(times)
    assert np.abs(got - want).max() < (0.002 if ratio == math.inf else 0.03)


def test_heat_capacity_and_conductivity_limits():
    """C -> 3 k_B n (Dulong-Petit) far above Theta; kappa = kappa_300 at 300 K, ~1/T above."""
    n = 118.0
    c = physics.heat_capacity_j_per_m3k(3200.0, 400.0, n)
    assert c == pytest.approx(3 * 1.380649e-23 * n * 1e27, rel=2e-3)
    assert physics.heat_capacity_j_per_m3k(60.0, 400.0, n) < 0.25 * c
    assert physics.conductivity_w_per_mk(300.0, 5.0, 1.0) == 5.0
    assert physics.conductivity_w_per_mk(600.0, 5.0, 1.0) == pytest.approx(2.5)


def test_hotter_apex_cools_more_slowly():
    """D = kappa / C falls as T rises (kappa ~ 1/T, C towards Dulong-Petit): both times grow
    with the peak temperature, bare and coated."""
    for shell in (0.0, 20.0):
        taus = [cooling(tp, 45.0, 8.0, 118.0, shell).tau_1_ns for tp in (100, 172, 365, 653)]
        assert np.all(np.diff(taus) > 0)
        hot, cold = cooling(653, 45.0, 8.0, 118.0, shell), cooling(172, 45.0, 8.0, 118.0, shell)
        assert hot.tau_cone_ns > cold.tau_cone_ns
        assert hot.diffusivity_nm2_per_ns < cold.diffusivity_nm2_per_ns


def test_cr_shell_cools_faster_and_saturates():
    """A Cr shell conducts in parallel (kappa ~6x the oxide's at 300 K): tau_1 several times
    shorter. Between 10 and 30 nm shells tau_1 differs by ~2.5x here (the shell's share of the
    cross-section), which the paper's "no significant effect of 10-50 nm" does not support:
    a known limit (docs/physics.md)."""
    bare = cooling(172, 45.0, 8.0, 118.0).tau_1_ns
    t10 = cooling(172, 45.0, 8.0, 118.0, 10.0).tau_1_ns
    t30 = cooling(172, 45.0, 8.0, 118.0, 30.0).tau_1_ns
    assert t10 < 0.5 * bare and t30 < 0.3 * bare
    assert 1.0 < t10 / t30 < 3.0


def test_heated_length_grows_with_the_energy_the_apex_cannot_take():
    """l(E) = l_0 x / (1 - exp(-x)), x = E / E_s: l_0 for a weak pulse, growing as the apex's
    rise saturates; the cooling times grow with it at a fixed peak temperature."""
    assert heated_length_nm(None) == THERMAL.heated_length_nm
    assert heated_length_nm(1e-6) == pytest.approx(THERMAL.heated_length_nm, rel=1e-6)
    ls = [heated_length_nm(e) for e in (5.0, 10.0, 20.0, 35.0, 50.0)]
    assert np.all(np.diff(ls) > 0) and ls[-1] / ls[0] == pytest.approx(1.212, abs=0.005)
    # l_0 is set so that the 5 pJ calibration of the heated length (150 nm, the coated O2+
    # MRP of Fig. 4) holds with the growth
    assert ls[0] == pytest.approx(150.0, abs=0.05)
    weak, strong = cooling(365, 45.0, 8.0, 118.0, 20.0), cooling(365, 45.0, 8.0, 118.0, 20.0,
                                                                 energy_pj=50.0)
    assert strong.tau_1_ns > weak.tau_1_ns and strong.tau_cone_ns > weak.tau_cone_ns


SWEEP_PJ = (5.0, 10.0, 20.0, 35.0, 50.0)  # Fig. 5's coated NMC811 sweep (reproduce.fig5)
O2_DA = 31.9898


def _o2_mrp(seed: int, energy: float) -> tuple[float, float, float]:
    """O2+ (MRP50, its bootstrap error, MRP10) of a rate-held coated NMC811 run of 200 000
    ions: the records decoded and converted to m/n as the pipeline does, the peak fitted by
    apt_daq.analysis.mrp (the reproduction's run size and analysis)."""
    leap, held = held_run("nmc811-cr", energy, ions=200_000, seed=seed)
    hits, _, _ = decode(held.cat("raw"), leap.instrument)
    m = mass_to_charge(hits, leap.instrument.t0_ns, leap.instrument.flight_path_mm)
    lo, hi = mrp_window(O2_DA, "O2+")
    m = m[(m > lo) & (m < hi)]
    r = mrp(m, [("O2+", O2_DA)])[0]
    rng = np.random.default_rng(seed)
    boot = [mrp(m[rng.integers(0, len(m), len(m))], [("O2+", O2_DA)])[0]["mrp50"]
            for _ in range(12)]
    return r["mrp50"], float(np.std(boot)), r["mrp10"]


def test_coated_o2_mass_resolution_falls_with_laser_energy():
    """Issue 18: hotter pulses heat a longer zone that cools more slowly, so O2+'s thermal
    tail lengthens faster than the flight time (lower V) grows and the mass resolving power
    falls over Fig. 5's sweep. Measured from the decoded spectrum on seeds 1-3 (one of them,
    seed 2, reads 1291 / 1312 at 35 / 50 pJ: single runs scatter by ~3 % at 50 pJ, so the
    step is checked on the seeds' mean, against the error of the mean difference)."""
    runs = np.array([[_o2_mrp(s, e) for e in SWEEP_PJ] for s in (1, 2, 3)])  # seed, E, 3
    m50, err, m10 = runs[..., 0], runs[..., 1], runs[..., 2]
    mean = m50.mean(axis=0)
    err_mean = np.sqrt((err ** 2).sum(axis=0)) / len(m50)
    step = -np.diff(mean)
    assert np.all(step > 1.5 * np.hypot(err_mean[1:], err_mean[:-1])), (mean, err_mean)
    assert np.all(np.diff(m10, axis=1) < 0), m10  # FW10%M: every seed, every step
    assert np.all(m50[:, -1] < 0.8 * m50[:, 0]), m50  # 50 pJ well below 5 pJ on each seed
