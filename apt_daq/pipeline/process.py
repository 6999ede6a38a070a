"""The per-chunk pipeline: one fused pass from raw DLD records to (hits, mass, range index).

Decode, time-sum check, m/n, voltage and bowl correction and ranging run in one pass over the
records, block by block: a scalar pass reads each record once (the next block prefetched),
drops the rejected ones and leaves the kept ones' fields in contiguous L1 scratch columns, a
vectorised pass computes their outputs straight into the output columns, and the table
ranging follows (see :func:`fused_kernel`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, TypedDict

import numpy as np
from numba import njit, prange

from apt_daq.config import InstrumentConfig
from apt_daq.hits import DERIVED_DTYPE, HIT_DTYPE, RAW_DTYPE, check
from apt_daq.pipeline.corrections import Calibration, coeffs, correction_factor
from apt_daq.pipeline.decode import decode_columns, time_sum_bins, time_sum_tolerance_bins
from apt_daq.pipeline.prefetch import prefetch
from apt_daq.pipeline.ranging import EDGE, RangeLookup, exact_range, fix_edges, table_cell
from apt_daq.pipeline.reconstruction import Reconstructor, _dz_const, _project
from apt_daq.pipeline.tof import mass_da as mn_kernel
from apt_daq.rangetable import RangeTable

if TYPE_CHECKING:
    from typing_extensions import Unpack


BLOCK = 1024
"""Records per block of :func:`fused_kernel` (scratch ~28 kB); 256, 512 slower, 2048 same."""

_WORDS = np.uint64(RAW_DTYPE.itemsize // 4)  # 32-bit words a raw record
_OFFSETS = {name: f[1] for name, f in (RAW_DTYPE.fields or {}).items()}
_X1, _X2, _Y1, _Y2, _MCP, _VDC, _VP = (np.uint64(_OFFSETS[f] // 4) for f in (
    "t_x1", "t_x2", "t_y1", "t_y2", "t_mcp", "v_dc", "v_pulse"))  # their words in a record
_B1, _B2, _B3, _B4 = (np.uint64(f * BLOCK) for f in range(1, 5))  # scratch column starts
_SUM_LIM = np.int64(1) << 34  # beyond any time sum of int32 fields (|a + b - 2m| <= 2^33)


@njit(cache=True, nogil=True)
def _sum_ok(s, sum_bins, tol_bins):
    """The time-sum test of an integer sum s = a + b - 2 m, in float64 (exact below 2^53)."""
    return not abs(np.float64(s) - sum_bins) > tol_bins


@njit(cache=True, nogil=True)
def sum_window(sum_bins, tol_bins):
    """(lo, hi) such that, for every integer time sum |s| <= 2^34, :func:`_sum_ok` holds
    exactly when lo <= s <= hi: float64 rounding is monotone, so the test holds on an
    interval around round(sum_bins) (none: lo = hi = 2^40, beyond every sum; a NaN
    sum_bins or tol_bins passes every sum, as the float test does)."""
    c = np.int64(0)
    if np.isfinite(sum_bins):
        c = np.int64(min(max(np.round(sum_bins), -_SUM_LIM), _SUM_LIM))
    if not _sum_ok(c, sum_bins, tol_bins):
        return np.int64(1) << 40, np.int64(1) << 40
    ends = np.empty(2, np.int64)
    for side in range(2):
        d = 2 * side - 1
        inside, outside = c, d * _SUM_LIM  # _sum_ok(inside); outside: bisected to not
        if _sum_ok(outside, sum_bins, tol_bins):
            inside = outside
        while abs(outside - inside) > 1:
            mid = (inside + outside) // 2
            if _sum_ok(mid, sum_bins, tol_bins):
                inside = mid
            else:
                outside = mid
        ends[side] = inside
    return ends[0], ends[1]


@njit(cache=True, nogil=True)
def split_block(w, i0, nb, lo, width, keep, sc):
    """Records ``i0 .. i0 + nb`` of the raw words ``w`` (int32 view), scalar (vectorised,
    the strided fields are AVX-512 gathers, slower): a kept record's x1 - x2, y1 - y2, MCP,
    V words to the next row of the scratch columns ``sc``, its index to ``keep``; dropped (row
    reused): a signal missing (-1) or a time sum a + b - 2 m - lo outside [0, width]
    (:func:`sum_window`). Prefetches ``BLOCK`` ahead. Returns (kept, incomplete)."""
    incomplete = 0
    kb = 0
    for j in range(np.uint64(nb)):
        i = np.uint64(i0) + j
        o = i * _WORDS
        prefetch(w, o + _WORDS * np.uint64(BLOCK))
        a = np.int64(w[o + _X1])
        b = np.int64(w[o + _X2])
        c = np.int64(w[o + _Y1])
        d = np.int64(w[o + _Y2])
        m = np.int64(w[o + _MCP])
        neg = a | b | c | d | m  # a missing signal is -1
        t = 2 * m + lo
        s1 = a + b - t  # the time sums' offsets in their window [0, width]
        s2 = c + d - t
        drop = (neg | s1 | (width - s1) | s2 | (width - s2)) >> 63  # -1 dropped, else 0
        incomplete -= neg >> 63
        u = np.uint64(kb)
        sc[u] = a - b
        sc[_B1 + u] = c - d
        sc[_B2 + u] = m
        sc[_B3 + u] = w[o + _VDC]  # v_dc, v_pulse: float32 bits
        sc[_B4 + u] = w[o + _VP]
        keep[u] = i
        kb += 1 + drop
    return kb, incomplete


@njit(cache=True, nogil=True, error_model="numpy")
def mn_block(kb, s_dx, s_dy, s_m, s_v, s_p, bin_ns, half, t0_ns, flight_path_mm, beta, vc, bc,
             inv_width, n_cells, tof_ns, det_x_mm, det_y_mm, mass_da, cell):  # fmt: skip
    """Vectorised, the first ``kb`` scratch rows: TOF, x, y, float32 m/n (the one kernel,
    :func:`~apt_daq.pipeline.tof.mass_da`, over the corrections) to the outputs, the m/n's
    table cell (:func:`~apt_daq.pipeline.ranging.table_cell`; -1 or ``EDGE`` off it) to
    ``cell``. Float64 as before, so the same bits (x1 - x2 of kept records is exact)."""
    for j in range(kb):
        tof = np.float64(s_m[j]) * bin_ns
        x = np.float64(s_dx[j]) * half
        y = np.float64(s_dy[j]) * half
        v = np.float64(s_v[j]) + beta * s_p[j]
        mass_da[j] = np.float32(
            mn_kernel(tof, x, y, v, t0_ns, flight_path_mm) / correction_factor(v, x, y, vc, bc)
        )
        tof_ns[j] = tof
        det_x_mm[j] = x
        det_y_mm[j] = y
    for j in range(kb):
        # table_cell of the stored float32 m/n, select-only (so it vectorises)
        m64 = np.float64(mass_da[j])
        q = m64 * inv_width
        pos = m64 >= 0.0  # False for NaN too
        cell[j] = np.int32(q if pos & (q < n_cells) else (-1.0 if pos else -2.0))


@njit(cache=True, nogil=True)
def range_block(nb, cell, mass_da, table, lo, hi, ion, at):
    """Range index of the first ``nb`` m/n from their cells: a table load each (cmov), the
    ``EDGE`` answers listed in ``at`` and searched (branch-free, over ``lo``: the answer of
    :func:`~apt_daq.pipeline.ranging.exact_range`, also for NaN and with no ranges)."""
    edges = 0
    for j in range(nb):
        c = cell[j]
        t = table[max(c, 0)]
        r = t if c >= 0 else np.int16(c)
        ion[j] = r
        at[edges] = j
        edges += r == EDGE
    n = lo.shape[0]
    top = 1
    while top * 2 <= n:
        top *= 2
    for e in range(edges):
        j = at[e]
        m = np.float64(mass_da[j])
        below = 0  # the number of lower edges <= m (np.searchsorted side="right")
        step = top if n else 0
        while step:
            p = below + step
            below += step * ((p <= n) & (lo[min(p, n) - 1] <= m))
            step >>= 1
        i = below - 1
        ion[j] = i if (i >= 0 and m < hi[max(i, 0)]) else -1


@njit(cache=True, nogil=True, error_model="numpy")
def fused_kernel(
    raw, bin_ns, v_mm_per_ns, sum_bins, tol_bins, t0_ns, flight_path_mm, beta, vc, bc,
    lo, hi, table, inv_width,
    keep, tof_ns, det_x_mm, det_y_mm, mass_da, ion,
):  # fmt: skip
    """Decode + m/n + corrections + ranging of the RAW_DTYPE records ``raw``, the kept ones
    compacted into the outputs; returns (n_kept, n_incomplete, n_bad_sum). The range index
    is that of the stored float32 mass (so /derived is self-consistent).

    By blocks of :data:`BLOCK` records: :func:`split_block` (scalar; reads each record once,
    prefetches the next block, drops the rejected, leaves the kept ones' fields in scratch
    columns), :func:`mn_block` (vectorised, straight into the outputs at the kept count),
    :func:`range_block`. ``keep`` may get a slot of garbage past the kept records.

    Speed (bench kernel_and_copy_s, 20 M hits, one core of a shared 2-core AMD EPYC Zen 4,
    AVX-512): ~150 M hits/s, 0.21-0.24 of np.copyto's bandwidth at 20 B/hit; the former
    kernel (vectorised decode by AVX-512 gathers of the strided fields, then a compaction
    copy) ~75 M hits/s, 0.10-0.12, same runs, same bits. In L1 ~6 ns a record: scalar pass
    ~3.2, m/n ~1.4 (two float64 divisions), ranging ~1.2. From memory the gathers stalled
    (13.5 ns against 6.8 in L1); the prefetch alone gave 1.2x. Tried and slower: gathers
    (u64 or int32 fields), one division N / (L^2 C) with an exact fallback near float32
    ties, the cell computed in the ranging loop, u64 scratch words (stride-2 reads gather)."""
    n = raw.shape[0]
    w = raw.view(np.int32)
    half = 0.5 * bin_ns * v_mm_per_ns
    n_cells = np.float64(table.shape[0])
    s_lo, s_hi = sum_window(sum_bins, tol_bins)
    sc = np.zeros(5 * BLOCK, np.int32)  # kept rows: x1 - x2, y1 - y2, MCP, V_dc, V_pulse
    s_v = sc[3 * BLOCK:4 * BLOCK].view(np.float32)
    s_p = sc[4 * BLOCK:].view(np.float32)
    s_c = np.zeros(BLOCK, np.int32)
    s_e = np.zeros(BLOCK, np.int32)
    k = 0
    incomplete = 0
    bad = 0
    for i0 in range(0, n, BLOCK):
        nb = min(BLOCK, n - i0)
        kb, inc = split_block(w, i0, nb, s_lo, s_hi - s_lo, keep[k:], sc)
        incomplete += inc
        bad += nb - kb - inc
        e = k + kb
        mn_block(kb, sc[:BLOCK], sc[BLOCK:2 * BLOCK], sc[2 * BLOCK:3 * BLOCK], s_v, s_p, bin_ns,
                 half, t0_ns, flight_path_mm, beta, vc, bc, inv_width, n_cells, tof_ns[k:e],
                 det_x_mm[k:e], det_y_mm[k:e], mass_da[k:e], s_c)  # fmt: skip
        range_block(kb, s_c, mass_da[k:e], table, lo, hi, ion[k:e], s_e)
        k = e
    return np.int64(k), incomplete, bad


@njit(cache=True, nogil=True)
def range_pass(mass_da, k, lo, hi, table, inv_width, ion):
    """Range the first k stored (float32) masses: a tight table-lookup loop, then the rare
    edge cells (and negative or NaN masses) by binary search, so every answer is the
    search's (a stand-alone pass over stored masses; :func:`fused_kernel` ranges each block
    with :func:`range_block`)."""
    nb = table.shape[0]
    edges = 0
    for j in range(k):
        c = table_cell(np.float64(mass_da[j]), inv_width, nb)
        r = table[c] if c >= 0 else c
        ion[j] = r
        edges += r == EDGE
    if edges:
        fix_edges(mass_da, k, lo, hi, ion)


@njit(cache=True, parallel=True)
def fused_parallel(
    raw, bin_ns, v_mm_per_ns, sum_bins, tol_bins, t0_ns, flight_path_mm, beta, vc, bc,
    lo, hi, table, inv_width, n_parts,
    keep, tof_ns, det_x_mm, det_y_mm, mass_da, ion, counts,
):  # fmt: skip
    """The fused kernel on ``n_parts`` slices in parallel; each slice compacts its own output
    at its own offset, ``counts[p] = (kept, incomplete, bad)``; the caller closes the gaps."""
    n = raw.shape[0]
    step = (n + n_parts - 1) // n_parts
    for p in prange(n_parts):
        a0 = p * step
        b0 = min(n, a0 + step)
        if a0 >= b0:
            continue
        k, inc, bad = fused_kernel(
            raw[a0:b0], bin_ns, v_mm_per_ns, sum_bins, tol_bins, t0_ns, flight_path_mm, beta,
            vc, bc, lo, hi, table, inv_width,
            keep[a0:b0], tof_ns[a0:b0], det_x_mm[a0:b0], det_y_mm[a0:b0], mass_da[a0:b0],
            ion[a0:b0],
        )  # fmt: skip
        for j in range(k):
            keep[a0 + j] += a0
        counts[p, 0] = k
        counts[p, 1] = inc
        counts[p, 2] = bad


def _args(instrument: InstrumentConfig, calibration: Calibration | None, lookup: RangeLookup):
    cal = calibration or Calibration()
    return (
        float(instrument.tdc_bin_ns), float(instrument.signal_velocity_mm_per_ns),
        float(time_sum_bins(instrument)), float(time_sum_tolerance_bins(instrument)),
        float(instrument.t0_ns), float(instrument.flight_path_mm), 1.0, coeffs(cal.vc, 5),
        coeffs(cal.bc, 6),
        lookup.lo, lookup.hi, lookup.table, float(lookup.inv_width),
    )  # fmt: skip


@dataclass
class Decoded:
    """The fused pass's result for one chunk: the kept records and their columns.

    ``keep``: indices into ``raw`` of the records kept (so truth aligns as ``truth[keep]``);
    ``tof``, ``det_x``, ``det_y``, ``mass``, ``ion`` aligned with ``keep``; ``counters`` as
    :func:`process_chunk` documents them (``multi_hits`` comes with :meth:`records`).
    """

    keep: np.ndarray
    tof: np.ndarray
    det_x: np.ndarray
    det_y: np.ndarray
    mass: np.ndarray
    ion: np.ndarray
    counters: dict[str, int]

    def __len__(self) -> int:
        return len(self.keep)

    def records(self, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The HIT_DTYPE and DERIVED_DTYPE rows (x, y, z NaN until reconstruction); adds
        ``multi_hits`` (kept hits on pulses with > 1 hit) to ``counters``."""
        k = len(self.keep)
        hits = np.empty(k, dtype=HIT_DTYPE)
        derived = np.empty(k, dtype=DERIVED_DTYPE)
        if k:
            self.counters["multi_hits"] = int(records_kernel(
                raw, self.keep, self.tof, self.det_x, self.det_y, self.mass, self.ion,
                hits, derived))
        else:
            self.counters["multi_hits"] = 0
        return hits, derived


