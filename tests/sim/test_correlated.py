"""Correlated evaporation (sim.correlated): neighbours that leave on the same pulse raise the
multi-hit share, and the detector's dead time and dead zone remove the close-in-time-and-space
pairs among them. Everything measured from the decoded hit stream (pulse numbers, TOF,
detector x, y) with apt_daq.analysis.multihit, as an analysis of a real run would."""

from __future__ import annotations

import numpy as np
import pytest
from apt_daq.sim.correlated import CORRELATED, CorrelatedParams, mean_chain_size

from apt_daq.analysis.multihit import multihit_stats
from apt_daq.pipeline.decode import decode
from apt_daq.tof import mass_to_charge
from tests.sim.helpers import hold_rate, make_leap

_RUNS: dict = {}


def _hits(share: float, ions: int = 60_000):
    """Decoded hits and m/n of a rate-held coated NMC811 run at 5 pJ, seed 1."""
    if share not in _RUNS:
        leap = make_leap("nmc811-cr", seed=1)
        leap.correlated = CorrelatedParams(share=share)
        held = hold_rate(leap, 5.0, ions)
        hits, _, _ = decode(held.cat("raw"), leap.instrument)
        m = mass_to_charge(hits, leap.instrument.t0_ns, leap.instrument.flight_path_mm)
        _RUNS[share] = (leap, held, hits, m)
    return _RUNS[share]


def _pairs(hits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """|dt| (ns) and detector distance (mm) of every pair of hits on one pulse."""
    p = hits["pulse"].astype(np.int64)
    starts = np.flatnonzero(np.r_[True, p[1:] != p[:-1]])
    ends = np.r_[starts[1:], len(p)]
    dts, ds = [], []
    for a, b in zip(starts, ends, strict=True):
        if b - a < 2:
            continue
        i, j = np.triu_indices(b - a, 1)
        h = hits[a:b]
        dts.append(np.abs(h["tof"][i] - h["tof"][j]))
        ds.append(np.hypot(h["det_x"][i] - h["det_x"][j], h["det_y"][i] - h["det_y"][j]))
    return np.concatenate(dts), np.concatenate(ds)


def test_default_is_off_and_the_chain_keeps_the_evaporated_atoms():
    assert CORRELATED.share == 0.0 and mean_chain_size(CORRELATED) == 1.0
    assert mean_chain_size(CorrelatedParams(share=0.5, max_neighbours=3)) == 1.875
    # the first events' rate is divided by the chain's size: the same field holds the rate
    f0 = np.mean(_hits(0.0)[1].fields)
    f3 = np.mean(_hits(0.3)[1].fields)
    assert f3 == pytest.approx(f0, abs=0.05)


def test_correlated_neighbours_raise_the_multi_hit_share():
    """Without the model, multi-hits are Poisson coincidences and dissociation pairs
    (~0.8 % of ions); with a neighbour share s the share of ions in multi-hit events grows
    to ~s (minus the pairs the dead zone removes)."""
    base = multihit_stats(_hits(0.0)[2]["pulse"], _hits(0.0)[3])
    corr = multihit_stats(_hits(0.3)[2]["pulse"], _hits(0.3)[3])
    assert base.multi_ion_fraction < 0.015
    assert 0.25 < corr.multi_ion_fraction < 0.36
    assert corr.events[3:].sum() > 0  # chains of three and more


def test_dead_zone_removes_close_pairs_that_arrive_together():
    """Neighbours land ~0.4 mm apart (0.3 nm x L / (xi R)). Pairs of different m/n arrive
    hundreds of ns apart and are both recorded, close on the detector; pairs that arrive within
    the dead time (same m/n) are recorded only beyond the dead zone: a hole in the pair-distance
    distribution of near-coincident pairs, and fewer of them than the neighbours make."""
    leap, _, hits, _ = _hits(0.3)
    dt, d = _pairs(hits)
    dead_t, dead_d = leap.instrument.dead_time_ns, leap.instrument.dead_zone_mm
    near = dt < dead_t
    assert np.count_nonzero(~near & (d < 1.0)) > 1000  # close pairs where time separates them
    assert np.count_nonzero(near & (d < dead_d)) == 0  # none where it does not
    # the distance distribution of all pairs below 2 mm: the near-coincident share there is
    # nil, against its share of all pairs (a pile-up deficit of same-m/n pairs)
    share_near = np.count_nonzero(near) / len(dt)
    assert share_near > 0.0 and np.count_nonzero(near & (d < 2.0)) == 0
