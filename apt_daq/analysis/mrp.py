"""Mass resolving power m / dm at 50 % (FWHM) and 10 % (FW10%M) of the peak height, measured
on one isotope peak at a time, and the per-peak table of ``analyze --json`` (``peaks``).

A peak's window is ``[m0 - w, m0 + 2 w)`` (w = max(0.25 Da, 2 % of m0): the thermal tail is on
the high side), cut at the midpoints to the neighbouring isotope peaks of the same ion
(:func:`isotope_bounds`), so the isotopes of W (0.33 Da apart as W3+) or Si are separate peaks
and the resolving power is that of one isotope, never of the isotope group.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from apt_daq.isotopes import isotopologues, parse_ion
from apt_daq.pipeline.peaks import (
    flank_width_da,
    histogram_peak,
    peak_shape,
    peak_window_da,
    unranged_bins,
)
from apt_daq.rangetable import RangeTable

MIN_ISOTOPE_ABUNDANCE = 1e-3  # neighbours rarer than this do not cut a window
MRP_MIN_IONS = 200  # ions within 3 FWHM of a peak that its width needs


def _pattern(formula: dict[str, int], charge: int) -> list[tuple[float, float]]:
    return isotopologues(formula, charge, MIN_ISOTOPE_ABUNDANCE)


def isotope_bounds(name: str | None, m0: float,
                   formula: dict[str, int] | None = None, charge: int | None = None,
                   ) -> tuple[float, float]:  # fmt: skip
    """(lo, hi): the midpoints between the isotope peak at ``m0`` and its neighbouring isotope
    peaks (of abundance >= 1e-3) of the same ion; -inf / inf where it has none. An ion name
    that cannot be read gives (-inf, inf)."""
    if formula is None or charge is None:
        try:
            formula, charge = parse_ion(name or "")
        except (KeyError, ValueError):
            return -math.inf, math.inf
    ms = np.array([m for m, _ in _pattern(formula, charge)])
    below, above = ms[ms < m0 - 0.05], ms[ms > m0 + 0.05]  # isotopes are >= 1/z apart
    lo = 0.5 * (m0 + below.max()) if len(below) else -math.inf
    hi = 0.5 * (m0 + above.min()) if len(above) else math.inf
    return float(lo), float(hi)


def mrp_window(m0: float, name: str | None = None) -> tuple[float, float]:
    """The open interval of m/n that :func:`mrp` uses for a peak at ``m0`` of ion ``name``
    (what an analysis keeps of the stream per peak: every ion there, so the result is that of
    all the ions): ``[m0 - w, m0 + 2 w)`` cut at the neighbouring isotopes."""
    w = peak_window_da(m0)
    lo, hi = isotope_bounds(name, m0)
    return max(m0 - w, lo), min(m0 + 2 * w, hi)


def main_peaks(
    ranges: RangeTable, ion_counts: dict[str, float], top: int = 5
) -> list[tuple[str, float]]:
    """(ion name, m/n of its most abundant isotopologue) of the ``top`` most counted ions."""
    out = []
    for name in sorted(ion_counts, key=lambda n: -ion_counts[n])[:top]:
        if ion_counts[name] <= 0:
            continue
        formula = ranges.ion_composition(name)
        z = ranges.charge[ranges.names.index(name)]
        m, _ = max(isotopologues(formula, z), key=lambda p: p[1])
        out.append((name, m))
    return out


def mrp(mass: np.ndarray, peaks: list[tuple[str, float]], min_ions: int = MRP_MIN_IONS,
        weights: np.ndarray | None = None, background_per_da: float = 0.0) -> list[dict]:
    """Per peak: position, FWHM and FW10%M (Da) and m/dm at 50 % and 10 %, of that isotope
    peak alone (:func:`mrp_window`; :func:`~apt_daq.pipeline.peaks.peak_shape`). ``weights``:
    ions per ``mass`` value (e.g. the distinct values and counts of :class:`WindowCounts`);
    ``background_per_da``: a flat background taken off first."""
    out = []
    mass = np.asarray(mass, dtype=np.float64)
    w = None if weights is None else np.asarray(weights, dtype=np.float64)
    for name, m0 in peaks:
        shape = peak_shape(mass, m0, bounds=mrp_window(m0, name), weights=w,
                           background_per_da=background_per_da)
        if shape is None or not np.isfinite(shape.fwhm_da):
            continue
        near = np.abs(mass - m0) < 3 * shape.fwhm_da
        n = int(np.count_nonzero(near) if w is None else w[near].sum())
        if n < min_ions:
            continue
        out.append({
            "peak": name,
            "nominal_da": m0,
            "mass": round(shape.position_da, 4),
            "fwhm": shape.fwhm_da,
            "fw10m": shape.fw10m_da,
            "mrp50": shape.mrp50,
            "mrp10": shape.mrp10,
        })  # fmt: skip
    return out


@njit(cache=True, nogil=True)
def window_count_kernel(bits, keep, base, counts):
    """``counts[bits[i] - base] += 1`` where ``keep[i]`` and the index is in range (bits: the
    float32 m/n viewed as int32; negative values and NaN fall outside)."""
    n = counts.shape[0]
    for i in range(bits.shape[0]):
        if keep[i]:
            j = bits[i] - base
            if j >= 0 and j < n:
                counts[j] += 1
    return counts


class WindowCounts:
    """The float32 m/n values in the open interval (lo, hi) Da, streamed, kept exactly and in
    bounded memory: one counter per float32 value the interval holds (bit patterns of
    positive floats are ordered as their values), whatever the number of ions. ``values()``
    gives the distinct values seen and their counts, for :func:`mrp` with ``weights``: the
    answer of the ions' masses themselves. A window 6 % of its m/n wide holds ~0.5-1 M float32
    values (8 M for the [0.75, 1.5) Da window of H+); untouched counters take no memory."""

    def __init__(self, lo: float, hi: float) -> None:
        lo = max(float(lo), 0.0)
        a, b = np.float32(lo), np.float32(hi)
        if float(a) <= lo:
            a = np.nextafter(a, np.float32(np.inf))
        if float(b) >= hi:
            b = np.nextafter(b, np.float32(0.0))
        self.base = int(np.array(a, np.float32).view(np.int32))
        top = int(np.array(b, np.float32).view(np.int32))
        self.counts = np.zeros(max(0, top - self.base + 1), dtype=np.int64)

    @classmethod
    def of_counts(cls, base: int, counts: np.ndarray) -> WindowCounts:
        """Counters kept elsewhere: ``counts[j]`` ions at the float32 whose bits are
        ``base + j``."""
        w = cls.__new__(cls)
        w.base, w.counts = int(base), np.asarray(counts, dtype=np.int64)
        return w

    def add(self, mass_f32: np.ndarray, keep: np.ndarray) -> None:
        m = np.asarray(mass_f32)
        if m.dtype != np.float32:
            raise TypeError(f"WindowCounts takes float32 m/n, not {m.dtype}")
        window_count_kernel(m.view(np.int32), keep, self.base, self.counts)

    def values(self) -> tuple[np.ndarray, np.ndarray]:
        """(distinct m/n values as float64, ions at each), in increasing m/n."""
        nz = np.flatnonzero(self.counts)
        v = (nz + self.base).astype(np.int32).view(np.float32).astype(np.float64)
        return v, self.counts[nz]


def _isotope_label(m: float, charge: int, formula: dict[str, int], ion: str) -> str:
    a = round(m * charge)
    return f"{a}{ion}" if sum(formula.values()) == 1 else f"{ion} A={a}"


def peak_table(ranges: RangeTable, counts: np.ndarray, edges: np.ndarray) -> list[dict]:
    """One row per range of the spectrum ``counts``/``edges`` (a fine histogram of the
    calibrated m/n of every ion): ion, the isotope it holds (or its isotope group), apex m/n,
    ions in the range, flat background in it (from the unranged bins of its flanks,
    subtracted: ``net``), FWHM,
    FW10%M and m/dm at 50 % and 10 % of the main isotope peak in the range, measured alone
    (window cut at the neighbouring isotopes)."""
    rows = []
    free = unranged_bins(edges, ranges.lo_da, ranges.hi_da)  # as composition.range_background
    for i, name in enumerate(ranges.names):
        lo, hi = float(ranges.lo_da[i]), float(ranges.hi_da[i])
        formula, z = ranges.composition[i], int(ranges.charge[i])
        try:
            pat = _pattern(formula, z)
        except (KeyError, ValueError):
            pat = []
        inside = [(m, p) for m, p in pat if lo <= m < hi]
        labels = [_isotope_label(m, z, formula, name) for m, _ in inside]
        m0 = max(inside, key=lambda q: q[1])[0] if inside else 0.5 * (lo + hi)
        b_lo, b_hi = isotope_bounds(name, m0, formula, z) if inside else (-math.inf, math.inf)
        w = peak_window_da(m0)
        # the window the widths are walked in: the range, widened to the peak's own tails but
        # never past the midpoint to a neighbouring isotope nor into a neighbouring range (the
        # apex is looked for in the range alone: histogram_peak)
        prev_hi = float(ranges.hi_da[i - 1]) if i > 0 else -math.inf
        next_lo = float(ranges.lo_da[i + 1]) if i + 1 < len(ranges.names) else math.inf
        bounds = (max(min(lo, m0 - w), b_lo, min(prev_hi, lo)),
                  min(max(hi, m0 + 2 * w), b_hi, max(next_lo, hi)))  # fmt: skip
        pk = histogram_peak(counts, edges, lo, hi, bounds, flank_width_da(lo, hi), free)
        row = {
            "range": i,
            "ion": name,
            "isotope": labels[0] if len(labels) == 1 else None,
            "isotopes": labels,
            "lo_da": round(lo, 4),
            "hi_da": round(hi, 4),
            "nominal_da": round(m0, 5),
        }
        if pk is None:
            row.update(counts=0, background=0.0, net=0.0, apex_da=None, fwhm=None, fw10m=None,
                       mrp50=None, mrp10=None)
        else:
            row.update(apex_da=round(pk.apex_da, 5), counts=pk.counts,
                       background=round(pk.background, 1),
                       net=round(pk.counts - pk.background, 1), fwhm=pk.fwhm_da,
                       fw10m=pk.fw10m_da, mrp50=pk.mrp50, mrp10=pk.mrp10)
        rows.append(row)
    return rows


def mrp_and_peak_table(ranges: RangeTable, counts: np.ndarray, edges: np.ndarray,
                       peaks: list[tuple[str, float]], windows: list[WindowCounts],
                       ) -> tuple[list[dict], list[dict]]:  # fmt: skip
    """``analyze``'s ``mrp`` and ``peaks``, one value per peak: the MRP of each of ``peaks``
    (:func:`mrp` on the exact m/n of its window in ``windows``, less the flat background the
    per-peak table found beside its range) is also the ``fwhm``, ``fw10m``, ``mrp50`` and
    ``mrp10`` of the table's row of that isotope peak; the other rows are measured on the
    spectrum ``counts``/``edges`` (:func:`peak_table`) by the same estimator."""
    table = peak_table(ranges, counts, edges)
    out: list[dict] = []
    for (name, m0), win in zip(peaks, windows, strict=True):
        rows = [r for r in table if r["ion"] == name and abs(r["nominal_da"] - m0) < 1e-3
                and r["hi_da"] > r["lo_da"]]  # fmt: skip
        row = max(rows, key=lambda r: r["counts"], default=None)
        bg = row["background"] / (row["hi_da"] - row["lo_da"]) if row is not None else 0.0
        values, n = win.values()
        got = mrp(values, [(name, m0)], weights=n, background_per_da=bg)
        if got and row is not None and math.isfinite(row["apex_da"] or math.nan) \
                and row["lo_da"] <= got[0]["mass"] <= row["hi_da"]:  # the range's own peak
            row.update({k: got[0][k] for k in ("fwhm", "fw10m", "mrp50", "mrp10")})
        out += got
    return out, table