@njit(cache=True, nogil=True)
def records_kernel(raw, keep, tof, det_x, det_y, mass, ion, hits, derived):
    """Fill the HIT and DERIVED rows of the kept records in one pass (the multiplicity is the
    number of kept hits on the pulse, capped at 255); returns the kept hits on pulses with
    more than one."""
    n = keep.shape[0]
    for i in range(n):
        r = raw[keep[i]]
        h = hits[i]
        h.pulse = r.pulse
        h.tof = tof[i]
        h.det_x = det_x[i]
        h.det_y = det_y[i]
        h.v_dc = r.v_dc
        h.v_pulse = r.v_pulse
        h.laser_pj = r.laser_pj
        d = derived[i]
        d.mass = mass[i]
        d.ion = ion[i]
        d.x = np.nan
        d.y = np.nan
        d.z = np.nan
    multi = 0
    s = 0
    for i in range(1, n + 1):
        if i == n or hits[i].pulse != hits[s].pulse:
            c = min(i - s, 255)
            if c > 1:
                multi += i - s
            for j in range(s, i):
                hits[j].multiplicity = c
            s = i
    return multi


def decode_chunk(
    raw: np.ndarray,
    instrument: InstrumentConfig,
    ranges: RangeTable | None,
    *,
    calibration: Calibration | None = None,
    lookup: RangeLookup | None = None,
    threads: int = 1,
) -> Decoded:
    """The fused pass over raw DLD records (decode, time sum, m/n, corrections, ranging),
    without building the output rows: what the run engine needs for its feedback."""
    check(raw, RAW_DTYPE, "process_chunk raw")
    lookup = lookup or RangeLookup.build(ranges)
    n = len(raw)
    keep, tof, x, y = decode_columns(n)
    mass = np.empty(n, dtype=np.float32)
    ion = np.empty(n, dtype=np.int16)
    if threads > 1 and n >= 100_000:
        counts = np.zeros((threads, 3), dtype=np.int64)
        fused_parallel(raw, *_args(instrument, calibration, lookup), threads,  # type: ignore[call-arg]  # numba Dispatcher: typed as taking no arguments
                       keep, tof, x, y, mass, ion, counts)  # fmt: skip
        step = (n + threads - 1) // threads
        parts = [np.arange(p * step, p * step + counts[p, 0]) for p in range(threads)]
        idx = np.concatenate(parts)
        keep, tof, x, y, mass, ion = (a[idx] for a in (keep, tof, x, y, mass, ion))
        k, inc, bad = len(idx), int(counts[:, 1].sum()), int(counts[:, 2].sum())
    else:
        k, inc, bad = fused_kernel(raw, *_args(instrument, calibration, lookup),  # type: ignore[call-arg]  # numba Dispatcher: typed as taking no arguments
                                   keep, tof, x, y, mass, ion)  # fmt: skip
    counters = {"records": int(n), "rejected": int(inc + bad), "incomplete": int(inc),
                "bad_time_sum": int(bad)}
    return Decoded(keep[:k], tof[:k], x[:k], y[:k], mass[:k], ion[:k], counters)


