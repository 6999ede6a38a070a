"""Random numbers and sampling for the numba kernels of the virtual LEAP: a counter-based
generator (splitmix64 of (seed, i, j): the same draw whatever thread or block order asks for
it), Poisson event pulses, inverse-CDF and isotope sampling."""

from __future__ import annotations

import math

import numpy as np
from numba import njit

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


@njit(cache=True, inline="always")
def counter_uniform(seed: np.uint64, i: int, j: int) -> float:
    """Uniform in [0, 1) from a counter-based generator: SplitMix64 of (seed, i, j).

    Deterministic for (seed, ion index, draw), needs no state or arrays, and is the same in
    numpy (tests hold a twin): the kernels draw what they need where they need it."""
    z = seed + np.uint64(i * 16 + j + 1) * _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    z = z ^ (z >> np.uint64(31))
    return float(z >> np.uint64(11)) * (1.0 / 9007199254740992.0)


@njit(cache=True)
def event_pulses(u: np.ndarray, rate_per_pulse: float, n_pulses: int) -> np.ndarray:
    """Pulse index of each evaporation event: a Poisson process in pulse time.

    Gaps are exponential (-ln u / rate); the event lands on pulse floor(t). Empty pulses are
    skipped, never visited. Returns the pulses of the events before ``n_pulses`` (the caller
    provides enough uniforms; it checks that the last one overran the block).
    """
    out = np.empty(u.shape[0], np.int64)
    t = 0.0
    k = 0
    for i in range(u.shape[0]):
        t += -math.log(1.0 - u[i]) / rate_per_pulse
        if t >= n_pulses:
            break
        out[k] = int(t)
        k += 1
    return out[:k]


@njit(cache=True)
def sample_cdf(u: float, x: np.ndarray, cdf: np.ndarray) -> float:
    """Inverse of a tabulated CDF by binary search and linear interpolation."""
    lo, hi = 0, cdf.shape[0] - 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if cdf[mid] <= u:
            lo = mid
        else:
            hi = mid
    d = cdf[hi] - cdf[lo]
    f = (u - cdf[lo]) / d if d > 0 else 0.0
    return x[lo] + f * (x[hi] - x[lo])


@njit(cache=True)
def sample_isotope(u: float, s: int, iso_start: np.ndarray, iso_mass: np.ndarray,
                   iso_cdf: np.ndarray) -> float:
    a, b = iso_start[s], iso_start[s + 1]
    for j in range(a, b):
        if u <= iso_cdf[j]:
            return iso_mass[j]
    return iso_mass[b - 1]


@njit(cache=True, nogil=True)
def event_pulses_seeded(seed: np.uint64, rate_per_pulse: float, n_pulses: int) -> np.ndarray:
    """:func:`event_pulses` with uniforms from the counter generator (``seed``, k, 15)."""
    mean = rate_per_pulse * n_pulses
    cap = int(mean + 10.0 * math.sqrt(mean) + 32.0)
    out = np.empty(cap, np.int64)
    t = 0.0
    k = 0
    while True:
        t += -math.log(1.0 - counter_uniform(seed, k, 15)) / rate_per_pulse
        if t >= n_pulses:
            break
        if k == out.shape[0]:
            grown = np.empty(2 * k, np.int64)
            grown[:k] = out
            out = grown
        out[k] = int(t)
        k += 1
    return out[:k]
