"""Fig. 1's hit-map heterogeneity on synthetic maps built with numpy: a uniform detector
whose ions arrive in multi-hit events (all ions of an event in one pixel) is homogeneous once
the compound-Poisson spread is removed, and a real spot still shows."""

from __future__ import annotations

import numpy as np
import pytest

from apt_daq.reproduce.fig1 import clumping, heterogeneity


def _map(rng, events: int, sizes: np.ndarray, probs: np.ndarray, spot: float = 0.0):
    """A 256 x 256 hit map of ``events`` uniform events of sizes drawn from ``probs``; with
    ``spot`` > 0 that share of the events lands in one 64 x 64 corner of the inner disc."""
    k = rng.choice(sizes, size=events, p=probs)
    ij = rng.integers(0, 256, size=(events, 2))
    in_spot = rng.random(events) < spot
    ij[in_spot] = rng.integers(96, 160, size=(int(in_spot.sum()), 2))
    counts = np.zeros((256, 256), np.int64)
    np.add.at(counts, (ij[:, 0], ij[:, 1]), k)
    ev = {str(s): int((k == s).sum()) for s in sizes}
    return counts, {"multihit": {"events_by_multiplicity": ev}}


def test_multi_hits_alone_are_not_heterogeneity():
    """50 000 events a map (a Fig. 1 step), eight maps: the plain Poisson correction reads
    the clumps as heterogeneity, sqrt((D - 1) / mean) ~ 0.05; with D none is left."""
    rng = np.random.default_rng(3)
    sizes, probs = np.array([1, 2, 3, 4]), np.array([0.84, 0.10, 0.04, 0.02])
    d_true = (sizes ** 2 * probs).sum() / (sizes * probs).sum()
    plain, corrected = [], []
    for _ in range(8):
        counts, summary = _map(rng, 50_000, sizes, probs)
        assert clumping(summary) == pytest.approx(d_true, rel=0.03)
        plain.append(heterogeneity(counts))
        corrected.append(heterogeneity(counts, dispersion=clumping(summary)))
    assert 0.035 < np.mean(plain) < 0.065
    assert np.mean(corrected) < 0.015
    spotty, s2 = _map(rng, 50_000, sizes, probs, spot=0.05)
    assert heterogeneity(spotty, dispersion=clumping(s2)) > 0.1


def test_no_multi_hit_statistics_means_plain_poisson():
    assert clumping({}) == 1.0 and clumping({"multihit": {"available": False}}) == 1.0
