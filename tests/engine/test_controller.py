"""The detection-rate PI controller on a toy evaporation plant, rate = r0 exp(s (V - V0)/V0).

The plant has the exponential field sensitivity of field evaporation; the engine's closed loop
on the real simulator is tested in test_engine.py.
"""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from apt_daq.config import FeedbackConfig
from apt_daq.run import RateController

TARGET = 0.005


def plant(v, v0, s):
    return TARGET * math.exp(s * (v - v0) / v0)


def simulate(ctl, v, v0_of_t, ticks, s, dt=10.0, noise=0.0, rng=None):
    rates, vs = [], []
    for k in range(ticks):
        lam = min(plant(v, v0_of_t(k), s), 1.0)
        rate = lam if not noise else rng.poisson(lam * 1e6) / 1e6
        v = ctl.update(rate, dt, v)
        rates.append(lam)
        vs.append(v)
    return np.array(rates), np.array(vs)


def make(limit=12000.0, ramp=200.0):
    return RateController(TARGET, FeedbackConfig(), limit, ramp)


SENSITIVITY = pytest.mark.parametrize("s", [20.0, 100.0])  # d ln(rate) / d ln(V)


@SENSITIVITY
def test_step_response_settles_within_10_percent(s):
    rng = np.random.default_rng(1)
    rates, _ = simulate(make(), 3000.0, lambda k: 5000.0, 200, s, noise=1, rng=rng)
    settled = rates[-60:]
    assert np.all(np.abs(settled / TARGET - 1) < 0.10)


@SENSITIVITY
def test_blunting_tip_tracked(s):
    # V0 rises 1 V per tick (10 s): the tip blunts; the rate must stay on target
    rates, vs = simulate(make(), 5000.0, lambda k: 5000.0 + 1.0 * k, 800, s)
    assert np.all(np.abs(rates[100:] / TARGET - 1) < 0.10)
    assert vs[-1] > vs[100] + 500


@SENSITIVITY
def test_laser_energy_step_recovers(s):
    # a laser energy step lowers the field needed by 5 % at tick 100
    rates, _ = simulate(make(), 5000.0, lambda k: 5000.0 if k < 100 else 4750.0, 400, s)
    assert np.all(np.abs(rates[300:] / TARGET - 1) < 0.10)


@settings(max_examples=300, deadline=None)
@given(rate=st.floats(0, 1), v=st.floats(0, 12000), dt=st.floats(0.01, 100),
       limit=st.floats(1000, 12000), ramp=st.floats(1, 1000))
def test_output_within_limit_ramp_and_step(rate, v, dt, limit, ramp):
    ctl = make(limit, ramp)
    v = min(v, limit)
    for _ in range(3):
        nxt = ctl.update(rate, dt, v)
        assert 0.0 <= nxt <= limit
        assert abs(nxt - v) <= min(ramp * dt, FeedbackConfig().max_step_v) + 1e-6
        v = nxt


def test_no_windup_at_the_limit():
    # stuck at the HV limit with no ions for a long time, the controller must come off the
    # limit as soon as the rate overshoots (no integral state to unwind)
    ctl = make(limit=6000.0)
    v = 6000.0
    for _ in range(200):
        v = ctl.update(0.0, 10.0, v)
    assert v == 6000.0
    v2 = ctl.update(TARGET * 5, 10.0, v)
    assert v2 < v
