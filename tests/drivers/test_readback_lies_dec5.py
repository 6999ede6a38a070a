"""Read-backs that lie (the second outside audit, S3, S4, S5), judged from what the fake
instrument RECEIVED (tests/drivers/fake_hv.py, fake_hv_line.py, fake_laser.py), never from the
driver's own counters:

- S3: an HV supply found ON at 5000 V whose ``SOUR:VOLT?`` answers ``0.000`` (``MEAS:VOLT?``
  truthful) got ``SOUR:VOLT 100`` with the output on, a 4900 V step. Now the measured voltage
  is read before the setpoint is adopted: the supply receives no setpoint step beyond the
  ramp rule while on, its output ends off, and the error names it. An honest supply found on
  is still ramped down within the rule;
- S4: a laser answering ``OUTP? 0`` while emitting (after the driver switched it on, interlock
  closed) ran a whole run to ``done``. Now the laser receives ``OUTP OFF`` and the error names
  it; an open interlock (emission impossible) is not a fault;
- S5: mid-run, an HV supply answering ``MEAS:VOLT? 0`` (or ``SOUR:VOLT? -0``) while on at
  300-545 V was never caught. Now, once the output has been on for ``settle_s``, a measured
  voltage far from every setpoint of the last ``settle_s`` is a fault (output off first),
  and the setpoint read-back is checked every ``settle_s``; a supply lagging while it ramps,
  and a trip, are not faults.
"""

from __future__ import annotations

import threading

import pytest
from apt_daq.drivers.base import BadReply, FakeClock, SafetyError, WallClock
from apt_daq.drivers.laser import ScpiLaser
from apt_daq.drivers.scpi import make_transport
from fake_hv import FakeHv, wait_for
from fake_laser import FakeLaser
from misbehaving_run import ROOT, assert_failed_naming, assert_off_after_fault, run_against
from test_hv_audit_faults import FAKES, MAX_STEP_V, RAMP_V_PER_S, STEP_S, driver

EPS_V = 1e-6
SETTLE_S = 4 * STEP_S  # the driver's settle time: 4 ramp steps (>= 1 s)


def live_steps_from(fake: FakeHv, v0: float, on0: bool) -> list[tuple[float, float, float]]:
    """(dt since the previous setpoint or output on, |dV|, new V) of every setpoint the fake
    received while its output was on, starting from its state before any line arrived (on
    or not, at ``v0``); the first gap of a supply found on runs from its first line."""
    out: list[tuple[float, float, float]] = []
    v, on = v0, on0
    t_ref = fake.received[0][0] if fake.received else 0.0
    for t, kind, new in fake.events():
        if kind == "on":
            if not on:
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


def assert_within_ramp(fake: FakeHv, v0: float, on0: bool, jitter_s: float = 0.0) -> None:
    for dt, dv, new in live_steps_from(fake, v0, on0):
        assert dv <= MAX_STEP_V + EPS_V, f"a live step of {dv} V to {new} V"
        assert dv <= RAMP_V_PER_S * (dt + jitter_s) * (1 + 1e-9) + EPS_V, (
            f"a live step of {dv} V to {new} V in {dt * 1e3:.1f} ms")


def after_fault(fake: FakeHv) -> list[str]:
    return [line for _, line, _ in fake.received[fake.bad_since:]]


# --------------------------------------------------------------------------- S3
@pytest.mark.parametrize("protocol", FAKES)
@pytest.mark.parametrize(("mode", "setpoint_v", "reply"), [
    ("lies_setpoint", 5000.0, "0.000"),   # the audit's case: SOUR:VOLT? 0, MEAS:VOLT? 5000
    ("lies_setpoint", 5000.0, "-0.0e0"),  # the same lie in another float format
    ("wild_meas", 3000.0, "0.000"),       # the other way round: MEAS:VOLT? 0 at 3000 V on
])
def test_a_supply_found_on_with_a_read_back_the_measurement_contradicts_is_switched_off(
        protocol: str, mode: str, setpoint_v: float, reply: str) -> None:
    clock = FakeClock()
    fake = FAKES[protocol](mode, clock, at_once=True, lie_setpoint=float(reply),
                           meas_reply=reply)
    fake.setpoint_v, fake.on = setpoint_v, True
    hv = driver(fake, clock)
    with pytest.raises(BadReply) as exc:
        hv.connect()
    fake.close()
    msg = str(exc.value)
    assert msg.startswith(f"HV supply {fake.resource}: "), msg
    assert "found on" in msg and "output switched off" in msg, msg
    assert not fake.on, "the supply's output is still on"
    assert any(fake.is_off(line) for _, line, _ in fake.received), fake.received
    assert [v for _, v, on in fake.setpoints() if on] == [], fake.setpoints()  # none live
    assert_within_ramp(fake, setpoint_v, True)


