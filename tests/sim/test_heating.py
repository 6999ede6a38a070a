"""Laser heating of the apex: the Debye lattice energy and the peak temperature law."""

from __future__ import annotations

import math

import numpy as np
import pytest
from apt_daq.sim import physics
from apt_daq.sim.physics import THERMAL, debye_energy_k, peak_temperature_k
from hypothesis import given, settings
from hypothesis import strategies as st


def _heat_capacity(temp_k: float, theta_k: float, h: float = 0.5) -> float:
    """c / 3 k_B per atom by central difference of the tabulated lattice energy."""
    u = debye_energy_k(np.array([temp_k - h, temp_k + h]), theta_k)
    return float((u[1] - u[0]) / (2 * h))


@pytest.mark.parametrize("theta_k", [300.0, 400.0, 600.0])
def test_debye_heat_capacity_limits(theta_k):
    """c -> 3 k_B (Dulong-Petit) for T >> Theta (1 - (Theta / T)^2 / 20); c = (4 pi^4 / 5) (T / Theta)^3 for
    T << Theta; c(Theta) = 0.952 (tabulated Debye function)."""
    assert _heat_capacity(8 * theta_k, theta_k) == pytest.approx(1.0, abs=2e-3)
    t = theta_k / 25
    assert _heat_capacity(t, theta_k) == pytest.approx(4 * math.pi ** 4 / 5 * (t / theta_k) ** 3,
                                                       rel=0.03)
    assert _heat_capacity(theta_k, theta_k) == pytest.approx(0.952, abs=3e-3)


def test_debye_energy_matches_quadrature():
    """The table equals a direct integral of the Debye heat capacity (numpy twin)."""
    theta = THERMAL.debye_temperature_k
    x = np.linspace(1e-6, 1.0, 20001)

    def c(t):
        y = x * theta / t
        return 3 * (t / theta) ** 3 * np.trapezoid(y ** 4 * np.exp(-y) / (-np.expm1(-y)) ** 2, y)

    temps = np.linspace(5.0, 800.0, 2000)
    cs = np.array([c(t) for t in temps])
    du = np.concatenate([[0.0], np.cumsum(0.5 * (cs[1:] + cs[:-1]) * np.diff(temps))])
    for t_hi in (60.0, 100.0, 300.0, 800.0):
        ref = np.interp(t_hi, temps, du)
        got = debye_energy_k(t_hi, theta) - debye_energy_k(5.0, theta)
        assert got == pytest.approx(ref, rel=2e-3)


@settings(max_examples=60, deadline=None)
@given(st.floats(20.0, 300.0), st.floats(0.0, 60.0), st.floats(0.01, 10.0))
def test_peak_temperature_conserves_energy_and_is_monotonic(base_k, energy_pj, d_pj):
    """U(T_peak) - U(T_base) is the absorbed energy; T_peak rises with E."""
    tp = peak_temperature_k(base_k, energy_pj)
    theta = THERMAL.debye_temperature_k
    du = float(debye_energy_k(tp, theta) - debye_energy_k(base_k, theta))
    assert du == pytest.approx(physics.absorbed_energy_k(energy_pj), abs=0.02)
    assert peak_temperature_k(base_k, energy_pj + d_pj) > tp
    assert peak_temperature_k(base_k, 0.0) == pytest.approx(base_k, abs=1e-6)


def test_hot_lattice_gives_the_linear_law():
    """Far above Theta the lattice is Dulong-Petit: T_peak - T_base = A (1 - exp(-E / E_s))."""
    for e in (1.0, 5.0, 50.0):
        rise = peak_temperature_k(3000.0, e) - 3000.0
        assert rise == pytest.approx(physics.absorbed_energy_k(e), rel=4e-3)


def test_low_energy_heats_more_per_pj_at_cryogenic_base():
    """At 60 K the first pJ raises T much more than the mean per pJ over 5-50 pJ (small
    heat capacity of the cold lattice), and more than at a 300 K base."""
    rise1 = peak_temperature_k(60.0, 1.0) - 60.0
    mean = (peak_temperature_k(60.0, 50.0) - peak_temperature_k(60.0, 5.0)) / 45.0
    assert rise1 > 2.5 * mean
    assert rise1 > 2.0 * (peak_temperature_k(300.0, 1.0) - 300.0)


def test_calibration_peaks():
    """The 5-50 pJ peaks that set the field calibration (docs/physics.md): 5 pJ near 170 K,
    20 pJ near 365 K, 50 pJ near 650 K; 1 pJ heats the 60 K apex by more than 30 K."""
    tp = {e: peak_temperature_k(60.0, e) for e in (1.0, 5.0, 20.0, 50.0)}
    assert 160 < tp[5.0] < 180
    assert 345 < tp[20.0] < 390
    assert 620 < tp[50.0] < 680
    assert tp[1.0] - 60.0 > 30.0
