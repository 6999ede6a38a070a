"""The spectrum unsupervised ranging works on: log-binned m/n, a background model, peaks.

**Bins.** Edges ``m_k = M0_DA exp(k dl)``: constant relative width, so one smoothing kernel
fits every peak of an instrument whose resolving power is roughly constant (a LEAP's is
within a factor 2 over 1-200 Da). ``dl = 1e-4`` puts ~7-10 bins across a FWHM of m/dm ~1000.

**Background.** Hits that are not time-correlated with a pulse (detector dark counts, ions
evaporated between pulses) are uniform in time of flight. With m = K V t^2 / L^2, at any
voltage they are uniform in u = sqrt(m): a density of ~1/sqrt(m) per Da. The model is a
locally constant density per unit u, estimated with iterative clipping of the peaks (and
their tails) in a window of +-10 % in u, so it also follows a background that is not quite
flat (a voltage-dependent detection window, several voltages).

**Peaks.** Local maxima of the spectrum smoothed over ~1/3 FWHM, kept if their counts above
the higher of the local background and the valley level around them (the tail of a bigger
neighbour) are significant (> 5 sigma and >= ``min_counts``). Each peak's window runs from
the valley (or where the signal falls into the background) below it to where its tail falls
into the background (or the valley before the next peak) above it: windows follow each
peak's own width and tail.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit

M0_DA = 0.5
MAX_DA = 400.0
DL = 1e-4


@njit(cache=True, nogil=True)
def log_hist_kernel(mass, ln_m0, inv_dl, counts):
    """Add ``mass`` (Da) into log bins ``[m0 e^(k dl), m0 e^((k+1) dl))``; others dropped."""
    nb = counts.shape[0]
    for i in range(mass.shape[0]):
        m = np.float64(mass[i])  # a float32 log is 4 % of a bin off at 400 Da
        if m > 0.0:  # also rejects NaN
            b = (math.log(m) - ln_m0) * inv_dl
            if b >= 0.0 and b < nb:
                counts[int(b)] += 1
    return counts


@dataclass
class LogSpectrum:
    """A streaming log-binned mass spectrum (``add(mass)`` chunk by chunk)."""

    counts: np.ndarray
    m0_da: float = M0_DA
    dl: float = DL

    @classmethod
    def empty(cls, m0_da: float = M0_DA, max_da: float = MAX_DA, dl: float = DL) -> LogSpectrum:
        nb = math.ceil(math.log(max_da / m0_da) / dl)
        return cls(np.zeros(nb, np.int64), m0_da, dl)

    @classmethod
    def of(cls, mass: np.ndarray, **kw) -> LogSpectrum:
        s = cls.empty(**kw)
        s.add(mass)
        return s

    def add(self, mass: np.ndarray) -> None:
        log_hist_kernel(np.ascontiguousarray(mass), math.log(self.m0_da), 1.0 / self.dl,
                        self.counts)

    @property
    def edges(self) -> np.ndarray:
        return self.m0_da * np.exp(self.dl * np.arange(len(self.counts) + 1))

    @property
    def centres(self) -> np.ndarray:
        return self.m0_da * np.exp(self.dl * (np.arange(len(self.counts)) + 0.5))

    def mass_at(self, b: float | np.ndarray) -> float | np.ndarray:
        """m/n (Da) at fractional bin position ``b`` (bin k spans [k, k + 1))."""
        return self.m0_da * np.exp(self.dl * np.asarray(b, np.float64))

    def bin_of(self, m_da: float | np.ndarray) -> float | np.ndarray:
        """Fractional bin position of m/n."""
        return np.log(np.asarray(m_da, np.float64) / self.m0_da) / self.dl

    @classmethod
    def from_linear(cls, counts: np.ndarray, edges: np.ndarray, **kw) -> LogSpectrum:
        """Re-bin a fixed-width histogram (each bin's counts at its centre): coarser than
        binning the ions (a 0.01 Da bin is wider than a Li peak), for callers without ions."""
        s = cls.empty(**kw)
        c = 0.5 * (edges[1:] + edges[:-1])
        ok = (c > s.m0_da) & (counts > 0)
        b = np.floor(s.bin_of(c[ok])).astype(np.int64)
        keep = b < len(s.counts)
        np.add.at(s.counts, b[keep], np.asarray(counts)[ok][keep].astype(np.int64))
        return s


# ------------------------------------------------------------------------------ background
def background(spec: LogSpectrum, group: int = 50, half_window: int = 40,
               iterations: int = 5) -> np.ndarray:
    """Background counts per fine bin: a density per unit sqrt(m), locally constant (see
    module doc). Coarse bins of ``group`` fine bins; in each window of +-``half_window``
    coarse bins the density is the mean over the coarse bins not clipped as peak (more than
    3 sigma above the current estimate, and their neighbours)."""
    c = spec.counts.astype(np.float64)
    n = len(c) // group
    coarse = c[: n * group].reshape(n, group).sum(1)
    e = spec.edges
    u = np.sqrt(e[: n * group + 1 : group])
    du = np.diff(u)
    # The data's support: an acquisition's m/n window (or a file's) ends somewhere, and the
    # empty bins beyond it are not background. Left in a window they halve the level at the
    # edge and the last few per cent of a flat background become "peaks" (uniform noise over
    # 1-100 Da was ranged as GeO+, W2+ and GaN2+ at 88-100 Da). The coarse bins holding the
    # first and last hit are partly empty and are left out too; beyond the support the level
    # is held at its edge value.
    nz = np.flatnonzero(coarse)
    inside = np.zeros(n, bool)
    if len(nz):
        inside[nz[0] + 1: nz[-1]] = True
    keep = inside.copy()
    level = np.zeros(n)
    for _ in range(iterations):
        cs = np.concatenate([[0.0], np.cumsum(np.where(keep, coarse, 0.0))])
        us = np.concatenate([[0.0], np.cumsum(np.where(keep, du, 0.0))])
        i = np.arange(n)
        a = np.clip(i - half_window, 0, n)
        b = np.clip(i + half_window + 1, 0, n)
        num, den = cs[b] - cs[a], us[b] - us[a]
        level = np.where(den > 0, num / np.maximum(den, 1e-300), 0.0)
        expect = level * du
        hot = coarse > expect + 3.0 * np.sqrt(expect) + 2.0
        new = inside & ~(hot | np.r_[False, hot[:-1]] | np.r_[hot[1:], False])
        if np.array_equal(new, keep):
            break
        keep = new
    if inside.any():
        first, last = np.flatnonzero(inside)[[0, -1]]
        level[:first] = level[first]
        level[last + 1:] = level[last]
    # the density at each fine bin (interpolated between coarse centres) times its width in u
    uc = 0.5 * (u[1:] + u[:-1])
    uf = np.sqrt(spec.centres)
    dens = np.interp(uf, uc, level)
    return dens * np.diff(np.sqrt(e))


# ------------------------------------------------------------------------------ peaks
@dataclass
class Peak:
    """A detected peak: position (mode, Da), window [lo, hi) Da, net and background counts
    in the window, relative FWHM, and bin indices (lo_bin:hi_bin)."""

    mass_da: float
    lo_da: float
    hi_da: float
    net: float
    background: float
    fwhm_rel: float
    height: float
    lo_bin: int
    hi_bin: int
    top_bin: int
    pedestal: float = 0.0  # counts of a bigger left neighbour's tail under it, not in net


def _smooth(c: np.ndarray, sigma_bins: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter1d

    return gaussian_filter1d(c.astype(np.float64), sigma_bins, mode="constant")


def _significant_maxima(c: np.ndarray, s: np.ndarray, bg: np.ndarray, sigma_bins: float,
                        min_counts: float, n_sigma: float) -> list[tuple[int, float, float, int]]:
    """(top bin, smoothed height, net counts, FWHM bins) of each local maximum of ``s`` whose
    counts within +-FWHM above the higher of the background and its base are significant."""
    from scipy.signal import find_peaks as sp_find_peaks

    idx, props = sp_find_peaks(s, prominence=0.5 / (2.5 * sigma_bins))
    if len(idx) == 0:
        return []
    base = s[idx] - props["prominences"]
    cs = np.concatenate([[0.0], np.cumsum(c)])
    bs = np.concatenate([[0.0], np.cumsum(bg)])
    n = len(c)
    out = []
    for i, p_idx in enumerate(idx):
        h = s[p_idx]
        lvl = max(base[i], bg[p_idx])
        half = lvl + 0.5 * (h - lvl)
        a = p_idx
        while a > 0 and s[a - 1] > half and p_idx - a < 200:
            a -= 1
        b = p_idx
        while b < n - 1 and s[b + 1] > half and b - p_idx < 400:
            b += 1
        w = max(2, (b - a + 1))
        lo, hi = max(0, p_idx - w), min(n, p_idx + w + 1)
        ref = max(lvl * (hi - lo), bs[hi] - bs[lo])
        net = cs[hi] - cs[lo] - ref
        if net >= min_counts and net >= n_sigma * math.sqrt(ref + 1.0):
            out.append((int(p_idx), float(h), float(net), b - a + 1))
    return out


def _merge_close(cand: list[tuple[int, float, float, int]], s: np.ndarray) -> list[int]:
    """Tops of the maxima, those closer than a FWHM (noise on a flat top) merged into the
    highest."""
    cand = sorted(cand, key=lambda t: t[0])
    merged = [cand[0]]
    for t in cand[1:]:
        prev = merged[-1]
        if t[0] - prev[0] < 0.75 * max(t[3], prev[3]) and \
                s[prev[0]:t[0] + 1].min() > 0.7 * min(t[1], prev[1]):
            if t[1] > prev[1]:
                merged[-1] = t
        else:
            merged.append(t)
    return [t[0] for t in merged]


def _peak_at(spec: LogSpectrum, s: np.ndarray, wide: np.ndarray, bg: np.ndarray, t: int,
             left_limit: int, right_limit: int, sigma_bins: float,
             rides_on_left: bool = False) -> Peak:
    """The peak with its top at bin ``t``: its window (down to where it falls into the
    background or 1e-3 of its height below, along its tail on the smoother ``wide`` above,
    within the limits), counts, position (parabola through the smoothed top) and FWHM.
    Where its window starts at a valley above the background and that level is no front of
    its own (``rides_on_left``: the left neighbour is the higher; or the valley lies two
    FWHM or more below its top), a tail from the left runs on under it: that pedestal (an
    exponential decay from the valley's level to the level at the window's end) is
    taken out of the net counts (the skim of a rider peak). Calcite on a LEAP: 42Ca2+ at
    21 Da on 40Ca2+'s thermal tail held 9.9k counts above the background, 1.3k of them
    its own."""
    c = spec.counts
    h = s[t]
    bgs = np.maximum(bg, 1e-9)

    def level_at(j: int) -> float:
        nb = max(bgs[j], 1e-9)
        return nb + max(nb, 2.0 * math.sqrt(nb / (7.5 * sigma_bins)), 1e-3 * h)

    a = t
    while a > left_limit and s[a - 1] > level_at(a - 1):
        a -= 1
    b = t
    while b < right_limit and wide[b + 1] > level_at(b + 1):
        b += 1
    lo_bin, hi_bin = a, b + 1
    tot = float(c[lo_bin:hi_bin].sum())
    bgw = float(bg[lo_bin:hi_bin].sum())
    off = 0.0
    if 0 < t < len(c) - 1:
        y0, y1, y2 = s[t - 1], s[t], s[t + 1]
        den = y0 - 2 * y1 + y2
        off = 0.5 * (y0 - y2) / den if den < 0 else 0.0
    def width_above(base: float) -> int:
        """Bins of the smoothed peak above half its height over ``base``, within the window."""
        half = base + 0.5 * (h - base)
        aa = bb = t
        while aa > lo_bin and s[aa - 1] > half:
            aa -= 1
        while bb < hi_bin - 1 and s[bb + 1] > half:
            bb += 1
        return max(1, bb - aa + 1)

    fwhm_bins = width_above(max(bg[t], 0.0))  # FWHM above the local level
    pedestal = 0.0
    if (a == left_limit and a > 0 and s[a] > level_at(a)
            and (rides_on_left or t - a >= 2 * fwhm_bins)):
        left_lvl = s[a] - bg[a]
        right_lvl = min(left_lvl, max(0.0, wide[b] - bg[b])) if b == right_limit else 0.0
        width = hi_bin - lo_bin
        if right_lvl <= 0.01 * left_lvl:  # the tail runs out: 1 % of its level at the end
            right_lvl = 0.01 * left_lvl
        # a tail falls off exponentially: the level decays geometrically from L to R
        k = math.log(left_lvl / right_lvl) / width
        area = left_lvl * width if k < 1e-9 else (left_lvl - right_lvl) / k
        pedestal = min(area, max(0.0, tot - bgw))
        # its width above the pedestal, not above the background (42Ca2+ on calcite's
        # 40Ca2+ tail: FWHM 0.0048 measured from the background, twice its own)
        base = bg[t] + left_lvl * math.exp(-k * (t - a))
        if base < h:
            fwhm_bins = width_above(base)
    return Peak(float(spec.mass_at(t + 0.5 + off)), float(spec.mass_at(lo_bin)),
                float(spec.mass_at(hi_bin)), tot - bgw - pedestal, bgw,
                float(fwhm_bins * spec.dl), float(h), lo_bin, hi_bin, t, pedestal)


def find_peaks(spec: LogSpectrum, bg: np.ndarray | None = None, *, sigma_bins: float = 2.0,
               min_counts: float = 10.0, n_sigma: float = 5.0,
               max_tail_rel: float = 0.04, max_front_rel: float = 0.01) -> list[Peak]:
    """Significant peaks of ``spec`` with their windows (see module doc), by position."""
    c = spec.counts.astype(np.float64)
    if bg is None:
        bg = background(spec)
    s = _smooth(c, sigma_bins)
    wide = _smooth(c, 3.0 * sigma_bins)
    cand = _significant_maxima(c, s, bg, sigma_bins, min_counts, n_sigma)
    if not cand:
        return []
    tops = _merge_close(cand, s)
    # valleys between neighbours: the minimum of the smoothed spectrum between their tops
    valleys = [int(tops[k] + np.argmin(s[tops[k]:tops[k + 1] + 1])) for k in range(len(tops) - 1)]
    front, tail = int(max_front_rel / spec.dl), int(max_tail_rel / spec.dl)
    peaks = []
    for k, t in enumerate(tops):
        left = max(valleys[k - 1] + 1 if k > 0 else 0, t - front)
        right = min(valleys[k] if k < len(tops) - 1 else len(c) - 1, t + tail)
        rides = k > 0 and s[tops[k - 1]] > s[t]
        peaks.append(_peak_at(spec, s, wide, bg, t, left, right, sigma_bins, rides))
    return peaks


def net_counts(spec: LogSpectrum, bg: np.ndarray, lo_da: float, hi_da: float) -> tuple[float, float]:
    """(counts - background, background) in [lo_da, hi_da), whole bins."""
    a = int(max(0, math.floor(spec.bin_of(lo_da))))
    b = int(min(len(spec.counts), math.ceil(spec.bin_of(hi_da))))
    if b <= a:
        return 0.0, 0.0
    tot = float(spec.counts[a:b].sum())
    bgw = float(bg[a:b].sum())
    return tot - bgw, bgw


# ------------------------------------------------------------------------------ windows
def _reach(gain: np.ndarray, limit: int) -> np.ndarray:
    """``out[x]`` (x = 0..len(gain)): the largest sum of ``gain[:e]`` over ``e <= min(x,
    limit)`` (0 for e = 0)."""
    limit = max(0, min(limit, len(gain)))
    best = np.maximum.accumulate(np.concatenate([[0.0], np.cumsum(gain[:limit])]))
    return np.concatenate([best, np.full(len(gain) - limit, best[-1])])


def extend_windows(spec: LogSpectrum, bg: np.ndarray, peaks: list[Peak],
                   grow: list[bool] | None = None, *, max_front_rel: float = 0.03,
                   max_tail_rel: float = 0.06) -> list[Peak]:
    """Each window widened, bin by bin, while the bins it takes hold more peak ions than
    background: a bin of ``c`` counts over a background ``B`` holds ~``c - B`` ions of the
    peak's tail, so taking it names ``c - B`` ions right and ``B`` background hits wrongly.
    On each side the reach maximises the sum of ``c - 2 B`` over the bins taken (a counting
    noise excursion is not followed: the sum over a bare stretch falls by ``B`` a bin).
    The gap between two neighbours is shared at the cut maximising both reaches together;
    a window reaches at most ``max_front_rel`` below its top and ``max_tail_rel`` above
    (a thermal tail is long on the high side, a dissociation track on the low side).
    A peak with ``grow`` False (one left unidentified) keeps its window and bounds its
    neighbours' (apav's Si run: the 14.42 Da multi-hit artefact between 28Si2+ and 29Si2+,
    15.53 Da on 30Si2+'s tail)."""
    if not peaks:
        return []
    if grow is None:
        grow = [True] * len(peaks)
    c = spec.counts.astype(np.float64)
    gain = c - 2.0 * bg
    n = len(c)
    order = sorted(range(len(peaks)), key=lambda i: peaks[i].lo_bin)
    lo = [p.lo_bin for p in peaks]
    hi = [p.hi_bin for p in peaks]
    front, tail = int(max_front_rel / spec.dl), int(max_tail_rel / spec.dl)
    for k in range(len(order) + 1):
        left = order[k - 1] if k > 0 else None
        right = order[k] if k < len(order) else None
        a = hi[left] if left is not None else max(0, peaks[order[0]].top_bin - front)
        b = lo[right] if right is not None else min(n, peaks[order[-1]].top_bin + tail)
        if b <= a:
            continue
        top_up = 0 if left is None or not grow[left] else peaks[left].top_bin + tail
        top_dn = n if right is None or not grow[right] else peaks[right].top_bin - front
        # the bigger neighbour reaches first (at a given distance its tail is the bigger),
        # the other takes what it leaves
        left_first = left is not None and (right is None or peaks[left].net >= peaks[right].net)
        for side in ("up", "dn") if left_first else ("dn", "up"):
            if side == "up" and left is not None:
                hi[left] = a + int(np.argmax(_reach(gain[a:b], top_up - a)))
                a = hi[left]
            elif side == "dn" and right is not None:
                lo[right] = b - int(np.argmax(_reach(gain[a:b][::-1], b - top_dn)))
                b = lo[right]
    out = []
    for i, p in enumerate(peaks):
        if lo[i] == p.lo_bin and hi[i] == p.hi_bin:
            out.append(p)
            continue
        tot, bgw = float(c[lo[i]:hi[i]].sum()), float(bg[lo[i]:hi[i]].sum())
        out.append(Peak(p.mass_da, float(spec.mass_at(lo[i])), float(spec.mass_at(hi[i])),
                        tot - bgw, bgw, p.fwhm_rel, p.height, lo[i], hi[i], p.top_bin))
    return out