@pytest.mark.parametrize("protocol", FAKES)
@pytest.mark.parametrize("measured", [None, "4990.000", "5120.000"])
def test_an_honest_supply_found_on_is_adopted_and_ramped_down_within_the_rule(
        protocol: str, measured: str | None) -> None:
    """Measured = setpoint, or off by less than the tolerance (50 V + 5 %): adopted."""
    clock = FakeClock()
    fake = (FAKES[protocol]("silent", clock) if measured is None  # never misbehaves
            else FAKES[protocol]("wild_meas", clock, at_once=True, meas_reply=measured))
    fake.setpoint_v, fake.on = 5000.0, True
    hv = driver(fake, clock)
    hv.connect()
    assert hv.setpoint_v == 5000.0
    hv.ramp_to(4000)
    assert fake.on and fake.setpoint_v == 4000.0
    hv.safe_off()
    fake.close()
    sets = [v for _, c, v in fake.events() if c == "set"]
    assert sets[0] == pytest.approx(5000.0 - MAX_STEP_V), sets  # the first step, from 5000
    assert_within_ramp(fake, 5000.0, True)
    assert not fake.on


class SlewingHv(FakeHv):
    """A supply whose output follows its setpoint at ``slew_v_per_s`` on the shared clock
    (what ``MEAS:VOLT?`` reads), as a real one does."""

    def __init__(self, *a, slew_v_per_s: float, **kw):
        super().__init__(*a, **kw)
        self.slew_v_per_s = slew_v_per_s
        self.out_v = 0.0
        self._t = self.clock.monotonic()

    def _follow(self) -> None:
        now = self.clock.monotonic()
        target = self.setpoint_v if self.on else 0.0
        step = self.slew_v_per_s * (now - self._t)
        self.out_v += max(-step, min(step, target - self.out_v))
        self._t = now

    def _handle(self, line: str) -> str | None:
        self._follow()
        if line.upper() == "MEAS:VOLT?":
            return f"{self.out_v if self.on else 0.0:.3f}"
        return super()._handle(line)


def test_a_supply_found_on_still_following_its_setpoint_is_given_time_to_settle() -> None:
    """Found on at a 3000 V setpoint with the output still at 2500 V and slewing at 1 kV/s:
    the measured value is asked again until it agrees (within settle_s), then adopted."""
    clock = FakeClock()
    fake = SlewingHv("silent", clock, slew_v_per_s=1000.0)
    fake.setpoint_v, fake.on, fake.out_v = 3000.0, True, 2500.0
    hv = driver(fake, clock)
    hv.connect()
    assert hv.setpoint_v == 3000.0
    hv.safe_off()
    fake.close()
    assert not fake.on


def test_cli_run_with_a_supply_found_on_lying_about_its_setpoint(tmp_path) -> None:
    """The audit's repro through `apt-daq run`: exit 2, one error line naming the supply, no
    setpoint received while its output was on, and its output off at the end."""
    fake = FakeHv("lies_setpoint", WallClock(), at_once=True, lie_setpoint=0.0)
    fake.setpoint_v, fake.on = 5000.0, True
    proc = run_against(fake, CLI_HV.format(root=ROOT, resource=fake.resource), tmp_path,
                       timeout_s=120)
    assert_failed_naming(proc, f"HV supply {fake.resource}")
    assert "found on with a setpoint read-back of 0 V but a measured 5000 V" in proc.stderr
    assert [v for _, v, on in fake.setpoints() if on] == [], fake.setpoints()
    assert_within_ramp(fake, 5000.0, True)
    assert not fake.on, "the supply's output is still on"


# --------------------------------------------------------------------------- S4
def make_laser(fake: FakeLaser) -> ScpiLaser:
    laser = ScpiLaser(make_transport(fake.resource, 2.0, "socket"), fake.resource,
                      max_energy_pj=20.0, retries=1, reconnect_deadline_s=1.0,
                      clock=FakeClock())
    laser.connect()
    return laser


def test_a_laser_reading_dark_while_commanded_on_is_switched_off_and_named() -> None:
    fake = FakeLaser("lies_off", FakeClock())
    laser = make_laser(fake)
    laser.set_energy(5.0)
    laser.emission(True)
    assert laser.emission_on() and fake.on
    fake.misbehave()  # OUTP? now answers 0, the laser still emits
    with pytest.raises(BadReply) as exc:
        laser.emission_on()
    msg = str(exc.value)
    assert msg.startswith(f"laser {fake.resource}: 'OUTP?' "), msg
    assert "emission reads OFF although the driver switched it ON" in msg, msg
    assert "emission switched off" in msg, msg
    with pytest.raises(SafetyError, match="refused: earlier emission reads OFF"):
        laser.emission(True)
    laser.close()
    fake.close()
    lines = after_fault(fake)
    assert "OUTP OFF" in lines and "OUTP ON" not in lines, lines
    assert not fake.on, "the laser is still emitting"