class DecodeOptions(TypedDict, total=False):
    """The keyword options of :func:`decode_chunk` and :func:`process_chunk`."""

    calibration: Calibration | None
    lookup: RangeLookup | None
    threads: int


def process_chunk(
    raw: np.ndarray, instrument: InstrumentConfig, ranges: RangeTable | None,
    **options: Unpack[DecodeOptions],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, int]]:
    """Raw DLD records -> (hits, derived, keep, counters): :func:`decode_chunk` then
    :meth:`Decoded.records` (the run engine calls the two apart, to overlap the second).

    ``hits`` HIT_DTYPE and ``derived`` DERIVED_DTYPE (mass, ion = range index or -1; x, y, z
    NaN until reconstruction) are aligned; ``keep`` are the indices into ``raw`` of the records
    kept (so truth aligns as ``truth[keep]``); counters: records, rejected (incomplete +
    bad_time_sum), incomplete, bad_time_sum, multi_hits (kept hits on pulses with > 1 hit).
    ``calibration`` applies fitted voltage/bowl corrections (identity by default);
    ``threads`` > 1 splits the chunk over numba threads.
    """
    dec = decode_chunk(raw, instrument, ranges, **options)
    hits, derived = dec.records(raw)
    return hits, derived, dec.keep, dec.counters


