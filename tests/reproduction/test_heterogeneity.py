"""Fig. 1's hit-map heterogeneity on synthetic maps built with numpy: a uniform detector
whose ions arrive in multi-hit events (all ions of an event in one pixel) is homogeneous once
the compound-Poisson spread is removed, and a real spot still shows."""

from __future__ import annotations

import math

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


def test_trend_t_against_scipy_and_a_flat_null():
    """The slope and its t as scipy.stats.linregress gives them (slope / stderr), on three
    specimens' four steps; a flat trend with the same scatter gives |t| ~ N(0, 1), so t >= 2
    passes it ~2 % of the time (student t, 10 dof: 3.7 %), a trend of 4 standard errors ~98 %."""
    from scipy.stats import linregress

    from apt_daq.reproduce.fig1 import trend_t

    rng = np.random.default_rng(11)
    e = np.tile([5.0, 10.0, 15.0, 20.0], 3)
    y = 0.008 * e + rng.normal(0, 0.03, e.size)
    b, t = trend_t(list(zip(e, y, strict=True)))
    ref = linregress(e, y)
    assert b == pytest.approx(ref.slope, rel=1e-12)
    assert t == pytest.approx(ref.slope / ref.stderr, rel=1e-12)
    flat = [trend_t(list(zip(e, rng.normal(0.05, 0.03, e.size), strict=True)))[1]
            for _ in range(2000)]
    assert 0.01 < np.mean(np.array(flat) >= 2.0) < 0.07
    assert trend_t([(5.0, 0.0), (10.0, 0.0), (20.0, 0.0)]) == (0.0, 0.0)  # the null model's
    assert math.isnan(trend_t([(5.0, 0.1), (5.0, 0.2), (5.0, 0.3)])[1])