class InterlockLaser(FakeLaser):
    """A laser whose interlock can be opened: emission goes off, ``SYST:INTL?`` answers 1."""

    interlock = False

    def open_interlock(self) -> None:
        self.interlock, self.on = True, False

    def _handle(self, line: str) -> str | None:
        if line.upper() == "SYST:INTL?":
            return "1" if self.interlock else "0"
        return super()._handle(line)


def test_a_laser_dark_because_its_interlock_is_open_is_not_a_fault() -> None:
    fake = InterlockLaser("silent", FakeClock())  # never misbehaves
    laser = make_laser(fake)
    laser.set_energy(5.0)
    laser.emission(True)
    fake.open_interlock()
    n = len(fake.received)
    assert laser.emission_on() is False
    assert [line for _, line, _ in fake.received[n:]] == ["OUTP?", "SYST:INTL?"]
    laser.safe_off()
    laser.close()
    fake.close()
    assert not fake.on


CLI_LASER = """\
instrument: {root}/configs/instruments/leap5000xs.yaml
specimen: {root}/configs/specimens/nmc811-cr.yaml
drivers:
  laser: {{backend: scpi, resource: "{resource}", options: {{transport: socket}},
           max_energy_pj: 20, timeout_s: 0.5, retries: 1, reconnect_deadline_s: 1.0}}
  hv: {{backend: sim, limit_v: 12000}}
  dld: {{backend: sim}}
run:
  name: laser-lies-dark
  laser_pj: 5.0
  start_voltage_v: 3000
  stop: {{ions: 5000000}}
"""


def test_cli_run_with_a_laser_lying_that_it_is_dark(tmp_path) -> None:
    """`apt-daq run`, the laser answering OUTP? 0 mid-acquisition while emitting: exit 2,
    one error line naming the laser, OUTP OFF received after the lie, and dark at the end."""
    fake = FakeLaser("lies_off", WallClock())

    def lie_mid_run() -> None:
        if wait_for(lambda: fake.on and len(fake.received) > 60, timeout_s=60):
            fake.misbehave()

    threading.Thread(target=lie_mid_run, daemon=True).start()
    proc = run_against(fake, CLI_LASER.format(root=ROOT, resource=fake.resource), tmp_path,
                       timeout_s=300)
    assert_failed_naming(proc, f"laser {fake.resource}")
    assert "emission reads OFF although the driver switched it ON" in proc.stderr
    assert_off_after_fault(fake, "the laser is still emitting")
    assert "OUTP ON" not in after_fault(fake)


# --------------------------------------------------------------------------- S5
def on_at(fake: FakeHv, clock: FakeClock, volts: float):
    hv = driver(fake, clock)
    hv.connect()
    hv.output(True)
    hv.ramp_to(volts)
    return hv


@pytest.mark.parametrize("protocol", FAKES)
@pytest.mark.parametrize("reply", ["0.000", "-0.0e0", "300.000"])
def test_a_measured_voltage_far_from_a_held_setpoint_is_a_fault(protocol: str,
                                                                reply: str) -> None:
    clock = FakeClock()
    fake = FAKES[protocol]("wild_meas", clock, meas_reply=reply)
    hv = on_at(fake, clock, 545.0)
    clock.sleep(SETTLE_S)
    assert hv.voltage() == 545.0  # honest while held: a value
    fake.misbehave()
    clock.sleep(0.1)
    with pytest.raises(BadReply) as exc:
        hv.voltage()
    fake.close()
    msg = str(exc.value)
    assert msg.startswith(f"HV supply {fake.resource}: "), msg
    assert f"measured voltage {float(reply):g} V" in msg and "545 V" in msg, msg
    assert "output switched off" in msg, msg
    lines = after_fault(fake)
    assert any(fake.is_off(line) for line in lines), lines
    assert not fake.on, "the supply's output is still on"
    assert_within_ramp(fake, 0.0, False)


