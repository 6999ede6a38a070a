"""The per-chunk pipeline: one fused pass from raw DLD records to (hits, mass, range index).

Decode, time-sum check, m/n, voltage and bowl correction and ranging run in one pass over the
records, block by block through L1-resident scratch columns, so each record is read once and
nothing but the kept records' outputs is written (the float64 arithmetic, not memory traffic,
is what limits this stage: see :func:`fused_kernel`).
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
from apt_daq.pipeline.ranging import EDGE, RangeLookup, exact_range, fix_edges, table_cell
from apt_daq.pipeline.reconstruction import Reconstructor, _dz_const, _project
from apt_daq.pipeline.tof import mass_da as mn_kernel
from apt_daq.rangetable import RangeTable

if TYPE_CHECKING:
    from typing_extensions import Unpack


BLOCK = 1024
"""Records per block of :func:`fused_kernel`: its scratch columns (31 B a record, ~32 kB)
stay in L1/L2; 256 and 512 measured slower, 2048 no faster."""

_U1, _U2, _U3, _U4, _U5, _U6, _U7, _U8 = (np.uint64(i) for i in range(1, 9))
_ALL_KEPT = np.uint64(0x0101010101010101)  # eight kept flags (bytes of 1) read as one word


@njit(cache=True, nogil=True, error_model="numpy")
def decode_block(
    blk, i0, bin_ns, half, sum_bins, tol_bins, t0_ns, flight_path_mm, beta, vc, bc,
    inv_width, n_cells, ok, idx, tof_ns, det_x_mm, det_y_mm, mass_da, cell,
):  # fmt: skip
    """Decode + m/n (the one kernel, :func:`~apt_daq.pipeline.tof.mass_da`, inlined by numba)
    + corrections of the records ``blk`` (raw index ``i0`` on), every record into the scratch
    columns at its own index: kept flag, raw index, TOF, x, y, float32 m/n and the m/n's
    lookup-table cell (:func:`~apt_daq.pipeline.ranging.table_cell`, as -1 or ``EDGE`` off
    the table). Returns (n_incomplete, n_bad_sum).

    No branch, no compaction, no table load: LLVM vectorises both loops (4 records a step,
    the strided record fields gathered by inserts). The integer arithmetic of the time sum
    and positions runs in float64, exactly (every value an integer below 2^35), as AVX2 has
    no int64 -> float64 conversion; the results are those of the int64 arithmetic. The cell
    has a loop of its own: the first loop is bound by the latency of its chain (two
    dependent float64 divisions) over the few steps the out-of-order window holds, so a
    shorter chain with fewer instructions a step runs faster (measured 1.09x overall)."""
    incomplete = 0
    bad = 0
    for j in range(blk.shape[0]):
        r = blk[j]
        a = r.t_x1
        b = r.t_x2
        c = r.t_y1
        d = r.t_y2
        m = r.t_mcp
        inc = (a | b | c | d | m) < 0  # a missing signal is -1
        fa = np.float64(a)
        fb = np.float64(b)
        fc = np.float64(c)
        fd = np.float64(d)
        fm = np.float64(m)
        off = (abs(fa + fb - 2.0 * fm - sum_bins) > tol_bins) | (
            abs(fc + fd - 2.0 * fm - sum_bins) > tol_bins
        )
        incomplete += inc
        bad += off & (not inc)
        tof = fm * bin_ns
        x = (fa - fb) * half
        y = (fc - fd) * half
        v = np.float64(r.v_dc) + beta * r.v_pulse
        mf = np.float32(
            mn_kernel(tof, x, y, v, t0_ns, flight_path_mm) / correction_factor(v, x, y, vc, bc)
        )
        ok[j] = not (inc | off)
        idx[j] = i0 + j
        tof_ns[j] = tof
        det_x_mm[j] = x
        det_y_mm[j] = y
        mass_da[j] = mf
    for j in range(blk.shape[0]):
        # table_cell of the stored float32 m/n, select-only (so it vectorises)
        m64 = np.float64(mass_da[j])
        q = m64 * inv_width
        pos = m64 >= 0.0  # False for NaN too
        cell[j] = np.int32(q if pos & (q < n_cells) else (-1.0 if pos else -2.0))
    return incomplete, bad


@njit(cache=True, nogil=True)
def range_block(nb, cell, mass_da, table, lo, hi, ion):
    """Range index of the first ``nb`` scratch m/n from their cells: one table load each
    (cmov, no branch), then the ``EDGE`` answers by a branch-free binary search over ``lo``
    (the answer of :func:`~apt_daq.pipeline.ranging.exact_range`, also for NaN and with no
    ranges), in the same call: no pass over the whole output and no call per edge."""
    edges = 0
    for j in range(nb):
        c = cell[j]
        t = table[max(c, 0)]
        r = t if c >= 0 else np.int16(c)
        ion[j] = r
        edges += r == EDGE
    if edges == 0:
        return
    n = lo.shape[0]
    top = 1
    while top * 2 <= n:
        top *= 2
    for j in range(nb):
        if ion[j] != EDGE:
            continue
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
    compacted into the outputs; returns (n_kept, n_incomplete, n_bad_sum).

    The range index is that of the stored float32 mass (so /derived is self-consistent).

    By blocks of :data:`BLOCK` records: :func:`decode_block` (vectorised) fills L1 scratch
    columns, :func:`range_block` ranges them, and each run of kept records between two
    dropped ones is copied to the outputs eight at a time (eight loads, then eight stores:
    LLVM's SLP pass makes one vector load and store of each; the dropped records, found a
    word of eight flags at a time, are never written). An output may get up to 7 slots of
    garbage past a run (within its length), which the next run overwrites.

    Speed (the bench's kernel_and_copy_s, 2-core AMD EPYC, AVX2, one core): ~120 M hits/s
    at 20 M hits (the former one-pass scalar loop, every record written at the next free
    slot and ranging in a second pass over the output: ~85 M/s), results bit for bit the
    same. What limits it: :func:`decode_block`, ~4.5 ns of the ~8.5 ns a record, bound by
    the latency of its chain (strided field inserts, two dependent float64 divisions of ~13
    cycles each) over the few iterations the out-of-order window holds: dropping the m/n
    altogether gave ~3.5 ns, removing one division (fastmath reassociation) nothing.
    Ranging ~2 ns (the table load is scalar: LLVM cannot prove the table apart from the
    outputs, so it does not vectorise the lookup; ~3 % of the m/n fall in edge cells and
    take the search), compaction ~1 ns. Tried and slower or no better: u64 loads of the
    record, the time sum or the m/n / correction division in a loop of its own, ranging
    folded into the ion column's copy, plain copy loops (vectorised with runtime alias
    checks), an inlined copy helper (numba reference counting). (The one-pass loop's own
    notes, from an AVX-512 machine, found a gather-then-compact form slower there.)"""
    n = raw.shape[0]
    nu = np.uint64(n)
    half = 0.5 * bin_ns * v_mm_per_ns
    n_cells = np.float64(table.shape[0])
    ok = np.zeros(BLOCK + 16, np.uint8)
    ok64 = ok.view(np.uint64)
    s_k = np.zeros(BLOCK + 8, np.int64)
    s_t = np.zeros(BLOCK + 8, np.float32)
    s_x = np.zeros(BLOCK + 8, np.float32)
    s_y = np.zeros(BLOCK + 8, np.float32)
    s_m = np.zeros(BLOCK + 8, np.float32)
    s_c = np.zeros(BLOCK + 8, np.int32)
    s_i = np.zeros(BLOCK + 8, np.int16)
    k = np.uint64(0)
    incomplete = 0
    bad = 0
    for i0 in range(0, n, BLOCK):
        nb = min(BLOCK, n - i0)
        inc, off = decode_block(raw[i0:i0 + nb], i0, bin_ns, half, sum_bins, tol_bins, t0_ns,
                                flight_path_mm, beta, vc, bc, inv_width, n_cells, ok, s_k, s_t,
                                s_x, s_y, s_m, s_c)  # fmt: skip
        range_block(nb, s_c, s_m, table, lo, hi, s_i)
        incomplete += inc
        bad += off
        for j in range(nb, nb + 9):
            ok[j] = 0  # a dropped record past the block ends the last run
        nbu = np.uint64(nb)
        start = np.uint64(0)
        j = np.uint64(0)
        while start < nbu:
            while ok64[j >> np.uint64(3)] == _ALL_KEPT:
                j = ((j >> np.uint64(3)) + _U1) << np.uint64(3)
            while ok[j]:
                j += _U1
            ln = min(j, nbu) - start  # the run [start, j) of kept records
            t = np.uint64(0)
            while t < ln and k + t + _U8 <= nu:
                s = start + t
                d = k + t
                tof_ns[d], tof_ns[d + _U1], tof_ns[d + _U2], tof_ns[d + _U3], tof_ns[d + _U4], tof_ns[d + _U5], tof_ns[d + _U6], tof_ns[d + _U7] = s_t[s], s_t[s + _U1], s_t[s + _U2], s_t[s + _U3], s_t[s + _U4], s_t[s + _U5], s_t[s + _U6], s_t[s + _U7]  # fmt: skip
                det_x_mm[d], det_x_mm[d + _U1], det_x_mm[d + _U2], det_x_mm[d + _U3], det_x_mm[d + _U4], det_x_mm[d + _U5], det_x_mm[d + _U6], det_x_mm[d + _U7] = s_x[s], s_x[s + _U1], s_x[s + _U2], s_x[s + _U3], s_x[s + _U4], s_x[s + _U5], s_x[s + _U6], s_x[s + _U7]  # fmt: skip
                det_y_mm[d], det_y_mm[d + _U1], det_y_mm[d + _U2], det_y_mm[d + _U3], det_y_mm[d + _U4], det_y_mm[d + _U5], det_y_mm[d + _U6], det_y_mm[d + _U7] = s_y[s], s_y[s + _U1], s_y[s + _U2], s_y[s + _U3], s_y[s + _U4], s_y[s + _U5], s_y[s + _U6], s_y[s + _U7]  # fmt: skip
                mass_da[d], mass_da[d + _U1], mass_da[d + _U2], mass_da[d + _U3], mass_da[d + _U4], mass_da[d + _U5], mass_da[d + _U6], mass_da[d + _U7] = s_m[s], s_m[s + _U1], s_m[s + _U2], s_m[s + _U3], s_m[s + _U4], s_m[s + _U5], s_m[s + _U6], s_m[s + _U7]  # fmt: skip
                ion[d], ion[d + _U1], ion[d + _U2], ion[d + _U3], ion[d + _U4], ion[d + _U5], ion[d + _U6], ion[d + _U7] = s_i[s], s_i[s + _U1], s_i[s + _U2], s_i[s + _U3], s_i[s + _U4], s_i[s + _U5], s_i[s + _U6], s_i[s + _U7]  # fmt: skip
                keep[d], keep[d + _U1], keep[d + _U2], keep[d + _U3], keep[d + _U4], keep[d + _U5], keep[d + _U6], keep[d + _U7] = s_k[s], s_k[s + _U1], s_k[s + _U2], s_k[s + _U3], s_k[s + _U4], s_k[s + _U5], s_k[s + _U6], s_k[s + _U7]  # fmt: skip
                t += _U8
            while t < ln:  # the end of the outputs: one at a time
                s = start + t
                d = k + t
                tof_ns[d] = s_t[s]
                det_x_mm[d] = s_x[s]
                det_y_mm[d] = s_y[s]
                mass_da[d] = s_m[s]
                ion[d] = s_i[s]
                keep[d] = s_k[s]
                t += _U1
            k += ln
            j += _U1
            start = j
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
        float(instrument.t0_ns), float(instrument.flight_path_mm), 1.0, coeffs(cal.vc, 3),
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
                      coeffs(cal.vc, 3), coeffs(cal.bc, 6), lookup.lo, lookup.hi, lookup.table,
                      float(lookup.inv_width), recon_params(reconstructor), out)  # fmt: skip
    if reconstructor is not None:
        reconstructor.z_nm = z
        reconstructor.ions += len(hits)
    return out
