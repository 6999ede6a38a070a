"""The identification problem's data: one number per *row*, one *column* per candidate.

Rows: each detected peak's net counts, and, at every m/n where a candidate predicts an
isotopologue that no detected peak matches, the net counts found there (an *absent* row:
usually ~0, which is what makes a candidate explain its minor isotopes). An isotopologue off
every peak's top but inside a peak's window, within ``WINDOW_REACH`` tolerances of its top,
is ranged with that peak (64Ni2+ 0.026 Da under O2+); farther out a window holds a tail, not
an isotopologue's peak. Each candidate is a column: its isotopologue abundances on the rows
they fall on; the variance of a row is ``|y| + background + pedestal + (SYSTEMATIC y)^2 + 1``
(counting statistics plus a few % for window truncation and detector effects on isotope
ratios). The fit and the selection are :mod:`.identify`'s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from apt_daq.pipeline.autorange.candidates import Candidate
from apt_daq.pipeline.autorange.spectrum import LogSpectrum, Peak

SYSTEMATIC = 0.02
MIN_ABUNDANCE = 2e-4
WINDOW_REACH = 3.0  # typical tolerances from a peak's top within which its window claims an
# isotopologue: farther out a window holds a tail (calcite: 54Fe+ "explained" by the broad
# bump at 52.4 Da whose window reached 54.5 Da, where the spectrum has no peak)


@dataclass
class Rows:
    y: np.ndarray  # net counts per row
    var: np.ndarray  # variance per row
    mass_da: np.ndarray  # row position
    detected: np.ndarray  # bool: a detected peak (first len(peaks) rows)
    shift: np.ndarray | None = None  # per candidate: relative m/n offset of its main peak


def tolerance_rel(peaks: list[Peak], calibration_rel: float = 7e-4) -> np.ndarray:
    """Relative m/n tolerance of matching an isotopologue to each peak: its FWHM, at least
    ``calibration_rel`` (calibration residuals of a few 1e-4 in a well calibrated run)."""
    return np.array([max(0.8 * p.fwhm_rel, calibration_rel) for p in peaks])


class _PeakIndex:
    """The detected peaks, searchable by m/n (nearest top) and by window."""

    def __init__(self, peaks: list[Peak]):
        self.pm = np.array([p.mass_da for p in peaks])
        self.order = np.argsort(self.pm)
        self.ps = self.pm[self.order]
        self.lo_order = np.argsort([p.lo_da for p in peaks])
        self.lo_da = np.array([peaks[i].lo_da for i in self.lo_order])
        self.hi_da = np.array([peaks[i].hi_da for i in self.lo_order])

    def nearest(self, m: float, tols: np.ndarray) -> tuple[int, float]:
        """(peak, relative offset) of the nearest top within its tolerance, or (-1, inf)."""
        j = int(np.searchsorted(self.ps, m))
        best, best_d = -1, np.inf
        for jj in (j - 1, j):
            if 0 <= jj < len(self.ps):
                p = self.order[jj]
                d = self.pm[p] / m - 1.0
                if abs(d) <= tols[p] and abs(d) < abs(best_d):
                    best, best_d = p, d
        return best, best_d

    def window(self, m: float) -> int:
        """The peak whose window holds ``m``, or -1."""
        w = int(np.searchsorted(self.lo_da, m, "right")) - 1
        return int(self.lo_order[w]) if w >= 0 and m < self.hi_da[w] else -1


def _place(c: Candidate, idx: _PeakIndex, tol: np.ndarray, tight: np.ndarray, m0_da: float,
           reach_rel: float = np.inf,
           ) -> tuple[float, float, list[tuple[int, float]], list[tuple[float, float]]]:
    """Where ``c``'s isotopologues fall: (position cost, m/n offset, [(peak, abundance)],
    [(m/n, abundance)] of those on no peak). The main isotopologue sets the offset (a
    calibration error is common to its isotopologues); the others must sit at that offset,
    within the tight tolerance, or inside a peak's window within ``reach_rel`` of its top."""
    amax = c.abundance.max()
    i_main = int(np.argmax(c.abundance))
    p_main, shift = idx.nearest(c.peaks_da[i_main], tol)
    cost = (2.0 * shift / tol[p_main]) ** 2 if p_main >= 0 else 0.0
    if p_main < 0:
        shift = 0.0
    on, off = [], []
    for i, (m, a) in enumerate(zip(c.peaks_da, c.abundance, strict=True)):
        if a < MIN_ABUNDANCE or m <= m0_da:
            continue
        ms = m * (1.0 + shift)
        if i == i_main and p_main >= 0:
            on.append((p_main, a))
            continue
        best, d = idx.nearest(ms, tight)
        if best < 0:  # off the tolerance but inside a peak's window, near its top: ranged
            best = idx.window(ms)  # with it (a peak's tail is no isotopologue's peak)
            d = idx.pm[best] / ms - 1.0 if best >= 0 else 0.0
            if best >= 0 and abs(d) > reach_rel:
                best = -1
        if best >= 0:
            on.append((best, a))
            if a >= 0.1 * amax:
                cost += min(16.0, (2.0 * d / tight[best]) ** 2)
        else:
            off.append((ms, a))
    return cost, shift, on, off


