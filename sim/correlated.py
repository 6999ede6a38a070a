"""Correlated evaporation: neighbours that leave on the same pulse (docs/physics.md,
"correlated evaporation").

When an atom field-evaporates, its neighbours lose part of their screening and the local field
on them rises; on a laser pulse they are still hot, so a neighbour may leave on the same pulse
(many multiple events hold ions from adjacent sites: Thuvander et al., Ultramicroscopy 111,
604, 2011). Model: after each event, a neighbour at ``spacing_nm`` from the last one (random direction on the surface) leaves with
probability ``share``, then its neighbour with the same probability, up to ``max_neighbours``
(a geometric chain); each draws its own channel of the same phase (so molecular ions and their
dissociation pairs stay as they are), of the other sublattice where the phase has two
(:func:`draw_unlike`), leaves at the parent's departure time (a Li neighbour then waits its
own thermally activated time, as any Li), and recedes the surface. On the detector the chain
lands within ~L / (xi R) x spacing (~0.5 mm): two of its ions with the same m/n arrive within
the dead time and dead zone and the later one is lost
(:func:`apt_daq.sim.detector.detect_mask`), the pile-up of Meisenkothen et al. (Appl. Surf.
Sci.) and Thuvander et al. (2011; Microsc. Microanal. 2019).

The instrument divides the Poisson rate of first events by the chain's mean size
(:func:`mean_chain_size`), so the atoms evaporated per pulse at a given field do not change.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from apt_daq.sim.sampling import counter_uniform, sample_isotope
from numba import njit

STREAM = np.uint64(0xD1B54A32D192ED03)  # the neighbours' generator: seed ^ STREAM
DRAWS = 5  # counter draws per neighbour (direction, channel, two isotopes, the chain)
LI_STREAM = np.uint64(0x9E6C63D0676A9A99)  # a Li neighbour's own wait: seed ^ LI_STREAM


@dataclass(frozen=True)
class CorrelatedParams:
    """Correlated evaporation of neighbours on one pulse (docs/physics.md)."""

    # probability that the next neighbour leaves on the same pulse, for every phase; None:
    # each phase's own (``correlated_share`` of the specimen YAML's phase and coating)
    share: float | None = None
    spacing_nm: float = 0.3  # distance between neighbours on the surface (~ a cation-O bond x 1.5)
    max_neighbours: int = 3  # chain length cap (DRAWS * max_neighbours <= 16 counter draws)

    def __post_init__(self) -> None:
        # the neighbours' draws (DRAWS a neighbour) and the Li waits and breaks of their
        # products (seed ^ LI_STREAM, j <= 14) must stay within an event's 16 counter draws
        if not 0 <= self.max_neighbours <= 3:
            raise ValueError(f"max_neighbours must be 0-3, got {self.max_neighbours}")
        if self.share is not None and not 0.0 <= self.share < 1.0:
            raise ValueError(f"share must be in [0, 1), got {self.share}")


CORRELATED = CorrelatedParams()


def mean_chain_size(share: float, max_neighbours: int) -> float:
    """Expected events per first event: 1 + share + share^2 + ... + share^max."""
    return float(sum(share ** j for j in range(max_neighbours + 1)))


def phase_shares(p: CorrelatedParams, specimen_shares: list[float]) -> np.ndarray:
    """The neighbour share of each phase: ``p.share`` for all if set, else the specimen's."""
    if p.share is not None:
        return np.full(len(specimen_shares), p.share, np.float64)
    return np.asarray(specimen_shares, np.float64)


