"""HV safety you can prove: a hypothesis state machine drives random sequences of setpoints,
ramps, output switching, trips, dropped links, reconnects, script exceptions and Ctrl-C (also
in the middle of a ramp) through the SCPI driver into ``sim/scpi_server.py`` on a real
loopback socket, and checks FROM THE DEVICE MODEL'S ``received`` LOG (what the instrument got,
not what the driver believes it sent) that

- no setpoint above ``limit_v`` ever arrived, and the instrument limit was always ``limit_v``;
- with the output on, no setpoint stepped by more than ``max_step_v`` or faster than
  ``ramp_v_per_s`` x the time since the previous one, whatever the idle gaps (0-100 s)
  before it: idle time earns no credit;
- the output only ever went on at a 0 V setpoint;
- every fault (trip, exception or Ctrl-C leaving the ``with`` block) ended with the output off.

Time is a fake clock shared by the driver and the server, so a 6 kV ramp takes no wall time.
"""

from __future__ import annotations

import hypothesis.strategies as st
from apt_daq.drivers.base import DriverError, FakeClock, SafetyError
from apt_daq.drivers.hv import ScpiHv
from apt_daq.drivers.scpi import make_transport
from apt_daq.sim.devices import HvSupplyModel
from apt_daq.sim.scpi_server import HvScpiInterface, TcpLineServer
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

LIMIT_V, RAMP_V_PER_S, STEP_S = 6000.0, 500.0, 1.0
MAX_STEP_V = RAMP_V_PER_S * STEP_S  # the driver's default
EPS_V = 1e-6

_SERVER: TcpLineServer | None = None


def server() -> TcpLineServer:
    global _SERVER
    if _SERVER is None:
        _SERVER = TcpLineServer(lambda line: None).start()
    return _SERVER


class InterruptingClock(FakeClock):
    """A fake clock whose n-th sleep raises KeyboardInterrupt (Ctrl-C in the middle of a ramp)."""

    def __init__(self) -> None:
        super().__init__()
        self.interrupt_in: int | None = None

    def sleep(self, dt_s: float) -> None:
        if self.interrupt_in is not None:
            self.interrupt_in -= 1
            if self.interrupt_in <= 0:
                self.interrupt_in = None
                raise KeyboardInterrupt
        super().sleep(dt_s)


def check_log(received: list[tuple[float, str, float]]) -> None:
    """The safety properties, from what the instrument received, in order."""
    setpoint_v, on, t_ref = 0.0, False, 0.0
    for t, what, v in received:
        if what == "limit_v":
            assert v == LIMIT_V, f"instrument limit set to {v}"
        elif what == "setpoint_v":
            assert v <= LIMIT_V + EPS_V, f"setpoint {v} V above limit at t={t}"
            if on:
                allowed = min(MAX_STEP_V, RAMP_V_PER_S * (t - t_ref)) + EPS_V
                assert abs(v - setpoint_v) <= allowed, (
                    f"setpoint {setpoint_v} -> {v} V in {t - t_ref} s exceeds the ramp at t={t}")
                t_ref = t
            setpoint_v = v
        elif what == "output":
            if v == 1.0 and not on:
                assert setpoint_v == 0.0, f"output on at a {setpoint_v} V setpoint, t={t}"
                t_ref = t
            on = v == 1.0
        elif what == "trip" and v == 1.0:
            on = False
        elif what == "reset":
            setpoint_v, on = 0.0, False


VOLTS = st.one_of(st.floats(0, 7000, allow_nan=False),
                  st.sampled_from([0.0, 1.0, 500.0, LIMIT_V, LIMIT_V + 0.001, 6500.0]))


