"""Delay-line detector decode: raw (x1, x2, y1, y2, MCP) TDC bins -> hit position and time.

The timing convention is the project's contract (see ``docs/analysis.md``): for a hit at detector
position (x, y) arriving ``t_hit`` after the trigger, each end of a delay line sees the signal
``D +- x / v`` later, so

    x = (t_x1 - t_x2) * bin * v / 2,   y likewise,   tof = t_mcp * bin,

and the *time sum* ``t_x1 + t_x2 - 2 t_mcp = 2 D / bin`` is the same for every clean hit. A record
with a missing signal (-1) is *incomplete*; one whose time sum is off by more than the tolerance
mixes signals of different hits (or a ringing pulse) and cannot be trusted: both are rejected
and counted. The multiplicity of a kept hit is the number of kept hits on the same pulse (raw
records of one pulse are adjacent, as the TDC reads them out pulse by pulse).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from apt_daq.config import InstrumentConfig


def time_sum_bins(instrument: InstrumentConfig) -> float:
    """Expected time sum of a clean hit, TDC bins: 2 D / bin."""
    return 2.0 * instrument.delay_line_offset_ns / instrument.tdc_bin_ns


def time_sum_tolerance_bins(instrument: InstrumentConfig) -> float:
    """Accepted deviation of the time sum, TDC bins.

    Rounding of four arrival times to whole bins moves the sum by at most 2 bins (plus 2 for the
    doubled MCP time); timing jitter, if it acts on each signal separately, adds
    sqrt(6) * jitter rms. We accept 4 bins plus 5 sigma of that jitter.
    """
    jitter_bins = instrument.timing_jitter_ns / instrument.tdc_bin_ns
    return 4.0 + 5.0 * math.sqrt(6.0) * jitter_bins


CLEAN, INCOMPLETE, BAD_TIME_SUM = 0, 1, 2


@njit(cache=True, nogil=True, inline="always")
def record_status(a, b, c, d, m, sum_bins, tol_bins):
    """CLEAN, INCOMPLETE (a signal missing: -1) or BAD_TIME_SUM (x or y time sum off by more
    than ``tol_bins`` from ``sum_bins``) for one record's x1, x2, y1, y2, MCP bins."""
    if a < 0 or b < 0 or c < 0 or d < 0 or m < 0:
        return INCOMPLETE
    if abs(a + b - 2 * m - sum_bins) > tol_bins or abs(c + d - 2 * m - sum_bins) > tol_bins:
        return BAD_TIME_SUM
    return CLEAN


@njit(cache=True, nogil=True)
def decode_kernel(
    pulse, t_x1, t_x2, t_y1, t_y2, t_mcp,
    bin_ns, v_mm_per_ns, sum_bins, tol_bins,
    keep, tof_ns, det_x_mm, det_y_mm, multiplicity,
):  # fmt: skip
    """Decode records into the output arrays; returns (n_kept, n_incomplete, n_bad_sum).

    ``keep`` receives the indices of kept records; the other outputs are written at the
    positions 0..n_kept-1. Multiplicity counts kept hits on the same pulse (capped at 255).
    """
    n = pulse.shape[0]
    k = 0
    incomplete = 0
    bad = 0
    half = 0.5 * bin_ns * v_mm_per_ns
    run_start = 0
    for i in range(n):
        a = t_x1[i]
        b = t_x2[i]
        c = t_y1[i]
        d = t_y2[i]
        m = t_mcp[i]
        status = record_status(a, b, c, d, m, sum_bins, tol_bins)
        if status != CLEAN:
            incomplete += status == INCOMPLETE
            bad += status == BAD_TIME_SUM
            continue
        if k > 0 and pulse[i] != pulse[keep[k - 1]]:
            cnt = min(k - run_start, 255)
            for j in range(run_start, k):
                multiplicity[j] = cnt
            run_start = k
        keep[k] = i
        tof_ns[k] = m * bin_ns
        det_x_mm[k] = (a - b) * half
        det_y_mm[k] = (c - d) * half
        k += 1
    cnt = min(k - run_start, 255)
    for j in range(run_start, k):
        multiplicity[j] = cnt
    return k, incomplete, bad


def decode_columns(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The output columns of a decode pass over ``n`` records, filled by the kernels: kept
    record indices (int64), TOF (ns), x and y (mm) (float32)."""
    return (np.empty(n, dtype=np.int64), np.empty(n, dtype=np.float32),
            np.empty(n, dtype=np.float32), np.empty(n, dtype=np.float32))


def decode(raw: np.ndarray, instrument: InstrumentConfig) -> tuple[np.ndarray, np.ndarray, dict]:
    """Decode a RAW_DTYPE chunk: (hits HIT_DTYPE, keep indices into raw, counters)."""
    from apt_daq.hits import HIT_DTYPE

    n = len(raw)
    keep, tof, x, y = decode_columns(n)
    mult = np.empty(n, dtype=np.uint8)
    k, inc, bad = decode_kernel(
        raw["pulse"], raw["t_x1"], raw["t_x2"], raw["t_y1"], raw["t_y2"], raw["t_mcp"],
        instrument.tdc_bin_ns, instrument.signal_velocity_mm_per_ns,
        time_sum_bins(instrument), time_sum_tolerance_bins(instrument),
        keep, tof, x, y, mult,
    )  # fmt: skip
    keep = keep[:k]
    hits = np.empty(k, dtype=HIT_DTYPE)
    hits["pulse"] = raw["pulse"][keep]
    hits["tof"] = tof[:k]
    hits["det_x"] = x[:k]
    hits["det_y"] = y[:k]
    for f in ("v_dc", "v_pulse", "laser_pj"):
        hits[f] = raw[f][keep]
    hits["multiplicity"] = mult[:k]
    counters = {
        "records": n,
        "rejected": inc + bad,
        "incomplete": inc,
        "bad_time_sum": bad,
        "multi_hits": int(np.count_nonzero(mult[:k] > 1)),
    }
    return hits, keep, counters
