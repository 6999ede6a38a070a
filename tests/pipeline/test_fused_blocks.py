"""The blocked fused kernel (vectorised decode into scratch, table ranging, run-copy
compaction) bit for bit against the same arithmetic in numpy, at the block and copy
boundaries: chunk sizes around BLOCK and below eight, no record dropped, all dropped, drops
at the ends, negative and NaN m/n (the search's answer), no ranges at all."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from apt_daq.bench.pipeline import IONS, synthetic_raw
from apt_daq.config import InstrumentConfig
from apt_daq.pipeline.corrections import Calibration, coeffs, correction_factor
from apt_daq.pipeline.decode import time_sum_bins, time_sum_tolerance_bins
from apt_daq.pipeline.process import BLOCK, _args, fused_kernel, fused_parallel, sum_window
from apt_daq.pipeline.ranging import RangeLookup, lookup_table, ranges_for_ions
from apt_daq.pipeline.tof import mass_da

from .test_kernels import numpy_decode
from .test_range_lookup import search_reference

INST = InstrumentConfig()
CAL = Calibration((0.998, 0.0005, -1e-5), (1.0, 1e-4, -1e-4, 2e-4, 1e-5, 2e-4))
LOOKUPS = {
    "ions": RangeLookup.build(ranges_for_ions(IONS)),
    "none": RangeLookup.build(None),
    # a lower edge below 0 Da and a 1e-4 Da range: negative m/n land in a range
    "odd": RangeLookup(np.array([-3.0, 10.0]), np.array([5.0, 10.0001]),
                       *lookup_table(np.array([-3.0, 10.0]), np.array([5.0, 10.0001]))),
}  # fmt: skip


def twin(raw: np.ndarray, lookup: RangeLookup):
    """keep, tof, x, y (float32), m/n (float32), range index and counters, in numpy: the
    same float64 operations in the same order as the kernel, so the same bits."""
    keep, tof, x, y, _, inc, bad = numpy_decode(raw, INST)
    v = raw["v_dc"][keep].astype(np.float64) + 1.0 * raw["v_pulse"][keep]
    m = mass_da.py_func(tof, x, y, v, INST.t0_ns, INST.flight_path_mm)
    m = m / correction_factor.py_func(v, x, y, coeffs(CAL.vc, 5), coeffs(CAL.bc, 6))
    m32 = m.astype(np.float32)
    cols = (tof.astype(np.float32), x.astype(np.float32), y.astype(np.float32), m32)
    if len(lookup.lo):
        ion = search_reference(m32, lookup.lo, lookup.hi)
    else:
        ion = np.full(len(m32), -1, np.int16)
    return keep, cols, ion, (len(keep), inc, bad)


def raw_records(n: int, drops: str, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    raw = synthetic_raw(max(n, 1), INST, seed)[:n].copy()
    fill = round(time_sum_bins(INST)) + 2 * raw["t_mcp"] - raw["t_x1"]  # a clean time sum
    raw["t_x2"] = np.where(raw["t_x2"] < 0, fill, raw["t_x2"])  # none missing
    raw["v_pulse"] = rng.uniform(0, 300, n)
    drop = {
        "none": np.zeros(n, bool),
        "all": np.ones(n, bool),
        "some": rng.random(n) < 0.02,
        "half": rng.random(n) < 0.5,
        "ends": np.isin(np.arange(n), [0, n - 1]),
        "tail": np.arange(n) >= n - 3,
    }[drops]
    for i in np.flatnonzero(drop):
        f = rng.choice(["t_x1", "t_x2", "t_y1", "t_y2", "t_mcp"])
        raw[f][i] = -1 if rng.random() < 0.5 else raw[f][i] + rng.integers(100, 3000)
    if n and drops in ("some", "half"):
        raw["v_dc"][rng.random(n) < 0.05] = -4000.0  # negative m/n
        raw["v_dc"][rng.random(n) < 0.02] = np.nan
    return raw


def outputs(n: int):
    return (np.full(n, -7, np.int64), *(np.full(n, np.nan, np.float32) for _ in range(4)),
            np.full(n, -7, np.int16))  # fmt: skip


@pytest.mark.parametrize("lookup", sorted(LOOKUPS))
@pytest.mark.parametrize("drops", ["none", "all", "some", "half", "ends", "tail"])
@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 15, BLOCK - 1, BLOCK, BLOCK + 1, 2 * BLOCK + 7, 5003])
def test_fused_kernel_bit_for_bit(n: int, drops: str, lookup: str) -> None:
    lk = LOOKUPS[lookup]
    raw = raw_records(n, drops, seed=n + len(drops))
    keep, cols, ion, counts = twin(raw, lk)
    out = outputs(n)
    got = fused_kernel(raw, *_args(INST, CAL, lk), *out)
    k = got[0]
    assert got == counts
    np.testing.assert_array_equal(out[0][:k], keep)
    for a, b in zip(out[1:5], cols, strict=True):
        np.testing.assert_array_equal(a[:k].view(np.uint32), b.view(np.uint32))
    np.testing.assert_array_equal(out[5][:k], ion)


def test_fused_parallel_equals_one_core() -> None:
    n = 3 * BLOCK + 5
    raw = raw_records(n, "some", seed=9)
    lk = LOOKUPS["ions"]
    one = outputs(n)
    k, inc, bad = fused_kernel(raw, *_args(INST, CAL, lk), *one)
    two = outputs(n)
    counts = np.zeros((2, 3), np.int64)
    fused_parallel(raw, *_args(INST, CAL, lk), 2, *two, counts)
    step = (n + 1) // 2
    idx = np.concatenate([np.arange(p * step, p * step + counts[p, 0]) for p in range(2)])
    assert (counts[:, 0].sum(), counts[:, 1].sum(), counts[:, 2].sum()) == (k, inc, bad)
    for a, b in zip(one, two, strict=True):
        np.testing.assert_array_equal(a[:k], b[idx])


def test_time_sums_at_the_window_edges_and_near_int32_limits() -> None:
    """Records whose x or y time sum a + b - 2 m steps across the accepted window one bin at a
    time, with fields small and near 2^31: kept exactly where the numpy twin's float test
    keeps them (the kernel tests an integer window, :func:`sum_window`)."""
    s = time_sum_bins(INST)
    tol = time_sum_tolerance_bins(INST)
    offsets = np.arange(-int(tol) - 3, int(tol) + 4)
    rows = []
    for base in (1_000, 2**31 - 4 * 10**6):
        for axis in (0, 1):
            for d in offsets:
                m = base
                good = round(s) + 2 * m  # a + b of a clean sum
                a = good // 2 + 17
                rec = [a, good - a, a - 5, good - a + 5, m]
                rec[2 * axis + 1] += int(d)
                rows.append(rec)
    raw = synthetic_raw(len(rows), INST, 3)[: len(rows)].copy()
    arr = np.array(rows, np.int64)
    assert arr.max() < 2**31
    for j, f in enumerate(("t_x1", "t_x2", "t_y1", "t_y2", "t_mcp")):
        raw[f] = arr[:, j]
    keep, cols, ion, counts = twin(raw, LOOKUPS["ions"])
    out = outputs(len(raw))
    got = fused_kernel(raw, *_args(INST, CAL, LOOKUPS["ions"]), *out)
    assert got == counts
    k = got[0]
    np.testing.assert_array_equal(out[0][:k], keep)
    for a, b in zip(out[1:5], cols, strict=True):
        np.testing.assert_array_equal(a[:k].view(np.uint32), b.view(np.uint32))
    np.testing.assert_array_equal(out[5][:k], ion)
    assert 0 < len(keep) < len(raw)  # both sides of the window are in the set


@settings(max_examples=300, deadline=None)
@given(st.floats(allow_nan=True, allow_infinity=True, width=64),
       st.floats(allow_nan=True, allow_infinity=True, width=64),
       st.integers(-(2**34), 2**34))
def test_sum_window_is_the_float_test(sum_bins: float, tol_bins: float, s: int) -> None:
    """The integer window (lo, hi) holds a time sum exactly when the float64 test
    |s - sum_bins| <= tol_bins passes (NaN passes every sum, as the float test's
    'not > tol' does), for any sum_bins and tolerance, sums near the window's edges too, over
    |s| <= 2^34 (a sum of int32 fields stays within 2^33)."""
    lo, hi = sum_window(sum_bins, tol_bins)

    def float_ok(x: int) -> bool:
        return not abs(np.float64(x) - sum_bins) > tol_bins

    probes = [s] + [e + d for e in (lo, hi) for d in (-1, 0, 1)]
    for x in (p for p in probes if abs(p) <= 2**34):  # every sum of int32 fields is inside
        assert (lo <= x <= hi) == float_ok(x), (sum_bins, tol_bins, x, lo, hi)
