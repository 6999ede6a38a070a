"""Li's own barrier and departure time: an exposed Li atom leaves after a thermally activated
wait at its own rate k_Li(T(t)) over the cooling (sim.physics.li_departure), not in step with
the matrix's departure-time distribution; its barrier is positive at the operating fields and
below every other element's, so Li never sets the pace."""

from __future__ import annotations

import math

import numpy as np
import pytest
from apt_daq.sim import physics
from apt_daq.sim.species import ELEMENTS

from tests.sim.helpers import make_leap, settle_voltage


@pytest.mark.parametrize("decay_ns", [math.inf, 2.0])
def test_li_wait_follows_the_survival_law(decay_ns):
    """P(wait > s | exposed at t0) = exp(-(I(t0 + s) - I(t0))), I the integrated rate: the
    inverse-table sampler against the survival function written out (k(t) = k0 exp(-t / d))."""
    k0 = 3.0  # per ns
    t = np.concatenate([[0.0], np.geomspace(1e-4, 200.0, 4000)])
    cum = k0 * (t if decay_ns == math.inf else decay_ns * (1 - np.exp(-t / decay_ns)))
    base = 1e-3
    n, t0 = 20_000, 0.5
    rng = np.random.default_rng(1)
    u, u2 = rng.random(n), rng.random(n)
    got = np.array([physics.li_departure(t0, a, b, t, cum, base, 10_000.0)
                    for a, b in zip(u, u2, strict=True)]) - t0
    for s in (0.05, 0.2, 0.5, 1.0, 3.0):
        i_s = k0 * (s if decay_ns == math.inf else
                    decay_ns * (math.exp(-t0 / decay_ns) - math.exp(-(t0 + s) / decay_ns)))
        want = math.exp(-i_s)
        emp = float(np.mean(got > s))
        assert abs(emp - want) < 4 * math.sqrt(want * (1 - want) / n) + 2e-3, (s, emp, want)


def _settled(spec: str, e: float):
    leap = make_leap(spec, seed=3)
    leap.laser.set_energy(e)
    ph = leap._physics(settle_voltage(leap))
    return leap, ph


@pytest.mark.parametrize(("spec", "energies"), [("nmc811-cr", (5.0, 10.0, 20.0, 35.0, 50.0)),
                                                ("lmo-cr", (1.0, 5.0, 20.0))])
def test_li_barrier_positive_and_lowest(spec, energies):
    """Q_Li(F) > 0 at every settled field (it was 0 above 17 V/nm: Li then had no barrier at
    the operating field) and below the other elements' barriers (it never sets the pace)."""
    for e in energies:
        leap, _ = _settled(spec, e)
        f = leap.state.field_v_per_nm
        q = {el: float(physics.barrier_ev(np.array([p.q0_ev]), np.array([p.fe_v_per_nm]), f)[0])
             for el, p in ELEMENTS.items()
             if leap.tip.compositions[leap.tip.matrix_phase].get(el, 0) > 0}
        assert q["Li"] > 0.0, (e, f)
        assert q["Li"] < min(v for el, v in q.items() if el != "Li"), (e, q)


def test_li_departure_lags_the_matrix_more_at_high_energy():
    """At 5 pJ (21.3 V/nm) Li's barrier is ~0.04 eV: it leaves as soon as it is exposed, in
    step with the matrix. At 50 pJ (13 V/nm, ~0.35 eV) its own wait shows: the median Li+
    departure lags the O2+ one by over 15 % (the Li+ tail grows with the laser energy)."""
    lag = []
    for e in (5.0, 50.0):
        leap, ph = _settled("nmc811-cr", e)
        ev, _ = leap._events(np.arange(40_000, dtype=np.int64), ph, np.uint64(12345))
        sp, t = ev[1], ev[6]
        li = t[sp == leap.tip.species.index("Li+")]
        o2 = t[sp == leap.tip.species.index("O2+")]
        assert len(li) > 5000 and len(o2) > 5000
        lag.append(float(np.median(li) / np.median(o2)))
    assert abs(lag[0] - 1.0) < 0.05, lag
    assert lag[1] > 1.15, lag