def _absent_counts(spec: LogSpectrum, bg: np.ndarray, peaks: list[Peak],
                   absent_mass: list[float], fwhm_rel: float) -> tuple[np.ndarray, np.ndarray]:
    """Net counts and variance at each absent position, outside every peak's window."""
    in_peak = np.zeros(len(spec.counts), bool)
    for p in peaks:
        in_peak[p.lo_bin:p.hi_bin] = True
    cs = np.concatenate([[0.0], np.cumsum(spec.counts)])
    cs_out = np.concatenate([[0.0], np.cumsum(np.where(in_peak, 0, spec.counts))])
    bs_out = np.concatenate([[0.0], np.cumsum(np.where(in_peak, 0.0, bg))])
    bs = np.concatenate([[0.0], np.cumsum(bg)])
    y, var = np.zeros(len(absent_mass)), np.zeros(len(absent_mass))
    nb = len(spec.counts)
    for r, m in enumerate(absent_mass):
        a = int(max(0, math.floor(spec.bin_of(m * (1 - 1.5 * fwhm_rel)))))
        b = int(min(nb, math.ceil(spec.bin_of(m * (1 + 2.5 * fwhm_rel)))))
        if b <= a:
            continue
        y[r] = (cs_out[b] - cs_out[a]) - (bs_out[b] - bs_out[a])
        var[r] = (cs[b] - cs[a]) + (bs[b] - bs[a]) + 1.0 + (SYSTEMATIC * y[r]) ** 2
    return y, var


def build_design(spec: LogSpectrum, bg: np.ndarray, peaks: list[Peak], cands: list[Candidate],
                 fwhm_rel: float, calibration_rel: float = 7e-4,
                 ) -> tuple[Rows, np.ndarray, np.ndarray]:
    """Rows (detected peaks, then absent positions), the design matrix (rows x cands) and
    each candidate's position cost: sum over its strong isotopologues (>= 10 % of its main
    one) on a peak of (offset / (tolerance / 2))^2, so the better placed of two candidates
    wins a tie."""
    idx = _PeakIndex(peaks)
    tol, tight = tolerance_rel(peaks, calibration_rel), tolerance_rel(peaks)
    pos_cost, shifts = np.zeros(len(cands)), np.zeros(len(cands))
    n_p = len(peaks)
    absent_key: dict[int, int] = {}  # absent positions closer than a FWHM share a row
    absent_mass: list[float] = []
    entries: list[tuple[int, int, float]] = []  # (row, col, abundance)
    group = max(1, round(fwhm_rel / spec.dl))
    reach = WINDOW_REACH * max(0.8 * fwhm_rel, calibration_rel)
    for k, c in enumerate(cands):
        pos_cost[k], shifts[k], on, off = _place(c, idx, tol, tight, spec.m0_da, reach)
        entries.extend((p, k, a) for p, a in on)
        for ms, a in off:
            key = int(float(spec.bin_of(ms)) // group)
            row = absent_key.get(key)
            if row is None:
                row = n_p + len(absent_mass)
                absent_key[key] = row
                absent_mass.append(ms)
            entries.append((row, k, a))
    y_abs, var_abs = _absent_counts(spec, bg, peaks, absent_mass, fwhm_rel)
    net = np.array([p.net for p in peaks])
    var_det = (np.abs(net) + np.array([p.background + p.pedestal for p in peaks])
               + (SYSTEMATIC * net) ** 2 + 1.0)
    y, var = np.concatenate([net, y_abs]), np.concatenate([var_det, var_abs])
    a_mat = np.zeros((len(y), len(cands)))
    for r, k, a in entries:
        a_mat[r, k] += a
    rows = Rows(y, var, np.concatenate([idx.pm, np.array(absent_mass)]),
                np.arange(len(y)) < n_p)
    rows.shift = shifts
    return rows, a_mat, pos_cost
