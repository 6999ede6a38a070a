"""Pipeline kernels against plain-numpy twins, and the decode/m-n chain against known ions."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from apt_daq.config import InstrumentConfig
from apt_daq.hits import RAW_DTYPE
from apt_daq.isotopes import ion_mass
from apt_daq.pipeline import process_chunk, ranges_for_ions
from apt_daq.pipeline.corrections import Calibration, corrected_mass
from apt_daq.pipeline.decode import decode, time_sum_bins, time_sum_tolerance_bins
from apt_daq.pipeline.histogram import hist_kernel_parallel, mass_histogram
from apt_daq.pipeline.ranging import RangeLookup, range_bucket_kernel, range_kernel
from apt_daq.pipeline.tof import K_DA, mass_to_charge

from .conftest import encode

INST = InstrumentConfig()
RANGES = ranges_for_ions(["Li+", "O+", "O2+", "Ni+", "Ni2+", "Co+", "Mn+", "Mn2+", "NiO+"])


def numpy_decode(raw: np.ndarray, inst: InstrumentConfig):
    """The numpy twin of the decode kernel."""
    cols = [raw[f].astype(np.int64) for f in ("t_x1", "t_x2", "t_y1", "t_y2", "t_mcp")]
    a, b, c, d, m = cols
    complete = (a >= 0) & (b >= 0) & (c >= 0) & (d >= 0) & (m >= 0)
    s, tol = time_sum_bins(inst), time_sum_tolerance_bins(inst)
    ok = complete & (np.abs(a + b - 2 * m - s) <= tol) & (np.abs(c + d - 2 * m - s) <= tol)
    keep = np.flatnonzero(ok)
    half = 0.5 * inst.tdc_bin_ns * inst.signal_velocity_mm_per_ns
    x = (a - b)[keep] * half
    y = (c - d)[keep] * half
    tof = m[keep] * inst.tdc_bin_ns
    p = raw["pulse"][keep]
    _, inv, cnt = np.unique(p, return_inverse=True, return_counts=True)
    return (
        keep,
        tof,
        x,
        y,
        np.minimum(cnt[inv], 255),
        int((~complete).sum()),
        int((complete & ~ok).sum()),
    )


def numpy_mass(tof, x, y, v, t0, l_mm, vc=(1, 0, 0), bc=(1, 0, 0, 0, 0, 0)):
    m = K_DA * v * (tof - t0) ** 2 / ((l_mm**2 + x**2 + y**2) * 1e-6)
    u = v * 1e-3
    fv = vc[0] + vc[1] * u + vc[2] * u * u
    xs, ys = x / 10, y / 10
    fb = bc[0] + bc[1] * xs + bc[2] * ys + bc[3] * xs**2 + bc[4] * xs * ys + bc[5] * ys**2
    return m / (fv * fb)


def numpy_range(m, lo, hi):
    j = np.searchsorted(lo, m, side="right") - 1
    jj = np.clip(j, 0, None)
    return np.where((j >= 0) & (m < hi[jj]), j, -1).astype(np.int16)


raw_records = hnp.arrays(
    np.int32, st.tuples(st.integers(0, 60), st.just(5)),
    elements=st.integers(-1, 40000),
).map(lambda a: a)  # fmt: skip


def _raw_from(table: np.ndarray, pulses: np.ndarray) -> np.ndarray:
    raw = np.zeros(len(table), RAW_DTYPE)
    for i, f in enumerate(("t_x1", "t_x2", "t_y1", "t_y2", "t_mcp")):
        raw[f] = table[:, i]
    raw["pulse"] = np.sort(pulses)
    raw["v_dc"] = 5000.0
    return raw


@settings(max_examples=60, deadline=None)
@given(
    st.integers(0, 200),
    st.integers(0, 2**31 - 1),
    st.floats(0.0, 0.5),
)
def test_decode_matches_numpy(n: int, seed: int, corrupt: float) -> None:
    rng = np.random.default_rng(seed)
    mass = rng.uniform(1, 120, n)
    r = rng.uniform(0, 38, n)
    phi = rng.uniform(0, 2 * np.pi, n)
    raw = encode(mass, r * np.cos(phi), r * np.sin(phi), rng.uniform(2000, 9000, n), INST,
                 pulse=np.sort(rng.integers(0, max(1, n // 2), n)))  # fmt: skip
    bad = rng.random(n) < corrupt
    field = rng.choice(["t_x1", "t_x2", "t_y1", "t_y2", "t_mcp"], n)
    for i in np.flatnonzero(bad):
        raw[field[i]][i] = (
            -1 if rng.random() < 0.5 else raw[field[i]][i] + rng.integers(-3000, 3000)
        )
    hits, keep, counters = decode(raw, INST)
    k2, tof, x, y, mult, inc, badsum = numpy_decode(raw, INST)
    np.testing.assert_array_equal(keep, k2)
    np.testing.assert_allclose(hits["tof"], tof, rtol=1e-6)
    np.testing.assert_allclose(hits["det_x"], x, atol=1e-4)
    np.testing.assert_allclose(hits["det_y"], y, atol=1e-4)
    np.testing.assert_array_equal(hits["multiplicity"], mult)
    assert counters["incomplete"] == inc and counters["bad_time_sum"] == badsum
    assert counters["rejected"] + len(keep) == n


@settings(max_examples=40, deadline=None)
@given(
    hnp.arrays(
        np.float64,
        st.integers(0, 300),
        elements=st.one_of(st.floats(-5, 200), st.just(float("nan"))),
    ),
)
def test_range_kernels_match_searchsorted(mass: np.ndarray) -> None:
    want = numpy_range(mass, RANGES.lo_da, RANGES.hi_da)
    got = range_kernel(mass, RANGES.lo_da, RANGES.hi_da, np.empty(len(mass), np.int16))
    lk = RangeLookup.build(RANGES)
    got2 = range_bucket_kernel(mass, lk.lo, lk.hi, lk.table, lk.inv_width,
                               np.empty(len(mass), np.int16))  # fmt: skip
    want = np.where(np.isnan(mass), -1, want)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got2, want)


def test_range_edges_are_half_open() -> None:
    lo, hi = RANGES.lo_da, RANGES.hi_da
    mass = np.concatenate([lo, hi, np.nextafter(hi, 0), np.nextafter(lo, 0)])
    lk = RangeLookup.build(RANGES)
    got = range_bucket_kernel(
        mass, lk.lo, lk.hi, lk.table, lk.inv_width, np.empty(len(mass), np.int16)
    )
    np.testing.assert_array_equal(got, numpy_range(mass, lo, hi))
    n = len(lo)
    assert np.all(got[:n] == np.arange(n))  # lo belongs to its range
    assert np.all(got[2 * n : 3 * n] == np.arange(n))  # just below hi too


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**31 - 1), st.floats(-0.02, 0.02), st.floats(-0.01, 0.01))
def test_corrected_mass_matches_numpy(seed: int, c1: float, b3: float) -> None:
    rng = np.random.default_rng(seed)
    n = 500
    mass = rng.uniform(1, 150, n)
    x, y = rng.uniform(-30, 30, (2, n))
    v = rng.uniform(2000, 12000, n)
    raw = encode(mass, x, y, v, INST)
    hits, _, _ = decode(raw, INST)
    cal = Calibration((1.0 - 5 * c1, c1, 0.0), (1.0, 0.001, -0.002, b3, 0.0, b3))
    got = corrected_mass(hits, INST.t0_ns, INST.flight_path_mm, cal)
    h = {f: hits[f].astype(np.float64) for f in ("tof", "det_x", "det_y", "v_dc")}
    want = numpy_mass(h["tof"], h["det_x"], h["det_y"], h["v_dc"], INST.t0_ns,
                      INST.flight_path_mm, cal.voltage_coeffs, cal.bowl_coeffs)  # fmt: skip
    np.testing.assert_allclose(got, want, rtol=1e-12)


@pytest.mark.parametrize("name", ["Li+", "O+", "O2+", "Ni+", "Ni2+", "Co+", "Mn2+", "NiO+"])
def test_masses_land_on_isotopes(name: str) -> None:
    """Encoded with the contract's convention, decoded masses land on the ion's m/n within the
    TDC resolution: dm/m = 2 dt/t (+ position rounding), well below 1e-3 Da * m/30."""
    rng = np.random.default_rng(1)
    n = 2000
    m0 = ion_mass(name)
    r = 38 * np.sqrt(rng.random(n))
    phi = rng.uniform(0, 2 * np.pi, n)
    raw = encode(np.full(n, m0), r * np.cos(phi), r * np.sin(phi), rng.uniform(3000, 9000, n), INST)
    hits, derived, keep, counters = process_chunk(raw, INST, RANGES)
    assert counters["rejected"] == 0 and len(keep) == n
    tof = hits["tof"].astype(np.float64)
    # TDC rounding: half a bin on the MCP time (twice: t^2), half a bin on each delay-line end
    # moves x and y by bin*v/2 and L_eff^2 by 2 |x| dx + 2 |y| dy; plus f32 storage
    dpos = 0.5 * INST.tdc_bin_ns * INST.signal_velocity_mm_per_ns
    tol = m0 * (INST.tdc_bin_ns / tof.min() + 4 * 38 * dpos / INST.flight_path_mm**2 + 2e-5)
    assert np.max(np.abs(derived["mass"] - m0)) < tol
    names = np.array(RANGES.names)[derived["ion"]]
    assert np.all(derived["ion"] >= 0) and np.all(names == name)
    assert np.all(np.isnan(derived["x"]))
    np.testing.assert_allclose(mass_to_charge(hits, INST.t0_ns, INST.flight_path_mm),
                               derived["mass"], rtol=1e-6)  # fmt: skip


def test_process_chunk_threads_agree() -> None:
    rng = np.random.default_rng(3)
    n = 250_000
    raw = encode(rng.choice([7.016, 15.995, 31.99, 57.935, 28.968], n), *rng.uniform(-30, 30, (2, n)),
                 6000.0, INST, pulse=np.sort(rng.integers(0, n, n)))  # fmt: skip
    raw["t_y2"][rng.random(n) < 0.05] = -1
    one = process_chunk(raw, INST, RANGES)
    two = process_chunk(raw, INST, RANGES, threads=2)
    np.testing.assert_array_equal(one[0], two[0])
    np.testing.assert_array_equal(one[2], two[2])
    for f in ("mass", "ion"):
        np.testing.assert_array_equal(one[1][f], two[1][f])
    assert one[3] == two[3]


def test_histogram_kernels_match_numpy() -> None:
    rng = np.random.default_rng(4)
    m = np.concatenate([rng.uniform(-1, 260, 10000), rng.normal(58, 0.05, 5000)])
    counts, edges = mass_histogram(m, 0.01, 250.0)
    want, _ = np.histogram(m, edges)
    # np.histogram closes the last bin; values exactly at 250.0 do not occur here
    np.testing.assert_array_equal(counts, want)
    par = hist_kernel_parallel(m, 0.0, 100.0, len(counts), 2)
    np.testing.assert_array_equal(par, counts)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31), st.integers(0, 400), st.integers(1, 30))
def test_records_kernel_matches_numpy(seed: int, n: int, pulses: int) -> None:
    """Decoded.records (one numba pass) against the numpy assembly of the same rows."""
    from apt_daq.hits import DERIVED_DTYPE, HIT_DTYPE
    from apt_daq.pipeline.process import Decoded

    rng = np.random.default_rng(seed)
    raw = np.zeros(n + 7, RAW_DTYPE)
    raw["pulse"] = np.sort(rng.integers(0, pulses, n + 7))  # multi-hits on purpose
    for f in ("v_dc", "v_pulse", "laser_pj"):
        raw[f] = rng.random(n + 7) * 1e3
    keep = np.sort(rng.choice(n + 7, n, replace=False)).astype(np.int64)
    f32 = lambda: rng.random(n).astype(np.float32)  # noqa: E731
    dec = Decoded(keep, f32(), f32(), f32(), f32(), rng.integers(-1, 9, n).astype(np.int16), {})
    hits, derived = dec.records(raw)
    want = np.zeros(n, HIT_DTYPE)
    want["pulse"] = raw["pulse"][keep]
    want["tof"], want["det_x"], want["det_y"] = dec.tof, dec.det_x, dec.det_y
    for f in ("v_dc", "v_pulse", "laser_pj"):
        want[f] = raw[f][keep]
    _, inv, counts = np.unique(want["pulse"], return_inverse=True, return_counts=True)
    want["multiplicity"] = np.minimum(counts[inv], 255)
    assert hits.tobytes() == want.tobytes()
    assert dec.counters["multi_hits"] == int(np.count_nonzero(counts[inv] > 1))
    d = np.zeros(n, DERIVED_DTYPE)
    d["mass"], d["ion"], d["x"], d["y"], d["z"] = dec.mass, dec.ion, np.nan, np.nan, np.nan
    assert derived.tobytes() == d.tobytes()


def test_one_mn_kernel_and_constant() -> None:
    """K is 2 e / u (CODATA) to 4 ppm; the simulator times ions with the exact inverse of the
    pipeline's m/n (same function, same constant), so a simulated ion's m/n comes back to
    float64 rounding; the numpy twin (``py_func``) is the same arithmetic."""
    import apt_daq.sim.detector as det

    from apt_daq.pipeline.tof import K_CODATA, flight_time_one, mass_da

    assert abs(K_DA / K_CODATA - 1) < 4e-6
    assert det.flight_time_one is flight_time_one and det.K_DA is K_DA
    rng = np.random.default_rng(5)
    m = rng.uniform(1, 250, 1000)
    x, y = rng.uniform(-40, 40, (2, 1000))
    v = rng.uniform(2000, 12000, 1000)
    t = np.array([flight_time_one(m[i], v[i], 110.0, x[i], y[i]) for i in range(1000)])
    back = np.array([mass_da(t[i], x[i], y[i], v[i], 0.0, 110.0) for i in range(1000)])
    np.testing.assert_allclose(back, m, rtol=1e-13)
    np.testing.assert_allclose(mass_da.py_func(t, x, y, v, 0.0, 110.0), back, rtol=1e-15)
