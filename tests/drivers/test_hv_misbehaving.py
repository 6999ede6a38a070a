"""HV safety judged from the instrument side, against a supply that misbehaves.

A script ramps a fake SCPI supply (tests/drivers/fake_hv.py, written from the protocol table,
not from the emulator) to 1 kV, the supply then turns bad (silent, late, garbage, ``nan``, lying
that its output is off, dropping the link on ``OUTP OFF``), and the script carries on as
scripts do: idles 60 s, ramps up and down, then leaves its ``with`` block. From what the
supply RECEIVED we check that

- no setpoint with the output on stepped by more than ``max_step_v`` or faster than
  ``ramp_v_per_s`` x the time since the previous one (idle time earns no credit);
- the output only went on at a 0 V setpoint;
- ``OUTP OFF`` arrived after the fault, and the supply's output is off at the end;
- every error the script saw is a DriverError naming the instrument;
- the whole thing is bounded in wall time (no reconnect storm).
"""

from __future__ import annotations

import time

import pytest
from apt_daq.drivers.base import DriverError, FakeClock, SafetyError, WallClock
from apt_daq.drivers.hv import ScpiHv, SerialHv
from apt_daq.drivers.scpi import make_transport
from apt_daq.drivers.serial_line import SerialTransport
from fake_hv import MODES, FakeHv
from fake_hv_line import FakeLineHv
from misbehaving_run import ROOT, assert_failed_naming, assert_off_after_fault, run_against

LIMIT_V, RAMP_V_PER_S, STEP_S = 6000.0, 200.0, 0.5
MAX_STEP_V = RAMP_V_PER_S * STEP_S
EPS_V = 1e-6


def assert_ramp_rule(fake: FakeHv, jitter_s: float = 0.0) -> None:
    """The ramp rule on what the supply received. ``jitter_s``: when the driver runs in
    another process on wall time, the receive times carry the link's latency jitter."""
    for dt, dv, new, v in fake.live_steps():
        allowed = min(MAX_STEP_V, RAMP_V_PER_S * (dt + jitter_s)) + EPS_V
        assert dv <= allowed, f"step {v} -> {new} V after {dt} s exceeds the ramp rule"

FAKES = {"scpi": FakeHv, "line": FakeLineHv}  # SCPI over TCP; the line protocol via pyserial


def driver(fake: FakeHv, clock: FakeClock, timeout_s: float = 0.3) -> ScpiHv | SerialHv:
    """``timeout_s``: short where the fake goes silent or late (a bounded test); the tests
    whose fake always answers at once take 2 s, so a loaded machine cannot fail them."""
    kw = dict(limit_v=LIMIT_V, ramp_v_per_s=RAMP_V_PER_S, ramp_step_s=STEP_S, retries=1,
              reconnect_deadline_s=1.0, clock=clock)
    if isinstance(fake, FakeLineHv):
        return SerialHv(SerialTransport(fake.resource, timeout_s=timeout_s), fake.resource, **kw)
    return ScpiHv(make_transport(fake.resource, timeout_s, "socket"), fake.resource, **kw)


@pytest.mark.parametrize("protocol", FAKES)
@pytest.mark.parametrize("mode", MODES)
def test_misbehaving_supply_ends_off_and_never_steps(mode: str, protocol: str) -> None:
    clock = FakeClock()
    fake = FAKES[protocol](mode, clock)
    hv = driver(fake, clock)
    hv.connect()
    seen: list[DriverError] = []
    t_wall = time.monotonic()
    try:
        with hv:
            hv.output(True)
            hv.ramp_to(1000)
            t_fault = clock.monotonic()
            fake.misbehave()
            for target in (3000.0, 500.0, 5900.0):
                clock.sleep(60.0)  # idle: must not earn a bigger step
                try:
                    hv.ramp_to(target)
                except DriverError as e:
                    seen.append(e)
                try:
                    hv.set_voltage(target)  # a plain setpoint far away: refused or a step
                except SafetyError:
                    pass
                except DriverError as e:
                    seen.append(e)
    except DriverError as e:  # safe-off's own failure on leaving the block
        seen.append(e)
    elapsed = time.monotonic() - t_wall
    fake.close()
    assert_ramp_rule(fake)
    assert fake.off_received_after(t_fault), "OUTP OFF never reached the supply"
    assert not fake.on, "the supply's output is still on"
    assert all(str(e).startswith(f"HV supply {fake.resource}: ") for e in seen), seen
    if mode == "drop_on_off":  # noticed: an error, or it reconnected (and read back "off")
        assert seen or fake.connections > 1, "the dropped link went unnoticed"
    elif mode != "lies_off":  # a lying supply that obeys cannot be caught; the rest must be
        assert seen, "a misbehaving supply went unnoticed"
    assert elapsed < 30, f"{elapsed:.1f} s: reconnects not bounded"
    assert fake.connections < 40, f"{fake.connections} connections: a reconnect storm"


