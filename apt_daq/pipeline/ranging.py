"""Ranging: assign each m/n to a range by binary search over the sorted range edges.

With disjoint ranges sorted by lower edge, the candidate of m is ``i = searchsorted(lo, m,
side="right") - 1`` and m is ranged if ``m < hi[i]``; otherwise it is unranged (-1). The
per-ion cost is O(log n_ranges), never a loop over ranges.

For the fused per-chunk kernel a *lookup table* over buckets of width w answers every bucket
that holds no range edge directly; buckets at (or next to) an edge fall back to the binary
search, so the answer is exactly the ``np.searchsorted`` one while almost every ion costs one
table load and no unpredictable branch (random masses make binary-search branches mispredict).

Assisted ranging (:func:`propose_ranges`) predicts the isotopologue positions of given ions
(:mod:`apt_daq.isotopes`) and places a range on each peak found in the spectrum near them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from apt_daq.isotopes import isotopologues, parse_ion
from apt_daq.rangetable import RangeTable


@njit(cache=True, nogil=True)
def searchsorted_right(a, x):
    """``np.searchsorted(a, x, side="right")`` for one value: number of a[i] <= x (NaN -> len)."""
    lo = 0
    hi = a.shape[0]
    if not (x == x):
        return hi
    while lo < hi:
        mid = (lo + hi) >> 1
        if a[mid] <= x:
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(cache=True, nogil=True)
def range_kernel(mass, lo, hi, out):
    """Range index of each mass (binary search), -1 unranged; ``out`` int16."""
    for i in range(mass.shape[0]):
        m = mass[i]
        j = searchsorted_right(lo, m) - 1
        if j >= 0 and m < hi[j]:
            out[i] = j
        else:
            out[i] = -1
    return out


@dataclass(frozen=True)
class RangeLookup:
    """Edges and a direct lookup table of a range table, ready for the kernels.

    The m/n axis from 0 is cut into cells of width w; ``table[b]`` answers every m/n in cell
    b = [b w, (b + 1) w) directly (range index or -1) unless a range edge falls in that cell
    or in a neighbour (``EDGE``): there the exact binary search decides. A neighbour is
    marked too, so a cell index off by one (rounding of m / w) still never gives a wrong
    answer: the lookup equals ``np.searchsorted`` for every m/n (tested with random tables).
    Negative and NaN m/n go to the search as well; m/n beyond the table are unranged.

    w is 0.002 Da, or finer when an interval between consecutive edges (a range's width, a
    gap between ranges) is narrower than 4 w, so each such interval keeps a directly
    answered cell; the table stays <= 2^20 cells (2 MB; 0.002 Da over 0-250 Da is 250 kB,
    L2-resident). Almost every ion is ranged with one load and no unpredictable branch.
    """

    lo: np.ndarray  # float64, sorted lower edges
    hi: np.ndarray  # float64 upper edges
    table: np.ndarray  # int16 cell answers, EDGE where the binary search must decide
    inv_width: float  # 1 / cell width, 1/Da

    MAX_CELLS = 1 << 20

    @classmethod
    def build(cls, ranges: RangeTable | None, bucket_da: float = 0.002) -> RangeLookup:
        if ranges is None or len(ranges) == 0:
            z = np.zeros(0, dtype=np.float64)
            return cls(z, z, np.full(1, -1, dtype=np.int16), 1.0 / bucket_da)
        lo = np.ascontiguousarray(ranges.lo_da, dtype=np.float64)
        hi = np.ascontiguousarray(ranges.hi_da, dtype=np.float64)
        return cls(lo, hi, *lookup_table(lo, hi, bucket_da, cls.MAX_CELLS))


def cell_width(lo: np.ndarray, hi: np.ndarray, bucket_da: float = 0.002,
               max_cells: int = 1 << 20) -> float:
    """The lookup's cell width: ``bucket_da``, or a quarter of the narrowest interval between
    distinct consecutive edges, but no finer than the top edge / ``max_cells``."""
    e = np.unique(np.concatenate([lo, hi]))
    e = e[np.isfinite(e)]
    top = float(max(e.max(), 0.0)) if len(e) else 0.0
    w = float(bucket_da)
    if len(e) > 1:
        w = min(w, float(np.diff(e).min()) / 4.0)
    return max(w, top / (max_cells - 3), 1e-12)


def lookup_table(lo: np.ndarray, hi: np.ndarray, bucket_da: float = 0.002,
                 max_cells: int = 1 << 20) -> tuple[np.ndarray, float]:
    """(table, 1 / w) of :class:`RangeLookup` for sorted edges ``lo``, ``hi``."""
    inv = 1.0 / cell_width(lo, hi, bucket_da, max_cells)
    edges = np.concatenate([lo, hi])
    edges = edges[np.isfinite(edges) & (edges >= 0)]
    top = float(edges.max()) if len(edges) else 0.0
    nb = int(np.ceil(top * inv)) + 2
    centres = (np.arange(nb) + 0.5) / inv
    table = range_kernel(centres, lo, hi, np.empty(nb, dtype=np.int16))
    edge_b = np.floor(edges * inv).astype(np.int64)
    for d in (-1, 0, 1):
        table[np.clip(edge_b + d, 0, nb - 1)] = EDGE
    return table, inv


EDGE = -2


@njit(cache=True, nogil=True, inline="never")
def exact_range(m, lo, hi):
    """Binary-search answer for one m/n (kept out of line: the hot loop stays small)."""
    j = searchsorted_right(lo, m) - 1
    if j >= 0 and m < hi[j]:
        return j
    return -1


@njit(cache=True, nogil=True, inline="always")
def table_cell(m, inv_width, n_cells):
    """The lookup-table cell of one m/n, or -1 (beyond the table: unranged) or ``EDGE`` (a
    negative or NaN m/n: the search decides). The caller answers ``table[c] if c >= 0 else
    c`` itself: an inlined helper that takes an array costs numba reference counting on
    every call (measured 12 ns per m/n against 1 ns)."""
    if m >= 0.0:  # False for NaN too
        q = m * inv_width  # compared before the conversion: 1e30 or inf would not fit
        return int(q) if q < n_cells else -1
    return EDGE


@njit(cache=True, nogil=True)
def fix_edges(mass, k, lo, hi, ion):
    """Replace each ``EDGE`` among the first k answers by the binary search's. (A second
    loop, not a call inside the lookup loop: each call of a compiled function that takes
    arrays costs numba reference counting, more than the lookup itself.)"""
    for j in range(k):
        if ion[j] == EDGE:
            ion[j] = exact_range(np.float64(mass[j]), lo, hi)


@njit(cache=True, nogil=True)
def range_bucket_kernel(mass, lo, hi, table, inv_width, out):
    """Range index of each m/n by the lookup table (the binary search's answer, exactly)."""
    n = mass.shape[0]
    nb = table.shape[0]
    edges = 0
    for i in range(n):
        c = table_cell(np.float64(mass[i]), inv_width, nb)
        r = table[c] if c >= 0 else c
        out[i] = r
        edges += r == EDGE
    if edges:
        fix_edges(mass, n, lo, hi, out)
    return out


def range_masses(mass: np.ndarray, ranges: RangeTable | None,
                 lookup: RangeLookup | None = None) -> np.ndarray:
    """Range index (int16, -1 unranged) of each m/n: by ``lookup`` (the table of the same
    ranges, built once by a caller that ranges many chunks) when given, else by search."""
    out = np.empty(len(mass), dtype=np.int16)
    if ranges is None or len(ranges) == 0:
        out[:] = -1
        return out
    if lookup is not None:
        return range_bucket_kernel(np.asarray(mass), lookup.lo, lookup.hi, lookup.table,
                                   lookup.inv_width, out)
    return range_kernel(np.asarray(mass), ranges.lo_da, ranges.hi_da, out)


# ---------------------------------------------------------------------------- range widths


def default_window(mass_da: float, charge: int = 1) -> tuple[float, float]:
    """Range edges (lo, hi) around a peak for a LEAP in UV-laser mode.

    Laser-pulsed peaks are narrow on the low side (MRP ~ 1000 FWHM) and carry a thermal tail
    on the high side, so ranges are asymmetric: 0.15 % + 0.03 Da below (several FWHM),
    0.6 % + 0.06 Da above (the bulk of the tail).
    """
    del charge
    return mass_da - (0.0015 * mass_da + 0.03), mass_da + (0.006 * mass_da + 0.06)


def _resolve_overlaps(cands: list[list], drop_same_ion: bool) -> list[list]:
    """Make candidate ranges ``[name, peak_da, lo_da, hi_da, weight, formula, charge]``
    disjoint, strongest first: a weaker candidate overlapping a kept range is dropped if its
    peak lies inside that range (or, with ``drop_same_ion``, if it names the same ion), else
    both are cut at the midpoint between the two peaks. Returns the kept ones by lower edge."""
    kept: list[list] = []
    for c in sorted(cands, key=lambda c: -c[4]):
        ok = True
        for k in kept:
            if c[2] < k[3] and k[2] < c[3]:  # overlap with a stronger one
                if k[2] <= c[1] < k[3] or (drop_same_ion and c[0] == k[0]):
                    ok = False
                    break
                mid = 0.5 * (c[1] + k[1])
                if c[1] < k[1]:
                    c[3] = min(c[3], mid)
                    k[2] = max(k[2], mid)
                else:
                    c[2] = max(c[2], mid)
                    k[3] = min(k[3], mid)
        if ok and c[3] > c[2]:
            kept.append(c)
    return sorted(kept, key=lambda c: c[2])


def ranges_for_ions(
    ions: list[str],
    weights: dict[str, float] | None = None,
    min_abundance: float = 1e-3,
    window=default_window,
    atomic_volume_nm3: float = 0.0,
) -> RangeTable:
    """Ranges on every isotopologue (abundance >= ``min_abundance``) of the given ions.

    Overlaps between ions are resolved by expected intensity ``weights[ion] * abundance``:
    the stronger peak keeps its range, the weaker one is dropped if its peak falls inside the
    stronger range, else both are cut at the midpoint between the two peak positions.
    ``atomic_volume_nm3`` (per atom) fills the RRNG ``Vol`` field.
    """
    weights = weights or {}
    cands = []
    for name in ions:
        formula, z = parse_ion(name)
        for m, a in isotopologues(formula, z, min_abundance):
            lo, hi = window(m, z)
            cands.append([name, m, lo, hi, weights.get(name, 1.0) * a, formula, z])
    kept = _resolve_overlaps(cands, drop_same_ion=True)
    return RangeTable(
        names=[c[0] for c in kept],
        lo_da=np.array([round(c[2], 4) for c in kept]),
        hi_da=np.array([round(c[3], 4) for c in kept]),
        composition=[c[5] for c in kept],
        charge=[c[6] for c in kept],
        volume_nm3=[atomic_volume_nm3 * sum(c[5].values()) for c in kept],
    )


def propose_ranges(
    counts: np.ndarray,
    edges: np.ndarray,
    ions: list[str],
    min_abundance: float = 1e-3,
    search_da: float = 0.15,
    fraction: float = 0.02,
    min_counts: float = 10.0,
) -> RangeTable:
    """Assisted ranging: a range on each predicted isotopologue peak found in the spectrum.

    For each predicted peak the local maximum within ``search_da`` is located; the range runs
    from where the spectrum first drops to ``fraction`` of that maximum (or to the local
    background) on each side. Peaks with fewer than ``min_counts`` counts at their maximum
    are skipped. Overlaps are resolved as in :func:`ranges_for_ions` with the peak heights as
    weights.
    """
    centres = 0.5 * (edges[1:] + edges[:-1])
    rows = []
    for name in ions:
        formula, z = parse_ion(name)
        for m, _a in isotopologues(formula, z, min_abundance):
            i0 = np.searchsorted(centres, m - search_da)
            i1 = np.searchsorted(centres, m + search_da)
            if i1 <= i0:
                continue
            j = i0 + int(np.argmax(counts[i0:i1]))
            peak = counts[j]
            if peak < min_counts:
                continue
            lo_w, hi_w = default_window(centres[j], z)
            floor = max(peak * fraction, np.median(counts[max(0, i0 - 50) : i0 + 1]) * 2)
            a = j
            while a > 0 and counts[a - 1] > floor and centres[a - 1] > lo_w:
                a -= 1
            b = j
            while b < len(counts) - 1 and counts[b + 1] > floor and centres[b + 1] < hi_w:
                b += 1
            rows.append([name, centres[j], edges[a], edges[b + 1], float(peak), formula, z])
    kept = _resolve_overlaps(rows, drop_same_ion=False)
    return RangeTable(
        names=[c[0] for c in kept],
        lo_da=np.array([c[2] for c in kept]),
        hi_da=np.array([c[3] for c in kept]),
        composition=[c[5] for c in kept],
        charge=[c[6] for c in kept],
    )
