"""Connecting to a supply that is already on (audit D7), judged from what the fake received.

A supply found on above the configured ``limit_v`` (another program's run, a config with a
lower limit): the driver sent it the limit first, with the output live (a real supply clamps
to it: a 2000 V step), then could not ramp a setpoint it may not hold. Now the state is read
before anything is set; such a supply is switched off and the connect fails naming both
values, and no limit reaches a live output. One found on below the limit is adopted as
before and ramped within the rule."""

from __future__ import annotations

import pytest
from apt_daq.drivers.base import FakeClock, SafetyError
from fake_hv import FakeHv
from fake_hv_line import FakeLineHv
from test_hv_audit_faults import FAKES, LIMIT_V, MAX_STEP_V, RAMP_V_PER_S, assert_ramp_rule, driver


def _limit_lines(fake: FakeHv) -> list[tuple[float, str, bool]]:
    lim = "SOUR:VOLT:LIM " if isinstance(fake, FakeHv) and not isinstance(fake, FakeLineHv) \
        else "L "
    return [r for r in fake.received if r[1].upper().startswith(lim)]


@pytest.mark.parametrize("protocol", FAKES)
def test_a_supply_found_on_above_the_limit_is_switched_off_not_clamped(protocol: str) -> None:
    clock = FakeClock()
    fake = FAKES[protocol]("silent", clock)  # well-behaved: never told to misbehave
    fake.setpoint_v, fake.on = 8000.0, True
    hv = driver(fake, clock)
    with pytest.raises(SafetyError) as exc:
        hv.connect()
    fake.close()
    msg = str(exc.value)
    assert "8000" in msg and f"{LIMIT_V:g}" in msg and "switched off" in msg, msg
    assert not fake.on
    assert any(fake.is_off(line) for _, line, _ in fake.received)
    assert all(not on for _, _, on in _limit_lines(fake)), fake.received  # never to a live one
    assert [c for _, c, _ in fake.events() if c == "set"] == []  # no setpoint sent at all


@pytest.mark.parametrize("protocol", FAKES)
def test_a_supply_found_on_below_the_limit_is_ramped_from_where_it_is(protocol: str) -> None:
    clock = FakeClock()
    fake = FAKES[protocol]("silent", clock)  # well-behaved: never told to misbehave
    fake.setpoint_v, fake.on = 5000.0, True
    hv = driver(fake, clock)
    hv.connect()
    assert hv.setpoint_v == 5000.0
    hv.ramp_to(4000)
    hv.safe_off()
    fake.close()
    assert fake.setpoint_v == 0.0 or not fake.on
    sets = [v for _, c, v in fake.events() if c == "set"]
    assert sets[0] == pytest.approx(5000.0 - MAX_STEP_V)  # the first step from 5000, down
    assert_ramp_rule(fake, RAMP_V_PER_S, MAX_STEP_V)