class HvSafety(RuleBasedStateMachine):
    transport = "socket"

    def __init__(self) -> None:
        super().__init__()
        self.clock = InterruptingClock()
        self.model = HvSupplyModel(max_voltage_v=15000.0, slew_v_per_s=2000.0)
        srv = server()
        with srv.lock:
            srv.drop_clients()
            self.iface = HvScpiInterface(self.model, clock=self.clock.monotonic)
            srv.handler = self.iface.handle
        self.hv = self._open()

    def _open(self) -> ScpiHv:
        srv = server()
        hv = ScpiHv(make_transport(srv.resource, 2.0, self.transport), srv.resource,
                    limit_v=LIMIT_V, ramp_v_per_s=RAMP_V_PER_S, ramp_step_s=STEP_S,
                    retries=2, clock=self.clock)
        hv.connect()
        return hv

    def teardown(self) -> None:
        self.hv.close()
        check_log(self.model.received)

    @rule(v=VOLTS)
    def set_voltage(self, v: float) -> None:
        try:
            self.hv.set_voltage(v)
        except SafetyError:
            return
        except DriverError:
            return
        assert round(v, 3) <= LIMIT_V, "a setpoint above the limit was accepted"

    @rule(v=VOLTS)
    def ramp_to(self, v: float) -> None:
        try:
            self.hv.ramp_to(v)
        except DriverError:
            pass

    @rule(on=st.booleans())
    def output(self, on: bool) -> None:
        tripped = self.model.tripped
        try:
            self.hv.output(on)
        except DriverError:
            pass
        if tripped:
            assert not self.model.output_on, "output went on while tripped"

    @rule(dt_s=st.floats(0, 100))
    def wait(self, dt_s: float) -> None:
        self.clock.sleep(dt_s)

    @rule()
    def trip(self) -> None:
        with server().lock:
            self.model.trip()
        assert not self.model.output_on

    @rule()
    def clear_trip(self) -> None:
        try:
            self.hv.clear_trip()
        except DriverError:
            pass

    @precondition(lambda self: self.transport == "socket")
    @rule()
    def drop_link(self) -> None:
        server().drop_clients()

    @rule()
    def reconnect(self) -> None:
        self.hv.close()
        self.hv = self._open()

    @rule(kind=st.sampled_from([RuntimeError, KeyboardInterrupt]), volts=VOLTS,
          interrupt_after=st.integers(0, 6))
    def script_fails(self, kind: type[BaseException], volts: float,
                     interrupt_after: int) -> None:
        """Leave the with block by an exception, or by Ctrl-C in the middle of a ramp."""
        try:
            with self.hv:
                if interrupt_after:
                    self.clock.interrupt_in = interrupt_after
                    self.hv.ramp_to(volts)
                raise kind()
        except (RuntimeError, KeyboardInterrupt, DriverError):
            pass
        finally:
            self.clock.interrupt_in = None
        assert not self.model.output_on, "left the with block with the output on"
        assert self.model.setpoint_v == 0.0
        self.hv = self._open()

    @invariant()
    def safe_so_far(self) -> None:
        check_log(self.model.received)


HvSafety.TestCase.settings = settings(
    max_examples=2000, stateful_step_count=15, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
test_hv_safety_socket = HvSafety.TestCase


class HvSafetyVisa(HvSafety):
    """The same machine through pyvisa-py (no dropped links: pyvisa-py 0.8 only notices one
    after its full timeout)."""

    transport = "visa"


HvSafetyVisa.TestCase.settings = settings(
    max_examples=200, stateful_step_count=15, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
test_hv_safety_visa = HvSafetyVisa.TestCase


def test_check_log_catches_violations() -> None:
    """The checker itself can fail: each property on a hand-made bad log."""
    import pytest

    bad_logs = [
        [(0.0, "setpoint_v", LIMIT_V + 1)],
        [(0.0, "output", 1.0), (1.0, "setpoint_v", RAMP_V_PER_S * 1.0 + 1)],
        [(0.0, "setpoint_v", 100.0), (0.0, "output", 1.0)],
        [(0.0, "limit_v", 7000.0)],
    ]
    for log in bad_logs:
        with pytest.raises(AssertionError):
            check_log(log)
    check_log([(0.0, "output", 1.0), (1.0, "setpoint_v", 500.0), (1.5, "setpoint_v", 750.0),
               (1.5, "trip", 1.0), (1.5, "setpoint_v", 0.0)])