@pytest.mark.parametrize("protocol", FAKES)
def test_a_setpoint_read_back_lying_mid_run_is_caught_within_settle_s(protocol: str) -> None:
    """The run's feedback loop only sets (never ramp_to): the setpoint read-back is still
    checked every settle_s, from voltage(), so SOUR:VOLT? answering -0 at 545 V is a fault."""
    clock = FakeClock()
    fake = FAKES[protocol]("lies_setpoint", clock, lie_setpoint=-0.0)
    hv = on_at(fake, clock, 545.0)
    fake.misbehave()
    with pytest.raises(BadReply) as exc:
        for i in range(int(3 * SETTLE_S / 0.1)):  # blocks of 0.1 s
            clock.sleep(0.1)
            hv.set_voltage(hv.within_ramp(545.0 + 0.25 * i))
            hv.voltage()
    fake.close()
    assert clock.now_s - fake.received[fake.bad_since][0] <= SETTLE_S + 0.2
    msg = str(exc.value)
    assert msg.startswith(f"HV supply {fake.resource}: ") and "read-back -0 V" in msg, msg
    assert any(fake.is_off(line) for line in after_fault(fake)), after_fault(fake)
    assert not fake.on
    assert_within_ramp(fake, 0.0, False)


@pytest.mark.parametrize("slew", [RAMP_V_PER_S, 5 * RAMP_V_PER_S])
def test_a_supply_lagging_while_it_ramps_is_not_a_fault(slew: float) -> None:
    """A supply following at the ramp rate (hardware_ramp) or faster: measured during ramps
    (ramp_to, and a feedback loop stepping every block) and after them, never a fault."""
    clock = FakeClock()
    fake = SlewingHv("silent", clock, slew_v_per_s=slew)
    hv = on_at(fake, clock, 3000.0)
    seen = [hv.voltage()]  # right after the ramp: behind by up to one step
    for i in range(400):  # a feedback loop: 0.05 s blocks, up as fast as the rule allows
        clock.sleep(0.05)
        hv.set_voltage(hv.within_ramp(3000.0 + 10.0 * i))
        seen.append(hv.voltage())
    for _ in range(100):  # held
        clock.sleep(0.05)
        seen.append(hv.voltage())
    hv.ramp_to(1000.0)
    seen.append(hv.voltage())
    hv.safe_off()
    fake.close()
    assert min(seen) < max(seen) and seen[-1] > 1000.0  # it did lag
    assert not fake.on
    offs = [line for _, line, _ in fake.received if fake.is_off(line)]
    assert len(offs) == 1, offs  # safe_off's own: no fault switched it off


def test_a_trip_is_still_a_trip_not_a_read_back_fault() -> None:
    """MEAS:VOLT? 0 because the supply tripped (OUTP? 0, OUTP:PROT:TRIP? 1): the value, and
    the trip for the caller (the run ends as a fracture). SCPI only: the line fake has no
    trip latch."""
    clock = FakeClock()
    fake = FakeHv("silent", clock)  # never misbehaves
    hv = on_at(fake, clock, 545.0)
    clock.sleep(SETTLE_S)
    fake.trip()
    assert hv.voltage() == 0.0  # the output really is at 0: a value
    assert hv.tripped() and not hv.output_on()
    hv.safe_off()
    fake.close()
    assert not fake.on


CLI_HV = """\
instrument: {root}/configs/instruments/leap5000xs.yaml
specimen: {root}/configs/specimens/nmc811-cr.yaml
drivers:
  laser: {{backend: sim}}
  hv: {{backend: scpi, resource: "{resource}", options: {{transport: socket}}, limit_v: 6000,
        ramp_v_per_s: 200, timeout_s: 0.5, retries: 1, reconnect_deadline_s: 1.0}}
  dld: {{backend: sim}}
run:
  name: hv-read-back-lies
  laser_pj: 5.0
  start_voltage_v: 300
  chunk_pulses: 100000
  stop: {{ions: 20000000, instrument_time_s: 86400}}  # ends by the fault, not by a stop
"""


@pytest.mark.parametrize(("mode", "kw"), [
    ("wild_meas", {"meas_reply": "0.000"}),        # MEAS:VOLT? 0 (MEAS:CURR? 0 too)
    ("lies_setpoint", {"lie_setpoint": -0.0}),     # SOUR:VOLT? -0, MEAS:VOLT? truthful
])
def test_cli_run_with_a_supply_whose_read_backs_turn_to_zero_mid_run(
        tmp_path, mode: str, kw: dict) -> None:
    """The audit's hv_lie0 / hv_negzero through `apt-daq run`: exit 2, one error line naming
    the supply, an off received after the lie, the output off, no live step beyond the rule."""
    fake = FakeHv(mode, WallClock(), after_setpoints=8, **kw)
    proc = run_against(fake, CLI_HV.format(root=ROOT, resource=fake.resource), tmp_path,
                       timeout_s=120)
    assert_failed_naming(proc, f"HV supply {fake.resource}")
    assert_off_after_fault(fake, "the supply's output is still on")
    assert_within_ramp(fake, 0.0, False, jitter_s=0.05)
