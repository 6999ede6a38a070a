"""Mass spectrum: a fixed-width histogram of m/n, serial and threaded kernels."""

from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(cache=True, nogil=True)
def hist_kernel(values, lo, inv_width, counts):
    """Add ``values`` into ``counts`` (bins of width 1/inv_width from ``lo``); out of range dropped."""
    nb = counts.shape[0]
    for i in range(values.shape[0]):
        v = values[i]
        if v >= lo:
            q = (v - lo) * inv_width  # compared before the conversion: 1e30 would not fit
            if q < nb:
                counts[int(q)] += 1
    return counts


@njit(cache=True, nogil=True)
def count_kernel(index, counts):
    """``counts[j] += 1`` for each ``index`` value j in [0, len(counts)) (a range index; -1,
    unranged, and anything beyond are dropped): ``np.bincount`` without its temporaries."""
    nb = counts.shape[0]
    for i in range(index.shape[0]):
        j = index[i]
        if j >= 0 and j < nb:
            counts[j] += 1
    return counts


@njit(cache=True, nogil=True)
def hist2d_kernel(x, y, edges, counts):
    """``counts += np.histogram2d(x, y, [edges, edges])[0]`` for increasing ``edges`` (the
    same bins on both axes, as numpy assigns them: edges[j] <= v < edges[j + 1], the last
    edge in the last bin, outside and NaN dropped), without numpy's sorted searches: the
    bin is guessed from the mean width and corrected against the edges themselves."""
    nb = edges.shape[0] - 1
    e0 = edges[0]
    e1 = edges[nb]
    inv = nb / (e1 - e0)
    for i in range(x.shape[0]):
        u = np.float64(x[i])
        v = np.float64(y[i])
        if not (u >= e0 and u <= e1 and v >= e0 and v <= e1):
            continue
        a = _bin_of(u, edges, e0, inv, nb)
        b = _bin_of(v, edges, e0, inv, nb)
        counts[a, b] += 1
    return counts


@njit(cache=True, nogil=True, inline="always")
def _bin_of(v, edges, e0, inv, nb):
    """The bin j of ``v`` (within the edges): edges[j] <= v < edges[j + 1], the last edge in
    the last bin."""
    g = min(max(int((v - e0) * inv), 0), nb - 1)
    while g > 0 and edges[g] > v:
        g -= 1
    while g < nb - 1 and edges[g + 1] <= v:
        g += 1
    return g


@njit(cache=True, parallel=True)
def hist_kernel_parallel(values, lo, inv_width, nb, n_parts):
    """The same histogram with ``n_parts`` private histograms summed at the end."""
    n = values.shape[0]
    part = np.zeros((n_parts, nb), dtype=np.int64)
    step = (n + n_parts - 1) // n_parts
    for p in prange(n_parts):
        a = p * step
        b = min(n, a + step)
        for i in range(a, b):
            v = values[i]
            if v >= lo:
                k = int((v - lo) * inv_width)
                if k < nb:
                    part[p, k] += 1
    return part.sum(axis=0)


class MassHistogram:
    """A streaming mass spectrum: ``add(mass)`` chunk by chunk; ``counts`` and ``edges`` (Da)."""

    def __init__(self, bin_da: float = 0.01, max_da: float = 250.0, min_da: float = 0.0):
        self.bin_da = float(bin_da)
        self.min_da = float(min_da)
        nb = round((max_da - min_da) / bin_da)
        self.counts = np.zeros(nb, dtype=np.int64)
        self.edges = min_da + bin_da * np.arange(nb + 1)

    def add(self, mass: np.ndarray) -> None:
        hist_kernel(np.asarray(mass), self.min_da, 1.0 / self.bin_da, self.counts)

    def cover(self, top_da: float, cap_da: float, step_da: float = 50.0) -> None:
        """Grow the histogram (new bins empty) so it reaches ``top_da``, rounded up to a
        multiple of ``step_da``, never past ``cap_da`` (non-finite ``top_da``: no change)."""
        if not np.isfinite(top_da) or top_da < self.edges[-1]:
            return
        want = min(cap_da, self.min_da + step_da * (np.floor((top_da - self.min_da) / step_da)
                                                    + 1.0))
        nb = round((want - self.min_da) / self.bin_da)
        if nb <= len(self.counts):
            return
        self.counts = np.concatenate([self.counts, np.zeros(nb - len(self.counts), np.int64)])
        self.edges = self.min_da + self.bin_da * np.arange(nb + 1)

    @property
    def centres(self) -> np.ndarray:
        return 0.5 * (self.edges[1:] + self.edges[:-1])


def mass_histogram(
    mass: np.ndarray, bin_da: float = 0.01, max_da: float = 250.0, min_da: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """(counts int64, edges Da) of ``mass``."""
    h = MassHistogram(bin_da, max_da, min_da)
    h.add(mass)
    return h.counts, h.edges