@njit(cache=True, nogil=True, error_model="numpy")
def derive_kernel(hits, t0_ns, flight_path_mm, beta, vc, bc, lo, hi, table, inv_width, rec, out):
    """The ion stream's pass over stored hits: for each HIT_DTYPE record, the calibrated m/n
    (the one m/n kernel over TOF, detector position and V_dc + beta V_pulse, over the voltage
    and bowl corrections), stored float32, its range index (table lookup of that float32
    value, exact search at edges) and x, y, z, written into DERIVED_DTYPE ``out`` in one pass
    (the records read once, each output row written once). Returns the cumulative depth.

    ``rec``: the streaming reconstruction's (:func:`recon_params`) [method (0 Bas, 1 Geiser,
    -1 none: x, y, z NaN), flight length mm, k_f, F_e, xi, atomic volume, detector area,
    efficiency, depth so far], as :func:`~apt_daq.pipeline.reconstruction.bas_kernel`
    computes them from V_dc + V_pulse."""
    nb = table.shape[0]
    edges = 0
    method = int(rec[0])
    lf, k_f, f_e, xi = rec[1], rec[2], rec[3], rec[4]
    z_cum = rec[8]
    dz_const = _dz_const(lf, k_f, f_e, xi, rec[5], rec[6], rec[7]) if method >= 0 else 0.0
    for i in range(hits.shape[0]):
        h = hits[i]
        x = np.float64(h.det_x)
        y = np.float64(h.det_y)
        v = np.float64(h.v_dc) + beta * h.v_pulse
        m = mn_kernel(np.float64(h.tof), x, y, v, t0_ns, flight_path_mm) / correction_factor(
            v, x, y, vc, bc)
        mf = np.float32(m)
        d = out[i]
        d.mass = mf
        c = table_cell(np.float64(mf), inv_width, nb)
        r = table[c] if c >= 0 else c
        d.ion = r
        edges += r == EDGE
        vr = np.float64(h.v_dc) + np.float64(h.v_pulse)
        if method < 0 or vr <= 0.0:
            d.x = np.nan
            d.y = np.nan
            d.z = np.nan
            continue
        px, py, cap = _project(x, y, vr, lf, k_f, f_e, xi, method)
        z_cum += dz_const / (vr * vr)
        d.x = px
        d.y = py
        d.z = z_cum + cap
    if edges:  # edge cells by the search, in a second loop (see fix_edges)
        for i in range(out.shape[0]):
            if out[i].ion == EDGE:
                out[i].ion = exact_range(np.float64(out[i].mass), lo, hi)
    return z_cum


