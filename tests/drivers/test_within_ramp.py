"""``within_ramp`` (what a feedback loop asks before every step): whatever it is asked for,
after whatever idle time, the setpoint it returns is accepted by ``set_voltage`` and, as the
instrument receives it, within the limit and the ramp rule. Judged on a recording instrument
stub (the base class's rules only), on the fake clock."""

from __future__ import annotations

import hypothesis.strategies as st
from apt_daq.drivers.base import FakeClock, HighVoltageSupply
from hypothesis import given, settings

LIMIT_V, RAMP, STEP_S = 6000.0, 200.0, 0.5
MAX_STEP = RAMP * STEP_S


class Recorder(HighVoltageSupply):
    """An instrument that obeys and records (time, setpoint)."""

    def __init__(self) -> None:
        super().__init__("stub", limit_v=LIMIT_V, ramp_v_per_s=RAMP, ramp_step_s=STEP_S,
                         clock=FakeClock())
        self.sent: list[tuple[float, float]] = []
        self.on = False
        self.connected = True

    def connect(self) -> None: ...
    def close(self) -> None: ...
    def _send_setpoint(self, volts: float) -> None:
        self.sent.append((self.clock.monotonic(), volts))
    def _send_output(self, on: bool) -> None:
        self.on = on
    def _read_setpoint(self) -> float:
        return self.sent[-1][1] if self.sent else 0.0
    def _read_output(self) -> bool:
        return self.on
    def _send_clear_trip(self) -> None: ...
    def voltage(self) -> float:
        return self._read_setpoint() if self.on else 0.0
    def current(self) -> float:
        return 0.0
    def tripped(self) -> bool:
        return False


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 100), st.floats(-1e4, 2e4, allow_nan=False)),
                min_size=1, max_size=30))
def test_within_ramp_is_always_accepted_and_within_the_rule(moves) -> None:
    hv = Recorder()
    hv.output(True)
    for idle_s, wanted in moves:
        hv.clock.sleep(idle_s)
        v = hv.within_ramp(wanted)
        hv.set_voltage(v)  # never a SafetyError
    t_prev, v_prev = 0.0, 0.0
    for t, v in hv.sent:
        assert 0.0 <= v <= LIMIT_V
        assert abs(v - v_prev) <= min(MAX_STEP, RAMP * (t - t_prev)) + 1e-6
        t_prev, v_prev = t, v