@pytest.mark.parametrize("protocol", FAKES)
def test_nan_read_back_on_reconnect_is_a_bad_reply_not_a_setpoint(protocol: str) -> None:
    """The audit's case: nan read back from SOUR:VOLT? disabled the ramp check (0 -> 5900 V)."""
    clock = FakeClock()
    fake = FAKES[protocol]("nan", clock)
    hv = driver(fake, clock, timeout_s=2.0)
    hv.connect()
    hv.output(True)
    fake.misbehave()
    with pytest.raises(DriverError, match=r"not a finite number|unexpected reply"):
        hv.ramp_to(5900)
    assert all(v <= MAX_STEP_V for _, v, _ in fake.setpoints())
    with pytest.raises(DriverError):
        hv.voltage()  # MEAS:VOLT? nan: never a value
    fake.close()


@pytest.mark.parametrize("protocol", FAKES)
def test_lying_output_state_does_not_skip_the_ramp(protocol: str) -> None:
    """An instrument that always answers OUTP? 0: ramp_to must still ramp."""
    clock = FakeClock()
    fake = FAKES[protocol]("lies_off", clock, at_once=True)
    hv = driver(fake, clock, timeout_s=2.0)
    hv.connect()
    hv.output(True)
    clock.sleep(0.5)
    hv.ramp_to(3000)
    fake.close()
    sp = [v for _, v, on in fake.setpoints() if on]
    assert len(sp) >= 3000 / MAX_STEP_V  # steps, not one jump
    assert_ramp_rule(fake)


def test_idle_time_earns_no_credit() -> None:
    """Output on, 60 s idle, then a 1 kV setpoint: refused, and nothing reaches the supply."""
    clock = FakeClock()
    fake = FakeHv("garbage", clock)  # well behaved: never misbehave() is called
    hv = driver(fake, clock, timeout_s=2.0)
    hv.connect()
    hv.output(True)
    clock.sleep(60.0)
    n = len(fake.setpoints())
    with pytest.raises(SafetyError, match=r"step 1000 V in 60 s exceeds the ramp rule"):
        hv.set_voltage(1000)
    hv.set_voltage(MAX_STEP_V)  # one full step is allowed
    clock.sleep(0.25)
    with pytest.raises(SafetyError):
        hv.set_voltage(MAX_STEP_V + 60)  # 60 V in 0.25 s at 200 V/s: too fast
    assert [v for _, v, _ in fake.setpoints()[n:]] == [MAX_STEP_V]
    hv.safe_off()
    fake.close()


CLI_RUN = """\
instrument: {root}/configs/instruments/leap5000xs.yaml
specimen: {root}/configs/specimens/nmc811-cr.yaml
drivers:
  laser: {{backend: sim}}
  hv: {{{link}, limit_v: 6000,
        ramp_v_per_s: 200, timeout_s: 0.3, retries: 1, reconnect_deadline_s: 1.0}}
  dld: {{backend: sim}}
run:
  name: misbehaving-hv
  laser_pj: 5.0
  start_voltage_v: 300
  chunk_pulses: 100000
  stop: {{ions: 100000, instrument_time_s: 600}}
"""


LINKS = {"scpi": 'backend: scpi, resource: "{}", options: {{transport: socket}}',
         "line": 'backend: serial, url: "{}"'}


@pytest.mark.parametrize("protocol", FAKES)
@pytest.mark.parametrize("mode", [m for m in MODES if m != "lies_off"])
def test_cli_run_against_a_misbehaving_supply(tmp_path, mode: str, protocol: str) -> None:
    """`apt-daq run` with the HV supply turning bad mid-run: one error line naming the supply,
    exit 2, no traceback; OUTP OFF reached the supply after the fault and its output is off."""
    fake = FAKES[protocol](mode, WallClock(), after_setpoints=8)  # the driver: wall time
    proc = run_against(fake, CLI_RUN.format(root=ROOT, link=LINKS[protocol].format(
        fake.resource)), tmp_path, timeout_s=120)
    if mode == "drop_on_off" and proc.returncode == 0:
        # the supply obeyed the final off and dropped the link: a driver that reconnects and
        # reads back "off" (the line driver does) has nothing to fail; it must have noticed
        assert fake.connections > 1, "the dropped link went unnoticed"
    else:
        assert_failed_naming(proc, f"HV supply {fake.resource}")
    assert_off_after_fault(fake, "the supply's output is still on")
    assert_ramp_rule(fake, jitter_s=0.05)
