"""The per-chunk pipeline: one fused pass from raw DLD records to (hits, mass, range index).

Decode, time-sum check, m/n, voltage and bowl correction and ranging run in one loop over the
records, so each record is read once and nothing but the outputs is written (memory traffic is
what limits this stage).
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


@njit(cache=True, nogil=True, error_model="numpy")
def fused_kernel(
    pulse, t_x1, t_x2, t_y1, t_y2, t_mcp, v_dc, v_pulse,
    bin_ns, v_mm_per_ns, sum_bins, tol_bins, t0_ns, flight_path_mm, beta, vc, bc,
    lo, hi, table, inv_width,
    keep, tof_ns, det_x_mm, det_y_mm, mass_da, ion,
):  # fmt: skip
    """Decode + m/n (the one kernel, :func:`~apt_daq.pipeline.tof.mass_da`, inlined by
    numba) + corrections + ranging; returns (n_kept, n_incomplete, n_bad_sum).

    The range index is that of the stored float32 mass (so /derived is self-consistent).

    Speed (``apt-daq bench``: ~118 M hits/s of CPU time on one core for 2 M hits, ~25 % of
    a memcpy of the 40-byte records): every record's outputs are written at the next free
    slot and the slot advances only for a clean record (compaction without a branch); the
    status test of :func:`~apt_daq.pipeline.decode.record_status` is spelled out branch-free
    (the numpy twin in the tests checks it); the correction coefficients come as tuples;
    numpy's error model (a division by zero gives inf, as in the numpy twin, instead of a
    test and branch per division); ranging is a second tight loop (:func:`range_pass`).
    Measured against the earlier branchy form in one process, interleaved: the same speed
    within 2 % (LLVM had if-converted it); a two-phase form whose first loop vectorises
    (AVX-512 gathers of the strided record fields, then compaction) was slower (89 M hits/s);
    ranging inside the decode loop, plain or blocked, 20-30 % slower. Stores of six output
    columns per kept hit are the floor: the same loop with no arithmetic runs ~250 M/s.
    """
    n = t_x1.shape[0]
    k = 0
    incomplete = 0
    bad = 0
    half = 0.5 * bin_ns * v_mm_per_ns
    for i in range(n):
        a = t_x1[i]
        b = t_x2[i]
        c = t_y1[i]
        d = t_y2[i]
        m = t_mcp[i]
        inc = (a | b | c | d | m) < 0  # a missing signal is -1
        off = (abs(a + b - 2 * m - sum_bins) > tol_bins) | (abs(c + d - 2 * m - sum_bins) > tol_bins)
        incomplete += inc
        bad += off & (not inc)
        tof = m * bin_ns
        x = (a - b) * half
        y = (c - d) * half
        v = np.float64(v_dc[i]) + beta * v_pulse[i]
        mm = mn_kernel(tof, x, y, v, t0_ns, flight_path_mm) / correction_factor(v, x, y, vc, bc)
        keep[k] = i
        tof_ns[k] = tof
        det_x_mm[k] = x
        det_y_mm[k] = y
        mass_da[k] = mm
        k += not (inc | off)
    range_pass(mass_da, k, lo, hi, table, inv_width, ion)
    return k, incomplete, bad


@njit(cache=True, nogil=True)
def range_pass(mass_da, k, lo, hi, table, inv_width, ion):
    """Range the first k stored (float32) masses: a tight table-lookup loop, then the rare
    edge cells (and negative or NaN masses) by binary search, so every answer is the
    search's. (Kept out of the decode loop: a lookup inside the big loop, even blocked,
    measured 20-30 % slower in LLVM's code for it.)"""
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
    pulse, t_x1, t_x2, t_y1, t_y2, t_mcp, v_dc, v_pulse,
    bin_ns, v_mm_per_ns, sum_bins, tol_bins, t0_ns, flight_path_mm, beta, vc, bc,
    lo, hi, table, inv_width, n_parts,
    keep, tof_ns, det_x_mm, det_y_mm, mass_da, ion, counts,
):  # fmt: skip
    """The fused kernel on ``n_parts`` slices in parallel; each slice compacts its own output
    at its own offset, ``counts[p] = (kept, incomplete, bad)``; the caller closes the gaps."""
    n = pulse.shape[0]
    step = (n + n_parts - 1) // n_parts
    for p in prange(n_parts):
        a0 = p * step
        b0 = min(n, a0 + step)
        if a0 >= b0:
            continue
        k, inc, bad = fused_kernel(
            pulse[a0:b0], t_x1[a0:b0], t_x2[a0:b0], t_y1[a0:b0], t_y2[a0:b0], t_mcp[a0:b0],
            v_dc[a0:b0], v_pulse[a0:b0], bin_ns, v_mm_per_ns, sum_bins, tol_bins, t0_ns,
            flight_path_mm, beta, vc, bc, lo, hi, table, inv_width,
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
    cols = (raw["pulse"], raw["t_x1"], raw["t_x2"], raw["t_y1"], raw["t_y2"], raw["t_mcp"],
            raw["v_dc"], raw["v_pulse"])  # fmt: skip
    if threads > 1 and n >= 100_000:
        counts = np.zeros((threads, 3), dtype=np.int64)
        fused_parallel(*cols, *_args(instrument, calibration, lookup), threads,  # type: ignore[call-arg]  # numba Dispatcher: typed as taking no arguments
                       keep, tof, x, y, mass, ion, counts)  # fmt: skip
        step = (n + threads - 1) // threads
        parts = [np.arange(p * step, p * step + counts[p, 0]) for p in range(threads)]
        idx = np.concatenate(parts)
        keep, tof, x, y, mass, ion = (a[idx] for a in (keep, tof, x, y, mass, ion))
        k, inc, bad = len(idx), int(counts[:, 1].sum()), int(counts[:, 2].sum())
    else:
        k, inc, bad = fused_kernel(*cols, *_args(instrument, calibration, lookup),  # type: ignore[call-arg]  # numba Dispatcher: typed as taking no arguments
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
