"""Each numba kernel of the simulator against a plain-numpy twin."""

from __future__ import annotations

import math

import numpy as np
import pytest
from apt_daq.sim import physics
from apt_daq.sim.detector import detect_mask, encode_delay_line, project_and_time, record_order
from hypothesis import given, settings
from hypothesis import strategies as st

# m/n [Da] = K V[V] t[ns]^2 / L[m]^2: the documented contract, typed here, not imported
K_CONTRACT = 1.9297e-10

MASK = (1 << 64) - 1


def counter_uniform_twin(seed: int, i: int, j: int) -> float:
    z = (seed + (i * 16 + j + 1) * 0x9E3779B97F4A7C15) & MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    z ^= z >> 31
    return (z >> 11) / 2.0**53


@given(st.integers(0, 2**63 - 1), st.integers(0, 10**7), st.integers(0, 15))
@settings(max_examples=200, deadline=None)
def test_counter_uniform_matches_twin(seed, i, j):
    assert physics.counter_uniform(np.uint64(seed), i, j) == counter_uniform_twin(seed, i, j)


def test_counter_uniform_is_uniform():
    u = np.array([counter_uniform_twin(7, i, 3) for i in range(20000)])
    # mean 1/2 +- 4 sigma, var 1/12
    assert abs(u.mean() - 0.5) < 4 * math.sqrt(1 / 12 / len(u))
    assert abs(u.var() - 1 / 12) < 0.005


@given(st.lists(st.floats(0.0, 0.999999), min_size=1, max_size=200),
       st.floats(1e-3, 3.0), st.integers(1, 10_000))
@settings(max_examples=100, deadline=None)
def test_event_pulses_matches_twin(u, rate, n):
    u = np.array(u)
    t = np.cumsum(-np.log1p(-u) / rate)
    want = np.floor(t[t < n]).astype(np.int64)
    first_over = np.flatnonzero(t >= n)
    if len(first_over):
        want = want[: first_over[0]]
    np.testing.assert_array_equal(physics.event_pulses(u, rate, n), want)


def test_event_pulses_poisson_counts():
    """Counts per pulse are Poisson(rate): mean and variance agree within counting error."""
    rate, n = 0.2, 200_000
    p = physics.event_pulses_seeded(np.uint64(3), rate, n)
    c = np.bincount(p, minlength=n)
    assert abs(c.mean() - rate) < 5 * math.sqrt(rate / n)
    assert abs(c.var() / c.mean() - 1) < 0.03


@given(st.floats(0, 1), st.integers(3, 50))
@settings(max_examples=100, deadline=None)
def test_sample_cdf_matches_interp(u, n):
    x = np.sort(np.random.default_rng(n).random(n)) * 10
    cdf = np.linspace(0, 1, n)
    assert math.isclose(physics.sample_cdf(u, x, cdf), float(np.interp(u, cdf, x)),
                        rel_tol=1e-9, abs_tol=1e-9)


@given(st.floats(0, 300), st.floats(10, 80), st.floats(0, 20), st.floats(0.5, 3),
       st.floats(0, 5))
@settings(max_examples=100, deadline=None)
def test_core_boundary_twin(depth, radius, shank_deg, shell, apex):
    cos_a = math.cos(math.radians(shank_deg))
    cap = max(radius - shell, 5.0)
    outer = radius * cos_a - shell / cos_a
    h = depth - apex
    if apex <= 0:
        want = max(0.0, outer)
    elif h <= 0:
        want = 0.0
    elif h < cap:
        want = max(0.0, min(outer, math.sqrt(h * (2 * cap - h))))
    else:
        want = max(0.0, outer)
    got = physics.core_boundary_nm(depth, radius, cos_a, shell, apex, cap)
    assert math.isclose(got, want, rel_tol=1e-12, abs_tol=1e-12)


@given(st.integers(1, 50), st.floats(500, 12000), st.floats(50, 400))
@settings(max_examples=50, deadline=None)
def test_project_and_time_twin(n, volts, flight_mm):
    rng = np.random.default_rng(n)
    x0, y0 = rng.normal(0, 15, n), rng.normal(0, 15, n)
    mass = rng.uniform(1, 120, n)
    t_dep = rng.exponential(0.2, n)
    normals = rng.standard_normal((n, 3))
    v = np.full(n, volts)
    mag = flight_mm / (1.65 * 40)
    dx, _dy, t = project_and_time(x0, y0, mass, t_dep, v, mag, flight_mm, 5.0, 0.05, 0.1, normals)
    xd = x0 * mag + 0.1 * normals[:, 0]
    yd = y0 * mag + 0.1 * normals[:, 1]
    leff = np.sqrt(flight_mm**2 + xd**2 + yd**2) * 1e-3
    tt = 5.0 + t_dep + leff * np.sqrt(mass / (K_CONTRACT * v)) + 0.05 * normals[:, 2]
    np.testing.assert_allclose(dx, xd, rtol=1e-12)
    np.testing.assert_allclose(t, tt, rtol=1e-12)
    # the contract's inverse: m/n = 1.9297e-10 V (t - t0 - t_dep)^2 / L_eff^2
    m_back = K_CONTRACT * v * (t - 5.0 - t_dep - 0.05 * normals[:, 2]) ** 2 / leff**2
    np.testing.assert_allclose(m_back, mass, rtol=1e-9)


