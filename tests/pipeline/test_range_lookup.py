"""Ranging by lookup table equals ranging by search, for any range table and any m/n; the
fused per-chunk kernel (branch-free compaction, table ranging) equals its numpy twin."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from apt_daq.config import InstrumentConfig
from apt_daq.pipeline.corrections import Calibration
from apt_daq.pipeline.process import decode_chunk, range_pass
from apt_daq.pipeline.ranging import (
    EDGE,
    RangeLookup,
    cell_width,
    lookup_table,
    range_bucket_kernel,
    range_masses,
    ranges_for_ions,
)
from apt_daq.rangetable import RangeTable

from .conftest import encode
from .test_kernels import numpy_decode, numpy_mass

INST = InstrumentConfig()


def search_reference(m: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """numpy's searchsorted: the largest lower edge <= m, ranged if m < its upper edge."""
    m = np.asarray(m, np.float64)
    j = np.searchsorted(lo, m, side="right") - 1
    ok = (j >= 0) & (m < hi[np.clip(j, 0, None)]) & ~np.isnan(m)
    return np.where(ok, j, -1).astype(np.int16)


@st.composite
def range_tables(draw) -> tuple[np.ndarray, np.ndarray]:
    """Sorted disjoint ranges: widths and gaps from 1e-6 Da (far below the 0.002 Da cell) to
    tens of Da, gaps of exactly 0 (touching ranges) included, first edge anywhere from -5 Da
    (a table a kernel must still range exactly) to 200 Da."""
    n = draw(st.integers(1, 40))
    sizes = st.one_of(st.just(0.0), st.floats(1e-6, 1e-2), st.floats(1e-2, 30.0))
    start = draw(st.floats(-5.0, 200.0))
    lo, hi = [], []
    x = start
    for i in range(n):
        gap = draw(sizes) if i else 0.0
        width = draw(st.one_of(st.floats(1e-6, 1e-2), st.floats(1e-2, 30.0)))
        x += gap
        lo.append(x)
        x += width
        hi.append(x)
    lo_a, hi_a = np.array(lo), np.array(hi)
    keep = np.concatenate([[True], lo_a[1:] >= hi_a[:-1]]) & (hi_a > lo_a)  # float rounding
    return lo_a[keep], hi_a[keep]


def probes(lo: np.ndarray, hi: np.ndarray, w: float, rng: np.random.Generator) -> np.ndarray:
    """m/n at and around every edge (one float64 and one float32 step either side), on cell
    boundaries near the edges, random values across the table, negatives, NaN, far above."""
    e = np.concatenate([lo, hi])
    near = [e, np.nextafter(e, -np.inf), np.nextafter(e, np.inf)]
    e32 = e.astype(np.float32)
    near += [e32, np.nextafter(e32, np.float32(-np.inf)), np.nextafter(e32, np.float32(np.inf))]
    cells = np.floor(e / w)
    near += [(cells + d) * w for d in (-1, 0, 1, 2)]
    top = float(hi.max())
    near += [rng.uniform(min(lo.min(), 0.0) - 1, top + 1, 2000), np.array([-1.0, -0.0, 0.0,
             np.nan, top * 2 + 10, 1e30])]  # fmt: skip
    return np.concatenate([np.asarray(a, np.float64) for a in near])


@settings(max_examples=150, deadline=None)
@given(range_tables(), st.integers(0, 2**32 - 1))
def test_lookup_equals_search(table: tuple[np.ndarray, np.ndarray], seed: int) -> None:
    lo, hi = table
    tab, inv = lookup_table(lo, hi)
    m = probes(lo, hi, 1.0 / inv, np.random.default_rng(seed))
    want = search_reference(m, lo, hi)
    got = range_bucket_kernel(m, lo, hi, tab, inv, np.empty(len(m), np.int16))
    np.testing.assert_array_equal(got, want)
    # the fused kernel's pass ranges its stored float32 masses the same way
    m32 = m.astype(np.float32)
    out = np.empty(len(m32), np.int16)
    range_pass(m32, len(m32), lo, hi, tab, inv, out)
    np.testing.assert_array_equal(out, search_reference(m32, lo, hi))