@njit(cache=True)
def sublattice_tables(ch_cdf: np.ndarray, ch_a: np.ndarray, ch_b: np.ndarray,
                      n_ch: np.ndarray, anion: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per channel table row: which channels take only anion-sublattice atoms (O+, O2+, ...;
    ``anion[s]`` 1 for such a species) and their summed weight."""
    rows, cols = ch_cdf.shape
    an_c = np.zeros((rows, cols), np.uint8)
    w_an = np.zeros(rows)
    for row in range(rows):
        for c in range(n_ch[row]):
            a = ch_a[row, c]
            b = ch_b[row, c]
            if a >= 0 and anion[a] == 1 and (b < 0 or anion[b] == 1):
                an_c[row, c] = 1
                w_an[row] += ch_cdf[row, c] - (ch_cdf[row, c - 1] if c > 0 else 0.0)
    return an_c, w_an


@njit(cache=True)
def draw_unlike(u: float, row: int, m: int, after_anion: bool, ch_cdf: np.ndarray,
                an_c: np.ndarray, w_an: np.ndarray) -> int:
    """A channel of ``row`` for the neighbour of an atom of the anion (``after_anion``) or
    cation sublattice (``an_c``, ``w_an``: :func:`sublattice_tables`). In an ionic lattice
    nearest neighbours are of the other sublattice: the neighbour switches sublattice with
    probability ``min(1, w_other / w_own)`` (w: the sublattices' channel weights), the most
    alternation that keeps every position of a chain at the phase's own mix, so the chains
    change no composition. A phase with one kind of channel (a metal) draws from all."""
    wa = w_an[row]
    wc = ch_cdf[row, m - 1] - wa
    own, other = (wa, wc) if after_anion else (wc, wa)
    want = after_anion
    if own > 0.0 and other > 0.0:
        p = min(1.0, other / own)
        if u < p:
            want = not after_anion
            u = u / p
        else:
            u = (u - p) / (1.0 - p)
    elif other > 0.0:
        want = not after_anion
    target = u * (wa if want else wc)
    acc = 0.0
    last = 0
    prev = 0.0
    for c in range(m):
        w = ch_cdf[row, c] - prev
        prev = ch_cdf[row, c]
        if (an_c[row, c] == 1) == want:
            acc += w
            last = c
            if acc >= target:
                return c
    return last


@njit(cache=True)
def emit_neighbours(seed: np.uint64, i: int, share: float, max_n: int, spacing_nm: float,
                    row: int, parent_anion: bool, an_c: np.ndarray, w_an: np.ndarray,
                    pulse: int, x: float, y: float, z: float, td: float,
                    ch_cdf: np.ndarray, ch_a: np.ndarray, ch_b: np.ndarray,
                    ch_neutral: np.ndarray, ch_atoms: np.ndarray, n_ch: np.ndarray,
                    iso_start: np.ndarray, iso_mass: np.ndarray, iso_cdf: np.ndarray,
                    o_pulse: np.ndarray, o_sp: np.ndarray, o_mass: np.ndarray,
                    o_x: np.ndarray, o_y: np.ndarray, o_z: np.ndarray, o_t: np.ndarray,
                    o_neu: np.ndarray, o_tof: np.ndarray, k: int) -> tuple[int, int]:
    """The neighbours event ``i`` takes along on its pulse, written from row ``k`` of the
    outputs; each is of the other sublattice than the atom before it (``parent_anion``: the
    event's own products are anions only; ``an_c``, ``w_an``: :func:`sublattice_tables`).
    Draws come from ``seed ^ STREAM`` (the event's own draws are untouched, so a run with
    ``share = 0`` is the run without the model). Returns (next row, atoms evaporated)."""
    s2 = seed ^ STREAM
    nat = 0
    cx = x
    cy = y
    m = n_ch[row]
    prev_anion = parent_anion
    for j in range(max_n):
        b0 = DRAWS * j
        if counter_uniform(s2, i, b0) >= share:
            break
        ph = 2.0 * math.pi * counter_uniform(s2, i, b0 + 1)
        cx += spacing_nm * math.cos(ph)
        cy += spacing_nm * math.sin(ph)
        c = draw_unlike(counter_uniform(s2, i, b0 + 2), row, m, prev_anion, ch_cdf, an_c, w_an)
        prev_anion = an_c[row, c] == 1
        for prod in range(2):
            s = ch_a[row, c] if prod == 0 else ch_b[row, c]
            if s < 0:
                continue
            o_pulse[k] = pulse
            o_sp[k] = s
            o_mass[k] = sample_isotope(counter_uniform(s2, i, b0 + 3 + prod), s, iso_start,
                                       iso_mass, iso_cdf)
            o_tof[k] = o_mass[k]
            o_x[k] = cx
            o_y[k] = cy
            o_z[k] = z
            o_t[k] = td
            o_neu[k] = ch_neutral[row, c]
            k += 1
        nat += ch_atoms[row, c]
    return k, nat