@given(st.integers(1, 40))
@settings(max_examples=50, deadline=None)
def test_encode_delay_line_twin_and_decode(n):
    rng = np.random.default_rng(n)
    t, x, y = rng.uniform(100, 3000, n), rng.uniform(-40, 40, n), rng.uniform(-40, 40, n)
    b, d, v = 0.025, 60.0, 1.0
    sig = encode_delay_line(t, x, y, b, d, v)
    want = np.floor(np.stack([(t + d + x / v) / b, (t + d - x / v) / b, (t + d + y / v) / b,
                              (t + d - y / v) / b, t / b], axis=1) + 0.5).astype(np.int32)
    np.testing.assert_array_equal(sig, want)
    x_dec = (sig[:, 0] - sig[:, 1]) * b * v / 2
    assert np.all(np.abs(x_dec - x) <= b * v)  # within one TDC bin
    tsum = sig[:, 0] + sig[:, 1] - 2 * sig[:, 4]
    assert np.all(np.abs(tsum - 2 * d / b) <= 2)


def detect_mask_twin(pulse, dx, dy, t, neutral, u, eff, radius, dead_t, dead_z):
    keep = (neutral == 0) & (u < eff) & (dx**2 + dy**2 <= radius**2)
    for p in np.unique(pulse):
        idx = np.flatnonzero(pulse == p)
        idx = idx[np.argsort(t[idx], kind="stable")]
        kept = []
        for a in idx:
            if not keep[a]:
                continue
            if any(t[a] - t[b] < dead_t and (dx[a] - dx[b]) ** 2 + (dy[a] - dy[b]) ** 2
                   < dead_z**2 for b in kept):
                keep[a] = False
            else:
                kept.append(a)
    return keep.astype(np.uint8)


@given(st.integers(1, 60), st.floats(0.3, 1.0))
@settings(max_examples=60, deadline=None)
def test_detect_mask_twin(n, eff):
    rng = np.random.default_rng(n)
    pulse = np.sort(rng.integers(0, max(n // 3, 1), n))
    dx, dy = rng.uniform(-45, 45, n), rng.uniform(-45, 45, n)
    dx[::3] = dx[0]  # force some close pairs
    t = rng.uniform(0, 10, n)  # distinct times
    neutral = (rng.random(n) < 0.1).astype(np.uint8)
    u = rng.random(n)
    got = detect_mask(pulse, dx, dy, t, neutral, u, eff, 40.0, 3.0, 4.0)
    np.testing.assert_array_equal(got, detect_mask_twin(pulse, dx, dy, t, neutral, u, eff, 40.0,
                                                        3.0, 4.0))


@given(st.integers(0, 40), st.integers(0, 40))
@settings(max_examples=60, deadline=None)
def test_record_order_twin(na, nb):
    rng = np.random.default_rng(na * 100 + nb)
    pa, pb = np.sort(rng.integers(0, 20, na)), np.sort(rng.integers(0, 20, nb))
    p = np.concatenate([pa, pb])
    t = rng.random(na + nb)
    got = record_order(p, t, na)
    want = np.lexsort((t, p))
    np.testing.assert_array_equal(p[got], p[want])
    np.testing.assert_array_equal(t[got], t[want])


@pytest.mark.parametrize("tau_cone", [math.inf, 3.0])
def test_evaporation_profile_closed_form(tau_cone):
    """For Q >> kT the pulse integral is nu exp(-Q/kT_p) tau_e kT_p^2 / (Q dT) (Laplace), with
    tau_e = 1 / |g'(0)| = 1 / (1 / (2 tau_1) + 1 / tau_c) of the cooling law g(t) =
    (1 + t/tau_1)^(-1/2) (1 + t/tau_c)^(-1)."""
    q = np.array([1.0])
    prof = physics.evaporation_profile(q, np.array([1.0]), 60.0, 300.0, 2.0, 1e-5, tau_cone)
    kt = physics.K_B_EV_PER_K * 360.0
    tau_e = 1.0 / (1.0 / 4.0 + 1.0 / tau_cone)
    approx = 1e13 * math.exp(-1.0 / kt) * tau_e * 1e-9 * kt * 360.0 / (1.0 * 300.0)
    assert abs(prof.p_pulse / approx - 1) < 0.1
    # the tail's mean departure time is the same effective tau
    assert abs(prof.tau_eff_ns / (tau_e * kt * 360.0 / (1.0 * 300.0)) - 1) < 0.15


def test_combined_rate_is_harmonic_mean():
    """k_eff = 1 / sum(c_i / k_i): the slowest species sets the pace."""
    q, c = np.array([0.4, 0.6]), np.array([0.5, 0.5])
    t = np.array([300.0])
    k = 1e13 * np.exp(-q / (physics.K_B_EV_PER_K * t[0]))
    want = 1 / np.sum(c / k)
    got = math.exp(physics.log_site_rate(q, c, t, 1e13)[0])
    assert math.isclose(got, want, rel_tol=1e-9)