@settings(max_examples=60, deadline=None)
@given(range_tables())
def test_lookup_answers_most_cells_directly(table: tuple[np.ndarray, np.ndarray]) -> None:
    """The grid is finer than the narrowest interval between edges (down to the size cap),
    so only cells at an edge and their neighbours defer to the search."""
    lo, hi = table
    tab, inv = lookup_table(lo, hi)
    w = 1.0 / inv
    assert len(tab) <= RangeLookup.MAX_CELLS
    e = np.unique(np.concatenate([lo, hi]))
    e = e[e >= 0]
    if len(e) > 1 and np.diff(e).min() / 4 >= float(e.max()) / (RangeLookup.MAX_CELLS - 3):
        assert w <= np.diff(e).min() / 4 * (1 + 1e-12)
    assert np.count_nonzero(tab == EDGE) <= 3 * len(e)
    assert w <= 0.002 * (1 + 1e-12) or w == cell_width(lo, hi)


def test_range_masses_lookup_and_search_agree_on_a_real_table() -> None:
    ranges = ranges_for_ions(["H+", "Li+", "O+", "O2+", "Ni+", "Ni2+", "Co+", "Mn2+", "NiO+"])
    rng = np.random.default_rng(4)
    m = rng.uniform(-1, 120, 200_000).astype(np.float32)
    lk = RangeLookup.build(ranges)
    np.testing.assert_array_equal(range_masses(m, ranges, lk), range_masses(m, ranges))
    np.testing.assert_array_equal(range_masses(m, ranges), search_reference(m, lk.lo, lk.hi))


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.floats(0.0, 0.3), range_tables())
def test_fused_kernel_matches_numpy_twin(seed: int, corrupt: float,
                                         table: tuple[np.ndarray, np.ndarray]) -> None:
    """decode_chunk (branch-free compaction, tuple coefficients, table ranging) against the
    numpy decode, m/n and search written apart from it: the same records kept, the same
    counters, m/n to float32 precision, and the search's range of each stored m/n."""
    lo, hi = table
    if lo[0] < 0:  # a RangeTable starts at >= 0 Da
        lo, hi = lo - lo[0], hi - lo[0]
    rng = np.random.default_rng(seed)
    n = int(rng.integers(0, 3000))
    mass = rng.uniform(1, 150, n)
    r = 38 * np.sqrt(rng.random(n))
    phi = rng.uniform(0, 2 * np.pi, n)
    raw = encode(mass, r * np.cos(phi), r * np.sin(phi), rng.uniform(2000, 9000, n), INST,
                 pulse=np.sort(rng.integers(0, max(1, n), n)))  # fmt: skip
    raw["v_pulse"] = rng.uniform(0, 500, n)
    for i in np.flatnonzero(rng.random(n) < corrupt):
        f = rng.choice(["t_x1", "t_x2", "t_y1", "t_y2", "t_mcp"])
        raw[f][i] = -1 if rng.random() < 0.5 else raw[f][i] + rng.integers(-3000, 3000)
    ranges = RangeTable([f"r{i}" for i in range(len(lo))], lo, hi, [{"X": 1}] * len(lo),
                        [1] * len(lo))  # fmt: skip
    cal = Calibration((0.998, 0.0005, -1e-5), (1.0, 1e-4, -1e-4, 2e-4, 1e-5, 2e-4))
    dec = decode_chunk(raw, INST, ranges, calibration=cal)
    keep, tof, x, y, _, inc, bad = numpy_decode(raw, INST)
    np.testing.assert_array_equal(dec.keep, keep)
    assert dec.counters == {"records": n, "rejected": inc + bad, "incomplete": inc,
                            "bad_time_sum": bad}  # fmt: skip
    v = raw["v_dc"][keep].astype(np.float64) + raw["v_pulse"][keep]
    want = numpy_mass(tof, x, y, v, INST.t0_ns, INST.flight_path_mm, cal.voltage_coeffs,
                      cal.bowl_coeffs)  # fmt: skip
    np.testing.assert_allclose(dec.mass, want, rtol=2e-7)
    np.testing.assert_array_equal(dec.ion, search_reference(dec.mass, lo, hi))
    np.testing.assert_allclose(dec.det_x, x, atol=1e-4)
    np.testing.assert_allclose(dec.tof, tof, rtol=1e-6)