def recon_params(rec: Reconstructor | None) -> np.ndarray:
    """:func:`derive_kernel`'s ``rec`` of a streaming reconstruction (None: no positions)."""
    if rec is None:
        return np.array([-1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0])
    return np.array([0.0 if rec.method == "bas" else 1.0, rec.flight_path_mm, rec.k_f,
                     rec.f_e, rec.xi, rec.omega_nm3, rec.area_mm2, rec.eta, rec.z_nm])


def derive(hits: np.ndarray, calibration: Calibration, t0_ns: float, flight_path_mm: float,
           lookup: RangeLookup, reconstructor: Reconstructor | None = None) -> np.ndarray:
    """DERIVED_DTYPE rows of a HIT_DTYPE chunk (:func:`derive_kernel`): calibrated m/n,
    range index (-1 unranged), x, y, z by ``reconstructor`` in the same pass (its depth
    carried on; one without per-step fields), else NaN."""
    check(hits, HIT_DTYPE, "derive hits")
    out = np.empty(len(hits), DERIVED_DTYPE)
    cal = calibration
    if reconstructor is not None and reconstructor.step_fields:
        raise ValueError("derive: a reconstruction with per-step fields runs apart (process)")
    z = derive_kernel(hits, float(t0_ns), float(flight_path_mm), float(cal.beta),
                      coeffs(cal.vc, 5), coeffs(cal.bc, 6), lookup.lo, lookup.hi, lookup.table,
                      float(lookup.inv_width), recon_params(reconstructor), out)  # fmt: skip
    if reconstructor is not None:
        reconstructor.z_nm = z
        reconstructor.ions += len(hits)
    return out
