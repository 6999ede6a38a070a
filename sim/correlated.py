"""Correlated evaporation: neighbours that leave on the same pulse (docs/physics.md,
"correlated evaporation").

When an atom field-evaporates, its neighbours lose part of their screening and the local field
on them rises; on a laser pulse they are still hot, so a neighbour may leave on the same pulse
(many multiple events hold ions from adjacent sites: Thuvander et al., Ultramicroscopy 111,
604, 2011). Model: after each event, a neighbour at ``spacing_nm`` from the last one (random direction on the surface) leaves with
probability ``share``, then its neighbour with the same probability, up to ``max_neighbours``
(a geometric chain); each draws its own channel of the same phase (so molecular ions and their
dissociation pairs stay as they are), leaves at the parent's departure time, and recedes the
surface. On the detector the chain lands within ~L / (xi R) x spacing (~0.5 mm): two of its
ions with the same m/n arrive within the dead time and dead zone and the later one is lost
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


@dataclass(frozen=True)
class CorrelatedParams:
    """Correlated evaporation of neighbours on one pulse (docs/physics.md)."""

    # probability that the next neighbour leaves on the same pulse; 0 (off) until a measured
    # multi-hit fraction of a laser-pulsed oxide is cited (docs/physics.md)
    share: float = 0.0
    spacing_nm: float = 0.3  # distance between neighbours on the surface (~ a cation-O bond x 1.5)
    max_neighbours: int = 3  # chain length cap (DRAWS * max_neighbours <= 16 counter draws)


CORRELATED = CorrelatedParams()


def mean_chain_size(p: CorrelatedParams) -> float:
    """Expected events per first event: 1 + share + share^2 + ... + share^max."""
    return float(sum(p.share ** j for j in range(p.max_neighbours + 1)))


@njit(cache=True, inline="always")
def emit_neighbours(seed: np.uint64, i: int, share: float, max_n: int, spacing_nm: float,
                    row: int, pulse: int, x: float, y: float, z: float, td: float,
                    ch_cdf: np.ndarray, ch_a: np.ndarray, ch_b: np.ndarray,
                    ch_neutral: np.ndarray, ch_atoms: np.ndarray, n_ch: np.ndarray,
                    iso_start: np.ndarray, iso_mass: np.ndarray, iso_cdf: np.ndarray,
                    o_pulse: np.ndarray, o_sp: np.ndarray, o_mass: np.ndarray,
                    o_x: np.ndarray, o_y: np.ndarray, o_z: np.ndarray, o_t: np.ndarray,
                    o_neu: np.ndarray, o_tof: np.ndarray, k: int) -> tuple[int, int]:
    """The neighbours event ``i`` takes along on its pulse, written from row ``k`` of the
    outputs. Draws come from ``seed ^ STREAM`` (the event's own draws are untouched, so a run
    with ``share = 0`` is the run without the model). Returns (next row, atoms evaporated)."""
    s2 = seed ^ STREAM
    nat = 0
    cx = x
    cy = y
    for j in range(max_n):
        b0 = DRAWS * j
        if counter_uniform(s2, i, b0) >= share:
            break
        ph = 2.0 * math.pi * counter_uniform(s2, i, b0 + 1)
        cx += spacing_nm * math.cos(ph)
        cy += spacing_nm * math.sin(ph)
        m = n_ch[row]
        c = 0
        uc = counter_uniform(s2, i, b0 + 2)
        while c < m - 1 and ch_cdf[row, c] < uc:
            c += 1
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
