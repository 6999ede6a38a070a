"""Peak finding and peak shape measures on a mass spectrum (small arrays: plain numpy)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def smooth(counts: np.ndarray, width: int = 3) -> np.ndarray:
    """Moving average over ``width`` bins (odd), same length."""
    if width <= 1:
        return counts.astype(np.float64)
    k = np.ones(width) / width
    return np.convolve(counts.astype(np.float64), k, mode="same")


def background_level(counts: np.ndarray, window: int = 201) -> np.ndarray:
    """Local background per bin: a running low quantile (the 20th percentile) of the counts."""
    n = len(counts)
    if n == 0:
        return np.zeros(0)
    w = min(window, n)
    pad = w // 2
    padded = np.pad(counts.astype(np.float64), pad, mode="edge")
    view = np.lib.stride_tricks.sliding_window_view(padded, w)[:n]
    step = max(1, w // 20)
    sub = np.quantile(view[::step], 0.2, axis=1)
    return np.interp(np.arange(n), np.arange(0, n, step)[: len(sub)], sub)


def find_peaks(
    counts: np.ndarray,
    edges: np.ndarray,
    min_counts: float = 20.0,
    min_snr: float = 5.0,
    min_separation_da: float = 0.3,
) -> np.ndarray:
    """Positions (Da) of the peaks of a spectrum, strongest first.

    A peak is a local maximum of the 3-bin smoothed spectrum that is at least ``min_counts``
    and ``min_snr`` times above the local background + 3 sqrt(background) (Poisson), the
    strongest within ``min_separation_da``. Positions are refined by a parabola through the
    top three bins.
    """
    s = smooth(counts, 3)
    bg = background_level(counts)
    thresh = np.maximum(min_counts, min_snr * (bg + 3 * np.sqrt(bg + 1)))
    is_max = np.zeros(len(s), dtype=bool)
    is_max[1:-1] = (s[1:-1] >= s[:-2]) & (s[1:-1] > s[2:]) & (s[1:-1] > thresh[1:-1])
    idx = np.flatnonzero(is_max)
    idx = idx[np.argsort(-s[idx])]
    centres = 0.5 * (edges[1:] + edges[:-1])
    taken: list[int] = []
    for i in map(int, idx):
        if all(abs(centres[i] - centres[j]) >= min_separation_da for j in taken):
            taken.append(i)
    out = []
    w = edges[1] - edges[0] if len(edges) > 1 else 0.0
    for i in taken:
        a, b, c = s[i - 1], s[i], s[i + 1]
        den = a - 2 * b + c
        off = 0.5 * (a - c) / den if den != 0 else 0.0
        out.append(centres[i] + np.clip(off, -0.5, 0.5) * w)
    return np.array(out, dtype=np.float64)


@dataclass
class PeakShape:
    position_da: float  # position of the maximum, Da
    height: float  # maximum counts per bin
    fwhm_da: float  # full width at half maximum, Da
    fw10m_da: float  # full width at a tenth of the maximum, Da

    @property
    def mrp50(self) -> float:
        return resolving_power(self.position_da, self.fwhm_da)

    @property
    def mrp10(self) -> float:
        return resolving_power(self.position_da, self.fw10m_da)


def resolving_power(position_da: float, width_da: float) -> float:
    """m / dm of a peak at ``position_da`` of full width ``width_da`` (NaN for no width)."""
    return position_da / width_da if width_da > 0 else float("nan")


def full_width(counts: np.ndarray, edges: np.ndarray, i_max: int, fraction: float) -> float:
    """Full width (Da) at ``fraction`` of the maximum at bin ``i_max``.

    Walks out from the maximum to the first bin below the level on each side and
    interpolates linearly between bin centres (the standard FWxM definition).
    """
    centres = 0.5 * (edges[1:] + edges[:-1])
    level = fraction * counts[i_max]
    a = i_max
    while a > 0 and counts[a - 1] >= level:
        a -= 1
    b = i_max
    while b < len(counts) - 1 and counts[b + 1] >= level:
        b += 1
    if a == 0 or b == len(counts) - 1:
        return float("nan")

    def cross(i_in: int, i_out: int) -> float:
        y_in, y_out = counts[i_in], counts[i_out]
        t = (y_in - level) / (y_in - y_out) if y_in != y_out else 0.5
        return centres[i_in] + t * (centres[i_out] - centres[i_in])

    return float(cross(b, b + 1) - cross(a, a - 1))


SG7 = np.array([-2.0, 3.0, 6.0, 7.0, 6.0, 3.0, -2.0]) / 21.0
"""Savitzky-Golay weights (a parabola fitted to 7 bins): the counting noise of a 3-bin average
(sum of squares 1/3), but no second moment, so the top of a peak is not flattened. A 3-bin
average at 12 bins per FWHM lowered the maximum and widened the FWHM by 2-4 % (+3 % on the
28Si2+ peak of apav's LEAP Si run)."""
CORE_IONS_PER_BIN = 500.0
"""Ions within the FWHM per bin of it above which the bins get finer than 12 per FWHM."""


def bins_per_fwhm(core_ions: float) -> int:
    """Bins per FWHM for a peak holding ``core_ions`` ions within its FWHM: 12 up to 6000 such
    ions, then finer (core / 500) up to 24 from 12 000. Finer bins take the last of the
    binning's widening away (< 0.5 % at 24), but they are noisier: the highest of noisy bins
    reads high and the width narrow, so a small peak keeps 12 (its bias there is its noise)."""
    return int(min(24.0, max(12.0, core_ions // CORE_IONS_PER_BIN)))


def sg_smooth(counts: np.ndarray) -> np.ndarray:
    """``counts`` smoothed by :data:`SG7` (same length)."""
    return np.convolve(np.asarray(counts, dtype=np.float64), SG7, mode="same")


def peak_widths(counts: np.ndarray, edges: np.ndarray) -> tuple[int, float, float, float]:
    """(bin of the maximum, maximum, FWHM, FW10%M) of the binned peak ``counts``/``edges``,
    smoothed by :data:`SG7` against counting noise (widths: :func:`full_width`). The one
    measure of a peak's widths: :func:`peak_shape` (the MRP of ``analyze``) and
    :func:`histogram_peak` (its per-peak table)."""
    s = sg_smooth(counts)
    i = int(np.argmax(s))
    return i, float(s[i]), full_width(s, edges, i, 0.5), full_width(s, edges, i, 0.1)


def peak_window_da(centre_da: float) -> float:
    """Half-width w of the window [c - w, c + 2 w) that :func:`peak_shape` looks at by
    default (the thermal tail is on the high side)."""
    return max(0.25, 0.02 * centre_da)


def peak_shape(
    mass: np.ndarray, centre_da: float, window_da: float | None = None,
    *, bounds: tuple[float, float] | None = None, weights: np.ndarray | None = None,
    background_per_da: float = 0.0,
) -> PeakShape | None:  # fmt: skip
    """Position, FWHM and FW10%M of the peak near ``centre_da`` from the hit masses.

    Three passes: a coarse histogram (bins 1/5000 of the mass, 3-bin average) finds the width,
    then the peak is re-binned so its FWHM spans :func:`bins_per_fwhm` bins (12-24, by the
    ions in it) and measured by :func:`peak_widths`; a peak of over 6000 ions in its FWHM is
    measured again on bins of its width measured so. Returns None when the peak holds fewer than 100 ions. ``background_per_da``: a
    flat background (ions per Da) taken off the counts first.

    The window is ``[c - w, c + 2 w)`` (``window_da`` = w), cut to ``bounds`` (lo, hi) when
    given: the midpoints to the neighbouring isotopes, so a peak is measured alone (the bins
    keep the grid of the uncut window). ``weights``: ions per ``mass`` value (distinct values
    with their counts give the answer of the values repeated).
    """
    if window_da is None:
        window_da = peak_window_da(centre_da)
    a, b = centre_da - window_da, centre_da + 2 * window_da
    lo, hi = (a, b) if bounds is None else (max(a, bounds[0]), min(b, bounds[1]))
    mass = np.asarray(mass, dtype=np.float64)  # float32 or float64 input: the same answer
    keep = (mass > lo) & (mass < hi)
    sel = mass[keep]
    w_sel = np.ones(len(sel)) if weights is None else np.asarray(weights, np.float64)[keep]
    if w_sel.sum() < 100:
        return None
    bin_da = max(centre_da / 5000.0, 1e-4)
    shape = None
    for p in range(3):
        edges = np.arange(a, b + bin_da, bin_da)
        if bounds is not None:
            edges = edges[(edges >= lo - bin_da) & (edges <= hi + bin_da)]
        counts, edges = np.histogram(sel, edges, weights=w_sel)
        counts = counts - background_per_da * bin_da
        if p == 0:
            s = smooth(counts, 3)
            i = int(np.argmax(s))
            top, fwhm, fw10 = float(s[i]), full_width(s, edges, i, 0.5), full_width(s, edges, i, 0.1)
        else:
            i, top, fwhm, fw10 = peak_widths(counts, edges)
        pos = 0.5 * (edges[i] + edges[i + 1])
        shape = PeakShape(pos, top, fwhm, fw10)
        if not np.isfinite(fwhm) or fwhm <= 0:
            break
        core = w_sel[np.abs(sel - pos) < 0.5 * fwhm].sum() - background_per_da * fwhm
        if p == 1 and bins_per_fwhm(core) == 12:
            break  # a small peak: a third pass at its own noisy width only adds noise
        bin_da = fwhm / bins_per_fwhm(core)
    return shape


@dataclass
class PeakRow:
    """A peak measured on a spectrum histogram, after a flat background is subtracted."""

    apex_da: float
    counts: int  # ions in the range
    background: float  # background ions in the range (flat, from the flanks)
    fwhm_da: float
    fw10m_da: float

    @property
    def mrp50(self) -> float:
        return resolving_power(self.apex_da, self.fwhm_da)

    @property
    def mrp10(self) -> float:
        return resolving_power(self.apex_da, self.fw10m_da)


BG_CELLS = 8
"""Cells each flank of a range is cut into by :func:`local_background`."""
BG_MIN_COUNTS = 100.0
"""Background ions :func:`local_background` wants before it stops widening the flanks (an
estimate to ~10 %)."""
BG_MAX_WIDEN = 8
BG_CLIP = 2.5
"""A cell further than this many Poisson sigmas (+1 ion) from its expected background is left
out of the level: above it a peak's, below it a dip (both sides: unbiased on noise)."""


def local_background(counts: np.ndarray, edges: np.ndarray, lo: float, hi: float,
                     flank_da: float, free: np.ndarray | None = None) -> tuple[float, float]:
    """(flat background per bin under [lo, hi), its standard error), from the bins of both
    flanks [lo - f, lo) and [hi, hi + f) that ``free`` allows (e.g. those outside every
    range; default all), with the bins of peaks left out.

    Each flank is cut into :data:`BG_CELLS` cells; starting from the median density of the
    cells, a cell holding more than its expected background ``e`` + 3 sqrt(e) + 1 (Poisson) is
    a peak's (a neighbouring unranged peak, a tail) and left out, the level is the mean of the
    cells kept, again until no cell changes side. The flanks widen (f = ``flank_da`` x2, up to
    x :data:`BG_MAX_WIDEN`) until the cells kept hold :data:`BG_MIN_COUNTS` ions. Both sides
    serve at once (a flat background is the same on both; the clipping, not the lower side,
    takes a neighbour's peak out); the error is the Poisson error of the ions kept. On a
    pulsed instrument the background is flat in time of flight (~1/sqrt(m) per Da), within
    1-2 % over a few Da above ~10 Da."""
    level, err = 0.0, 0.0
    k = 1
    while k <= BG_MAX_WIDEN:
        f = max(flank_da, 1e-9) * k
        cell = f / BG_CELLS
        s = centre_span(edges, lo - f, hi + f)
        cc = 0.5 * (edges[s.start : s.stop] + edges[s.start + 1 : s.stop + 1])
        nn = np.asarray(counts[s], np.float64)
        okk = np.ones(len(cc), bool) if free is None else np.asarray(free[s], bool)
        left = (cc < lo) & okk
        right = (cc >= hi) & okk
        idx = np.full(len(cc), -1, np.int64)
        idx[left] = np.minimum(((lo - cc[left]) / cell).astype(np.int64), BG_CELLS - 1)
        idx[right] = BG_CELLS + np.minimum(((cc[right] - hi) / cell).astype(np.int64),
                                           BG_CELLS - 1)
        use = idx >= 0
        n = np.bincount(idx[use], nn[use], minlength=2 * BG_CELLS)
        w = np.bincount(idx[use], minlength=2 * BG_CELLS).astype(np.float64)  # bins per cell
        full = w.max() if w.any() else 0.0
        has = w >= max(1.0, 0.25 * full)  # cells mostly cut by ranges are too noisy to judge
        if has.any():
            level = float(np.median(n[has] / w[has]))
            keep = has
            for _ in range(20):
                e = level * w
                new = has & (np.abs(n - e) <= BG_CLIP * np.sqrt(np.maximum(e, 1.0)) + 1.0)
                if not new.any():
                    break
                level = float(n[new].sum() / w[new].sum())
                if np.array_equal(new, keep):
                    break
                keep = new
            kept = float(n[keep].sum())
            err = math.sqrt(max(kept, 1.0)) / float(w[keep].sum())
            if kept >= BG_MIN_COUNTS:
                break
        k *= 2
    return level, err


MIN_FLANK_DA = 0.05  # the narrowest flank a range's background is read from


def flank_width_da(lo: float, hi: float) -> float:
    """The flank beside [lo, hi) its background is read from: the range's width, >= 0.05 Da."""
    return max(hi - lo, MIN_FLANK_DA)


def centre_span(edges: np.ndarray, x0: float, x1: float) -> slice:
    """The bins of ``edges`` (increasing) whose centres lie in [x0, x1), as
    ``np.searchsorted`` on every centre finds them, from the few centres near x0 and x1: a
    range's background and peak cost its own bins, not the spectrum's (a range at 10 kDa
    made ``analyze``'s 0.5 mDa spectrum 20 M bins, and each range's pass over them 16 s)."""
    n = len(edges) - 1
    ends = []
    for x in (x0, x1):  # the first centre >= x is bin j - 1 or j, j the first edge >= x
        j = int(np.searchsorted(edges, x))
        a, b = max(j - 1, 0), min(j + 1, n)
        c = 0.5 * (edges[a:b] + edges[a + 1 : b + 1])
        ends.append(a + int(np.searchsorted(c, x)))
    return slice(ends[0], max(ends[0], ends[1]))


def unranged_bins(edges: np.ndarray, lo_da: np.ndarray, hi_da: np.ndarray) -> np.ndarray:
    """Which bins of ``edges`` lie outside every range (their centres in none): the
    bins a range's background is read from."""
    free = np.ones(len(edges) - 1, bool)
    for lo, hi in zip(lo_da, hi_da, strict=True):
        free[centre_span(edges, float(lo), float(hi))] = False
    return free


def flank_background(counts: np.ndarray, edges: np.ndarray, lo: float, hi: float,
                     flank_da: float, free: np.ndarray | None = None) -> float:  # fmt: skip
    """Flat background per bin under [lo, hi): the level of :func:`local_background`."""
    return local_background(counts, edges, lo, hi, flank_da, free)[0]


def _apex(sub: np.ndarray, e: np.ndarray, i: int) -> float:
    """Vertex of a parabola fitted (least squares) to the bins above 70 % of the maximum
    around bin ``i``: steady where a 3-point vertex follows the counting noise of fine bins."""
    lvl = 0.7 * sub[i]
    a = i
    while a > 0 and sub[a - 1] >= lvl:
        a -= 1
    b = i
    while b < len(sub) - 1 and sub[b + 1] >= lvl:
        b += 1
    c = 0.5 * (e[a:b + 1] + e[a + 1:b + 2])
    if b - a >= 3:
        p2, p1, _ = np.polyfit(c - c.mean(), sub[a:b + 1], 2)
        if p2 < 0:
            v = c.mean() - p1 / (2 * p2)
            if c[0] <= v <= c[-1]:
                return float(v)
    return float(0.5 * (e[i] + e[i + 1]))


APEX_EDGE_BINS = 2
"""Bins beyond a range's edge that may not rise above a maximum at that edge (else the range
holds the flank of a peak outside it, not a peak)."""


MIN_CORE_SHARE = 0.3
"""Share of a range's net ions (those in the peak's window) that its peak holds within its
FWHM (0.76 for a Gaussian, 0.5-0.8 for LEAP peaks with their thermal tails) below which the
width is that of a noise spike on the top of a weak peak, not the peak's: it is measured
again on bins twice as wide."""


def apex_bin(s: np.ndarray, e: np.ndarray, lo: float, hi: float) -> int | None:
    """The bin of the maximum of the smoothed net spectrum ``s``/``e`` among the bins whose
    centres lie in the range [lo, hi) (the bin holding its centre when it is narrower than a
    bin), or None when the range holds no peak: nothing above the background, or a maximum at
    the range's edge with the spectrum higher just beyond it (the flank of a peak outside)."""
    c = 0.5 * (e[1:] + e[:-1])
    idx = np.flatnonzero((c >= lo) & (c < hi))
    if len(idx) == 0:
        idx = np.clip(np.searchsorted(e, [0.5 * (lo + hi)], side="right") - 1, 0, len(s) - 1)
    i = int(idx[np.argmax(s[idx])])
    if s[i] <= 0:
        return None
    left, right = s[max(i - APEX_EDGE_BINS, 0):i], s[i + 1:i + 1 + APEX_EDGE_BINS]
    if (i == idx[0] and np.any(left > s[i])) or (i == idx[-1] and np.any(right > s[i])):
        return None
    return i


def histogram_peak(counts: np.ndarray, edges: np.ndarray, lo: float, hi: float,
                   bounds: tuple[float, float], flank_da: float,
                   free: np.ndarray | None = None, min_net: float = 100.0) -> PeakRow | None:  # fmt: skip
    """Apex, counts, background, FWHM and FW10%M of the peak of range [lo, hi) on a fine
    spectrum with its flat flank background (:func:`flank_background`) subtracted: the apex is
    the maximum inside the range (:func:`apex_bin`), the widths (SG7-smoothed, as
    :func:`peak_widths`) are walked out from it on both sides within ``bounds`` (the range widened to the peak's tails, cut at its neighbours).
    None when the range holds no ions; apex and widths NaN when its net ions are fewer than
    ``min_net`` or 5 sqrt(background) (a width measured on a handful of ions over background
    is noise) or when it holds no peak of its own (only a flank of a peak beyond it)."""
    in_range = centre_span(edges, lo, hi)
    n = int(counts[in_range].sum())
    if n == 0:
        return None
    bg = flank_background(counts, edges, lo, hi, flank_da, free)
    bg_in = bg * (in_range.stop - in_range.start)  # centre_span: stop >= start
    win = centre_span(edges, *bounds)
    raw = counts[win].astype(np.float64) - bg
    e0 = edges[win.start : win.stop + 1] if len(raw) else edges[:0]
    nan = float("nan")
    none = PeakRow(nan, n, bg_in, nan, nan)  # no peak to measure
    if len(raw) < 5 or n - bg_in < max(min_net, 5.0 * math.sqrt(max(bg_in, 1.0))):
        return none
    bw = e0[1] - e0[0]

    def rebinned(k: int) -> tuple[np.ndarray, np.ndarray]:
        m = len(raw) // k
        return raw[: m * k].reshape(m, k).sum(1), e0[: m * k + 1 : k]

    # first bins of 1/5000 of the mass (as peak_shape), then re-binned so the FWHM spans
    # bins_per_fwhm bins (12-24: the maximum of finer, noisier bins reads high)
    k = max(1, min(int(0.5 * (bounds[0] + bounds[1]) / 5000.0 / bw), len(raw) // 8))
    sub, e = rebinned(k)
    sm = smooth(sub, 3)
    i = apex_bin(sm, e, lo, hi)
    if i is None:
        return none
    fwhm = full_width(sm, e, i, 0.5)
    for _ in range(2):
        if not np.isfinite(fwhm):
            break
        ce = 0.5 * (e[1:] + e[:-1])
        core = float(sub[np.abs(ce - ce[i]) < 0.5 * fwhm].sum())
        k_new = max(1, round(fwhm / bw / bins_per_fwhm(core)))
        if len(raw) // k_new < 5:
            break
        k = k_new
        sub, e = rebinned(k)
        i = apex_bin(sg_smooth(sub), e, lo, hi)
        if i is None:
            return none
        fwhm = full_width(sg_smooth(sub), e, i, 0.5)
    cw = 0.5 * (e0[1:] + e0[:-1])
    peak_net = raw[(cw >= lo) & (cw < hi)].sum()  # the range's net ions of this peak alone
    while True:
        sm = sg_smooth(sub)
        i = apex_bin(sm, e, lo, hi)
        if i is None:
            return none
        fwhm = full_width(sm, e, i, 0.5)
        core = raw[np.abs(cw - 0.5 * (e[i] + e[i + 1])) < 0.5 * fwhm].sum()
        if not np.isfinite(fwhm) or core >= MIN_CORE_SHARE * peak_net:
            break
        if len(raw) // (2 * k) < 8:  # still the width of a noise spike at the coarsest bins
            return none
        k *= 2  # the width of a noise spike on a weak peak's fine bins: coarser bins
        sub, e = rebinned(k)
    apex = min(max(_apex(sm, e, i), lo), hi)
    return PeakRow(apex, n, bg_in, fwhm, full_width(sm, e, i, 0.1))


def pattern_scale(mass_da: np.ndarray, abundance: np.ndarray, apex: float, apex_da: float,
                  counts: np.ndarray, edges: np.ndarray) -> float:
    """Counts per unit abundance of an ion's isotope pattern (``mass_da``, ``abundance``) on
    the spectrum ``counts``/``edges``: its measured apex over the abundance of the isotope at
    ``apex_da``, but no more than every isotope's own peak allows: 1.5 x (its highest bin
    within 2 bins + 3 sigma + 3), the 1.5 for where the bin edges fall on a peak a few bins
    wide (its highest bin then varies by several %). A pattern that does not fit (a range
    named for the wrong ion, whose measured peak is a minor isotope of the name) is so not
    drawn far above the data; one that fits is drawn through its apex."""
    j = int(np.argmin(np.abs(mass_da - apex_da)))  # the isotope whose peak was measured
    scale = apex / abundance[j]
    k = np.clip(np.searchsorted(edges, mass_da, side="right") - 1, 0, len(counts) - 1)
    seen = np.array([counts[max(i - 2, 0) : i + 3].max() for i in k], dtype=np.float64)
    allowed = 1.5 * (seen + 3 * np.sqrt(seen) + 3) / abundance
    return float(min(scale, allowed[abundance >= 0.01 * abundance.max()].min()))
