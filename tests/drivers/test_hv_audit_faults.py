"""HV driver faults an independent safety audit found, judged from what the fake supply
RECEIVED (tests/drivers/fake_hv.py over SCPI, fake_hv_line.py over the serial line protocol),
on both backends:

- D4: a stall between the driver's decision to step and the bytes leaving shortened the gap
  the supply saw (50 V in 29 ms at 500 V/s): the step's time was taken before the send.
"""

from __future__ import annotations

import time

import pytest
from apt_daq.drivers.base import WallClock
from apt_daq.drivers.hv import ScpiHv, SerialHv
from apt_daq.drivers.scpi import make_transport
from apt_daq.drivers.serial_line import SerialTransport
from fake_hv import FakeHv
from fake_hv_line import FakeLineHv

LIMIT_V, RAMP_V_PER_S, STEP_S = 6000.0, 200.0, 0.5
MAX_STEP_V = RAMP_V_PER_S * STEP_S
EPS_V = 1e-6  # float rounding only: the setpoints are on the wire's 1 mV grid

FAKES = {"scpi": FakeHv, "line": FakeLineHv}


def driver(fake: FakeHv, clock, *, ramp_v_per_s: float = RAMP_V_PER_S,
           ramp_step_s: float = STEP_S, timeout_s: float = 2.0) -> ScpiHv | SerialHv:
    kw = dict(limit_v=LIMIT_V, ramp_v_per_s=ramp_v_per_s, ramp_step_s=ramp_step_s,
              retries=1, reconnect_deadline_s=1.0, clock=clock)
    if isinstance(fake, FakeLineHv):
        return SerialHv(SerialTransport(fake.resource, timeout_s=timeout_s), fake.resource, **kw)
    return ScpiHv(make_transport(fake.resource, timeout_s, "socket"), fake.resource, **kw)


def live_steps(fake: FakeHv) -> list[tuple[float, float, float]]:
    """(dt since the previous setpoint or output on, |dV|, new V) of every setpoint the supply
    received while its output was on, from the received log."""
    out, v, on, t_ref = [], 0.0, False, 0.0
    for t, kind, new in fake.events():
        if kind == "on":
            if not on:
                assert v == 0.0, f"output went on at a {v} V setpoint"
                t_ref = t
            on = True
        elif kind == "off":
            on = False
        else:
            if on:
                out.append((t - t_ref, abs(new - v), new))
                t_ref = t
            v = new
    return out


def assert_ramp_rule(fake: FakeHv, ramp_v_per_s: float, max_step_v: float) -> None:
    for dt, dv, new in live_steps(fake):
        assert dv <= max_step_v + EPS_V, f"step of {dv} V to {new} V exceeds max_step_v"
        assert dv <= ramp_v_per_s * dt * (1 + 1e-9) + EPS_V, (
            f"step of {dv} V to {new} V in {dt * 1e3:.1f} ms exceeds {ramp_v_per_s} V/s")


def after_fault(fake: FakeHv) -> list[tuple[float, str, bool]]:
    return fake.received[fake.bad_since:]


def assert_off_after_fault(fake: FakeHv) -> None:
    assert any(fake.is_off(line) for _, line, _ in after_fault(fake)), after_fault(fake)
    assert not fake.on, "the supply's output is still on"


# --------------------------------------------------------------------------- D4
@pytest.mark.parametrize("protocol", FAKES)
def test_a_stall_before_the_send_never_shortens_the_gap_at_the_supply(protocol: str) -> None:
    """500 V/s in 0.1 s steps (50 V), wall time; every other setpoint is held back 60 ms
    between the driver's decision and the bytes leaving (a controller stall: GC, the GIL,
    a loaded machine). Judged from the arrival times the supply logged: every step is at most
    max_step_v and at most ramp_v_per_s x the time since the previous one arrived (tolerance:
    float rounding only, as the step's time is taken after the send returned, i.e. after the
    supply answered it, and the next arrival is after the next decision)."""
    rate, step_s = 500.0, 0.1
    clock = WallClock()
    fake = FAKES[protocol]("silent", clock)  # never misbehaves: a plain supply
    hv = driver(fake, clock, ramp_v_per_s=rate, ramp_step_s=step_s)
    hv.connect()
    send = hv._send_setpoint
    calls = [0]

    def stalled_send(volts: float) -> None:
        calls[0] += 1
        if calls[0] % 2 == 0:
            time.sleep(0.06)  # decided, not yet sent
        send(volts)

    hv._send_setpoint = stalled_send  # type: ignore[method-assign]
    hv.output(True)
    hv.ramp_to(400)
    hv.safe_off()
    fake.close()
    steps = live_steps(fake)
    assert len(steps) >= 8 and calls[0] >= 8
    assert_ramp_rule(fake, rate, rate * step_s)
