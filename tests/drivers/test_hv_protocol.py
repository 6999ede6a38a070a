"""Exact protocol of the HV drivers: every method's full command/reply list, all consumed."""

from __future__ import annotations

import time

import pytest
from apt_daq.drivers.base import (
    BadReply,
    ConnectionLost,
    DriverTimeout,
    FakeClock,
    InstrumentError,
    SafetyError,
)
from apt_daq.drivers.hv import ScpiHv, SerialHv
from drivers_protocol import OK, ScriptedTransport, expected_protocol

RES = "TCPIP::127.0.0.1::5025::SOCKET"


def connect(setpoint: str = "0.000", out: str = "0") -> list[tuple[str, object]]:
    """The handshake; a supply found on is measured before its setpoint is adopted."""
    found_on = [("MEAS:VOLT?", setpoint)] if out == "1" else []
    return [("*CLS", None), ("*IDN?", "ACME,HV1,42,1.0"), ("SOUR:VOLT?", setpoint),
            ("OUTP?", out), *found_on, ("SOUR:VOLT:LIM 6000", None), ("SYST:ERR?", OK)]


def scpi(clock=None, ramp=200.0, step=0.5, retries=2):
    def make(t):
        return ScpiHv(t, RES, limit_v=6000, ramp_v_per_s=ramp, ramp_step_s=step,
                      retries=retries, clock=clock or FakeClock())
    return make


def setting(cmd: str) -> list[tuple[str, object]]:
    return [(cmd, None), ("SYST:ERR?", OK)]


def test_connect_handshake_sends_limit_and_reads_state():
    with expected_protocol(scpi(), connect("1500.000", "1")) as hv:
        assert hv.idn == "ACME,HV1,42,1.0"
        assert hv.setpoint_v == 1500.0 and hv._on


def test_set_voltage_with_output_off():
    with expected_protocol(scpi(), connect() + setting("SOUR:VOLT 1500")) as hv:
        hv.set_voltage(1500)


def test_setpoint_above_limit_is_refused_and_never_sent():
    with expected_protocol(scpi(), connect()) as hv, pytest.raises(SafetyError) as e:
        hv.set_voltage(7000)
    assert str(e.value) == f"HV supply {RES}: 'SOUR:VOLT 7000' refused: above limit_v 6000"


def test_negative_and_nan_setpoints_refused():
    with expected_protocol(scpi(), connect()) as hv:
        for bad in (-1.0, float("nan")):
            with pytest.raises(SafetyError):
                hv.set_voltage(bad)


def test_step_faster_than_ramp_refused_with_output_on():
    clock = FakeClock()
    with expected_protocol(scpi(clock), connect("1000.000", "1") + setting("SOUR:VOLT 1100")
                           ) as hv:
        with pytest.raises(SafetyError, match=r"'SOUR:VOLT 1100' refused: step 100 V in 0 s "
                                              r"exceeds the ramp rule \(max_step_v 100 V"):
            hv.set_voltage(1100)
        clock.sleep(0.5)  # 0.5 s at 200 V/s allows 100 V
        hv.set_voltage(1100)


def test_output_on_at_zero():
    with expected_protocol(scpi(), [*connect(), ("OUTP?", "0"), *setting("OUTP ON")]) as hv:
        hv.output(True)


def test_output_on_with_setpoint_starts_at_zero_and_ramps_back():
    clock = FakeClock()
    pairs = ([*connect("1000.000", "0"), ("OUTP?", "0"), *setting("SOUR:VOLT 0"), *setting("OUTP ON"), ("OUTP?", "1"), ("SOUR:VOLT?", "0.000"), *setting("SOUR:VOLT 500"), *setting("SOUR:VOLT 1000")])
    with expected_protocol(scpi(clock, ramp=1000.0), pairs) as hv:
        hv.output(True)
    assert clock.now_s == pytest.approx(1.0)


def test_ramp_to_steps_at_the_ramp_rate():
    clock = FakeClock()
    pairs = ([*connect("0.000", "1"), ("OUTP?", "1"), ("SOUR:VOLT?", "0.000"), *setting("SOUR:VOLT 100"), *setting("SOUR:VOLT 200"), *setting("SOUR:VOLT 250")])
    with expected_protocol(scpi(clock), pairs) as hv:
        hv.ramp_to(250)
    assert clock.now_s == pytest.approx(1.5)  # 250 V at 200 V/s in 0.5 s steps


def test_ramp_down_and_output_off_is_a_single_setpoint():
    pairs = [*connect("3000.000", "0"), ("OUTP?", "0"), *setting("SOUR:VOLT 0")]
    with expected_protocol(scpi(), pairs) as hv:
        hv.ramp_to(0)


def test_ramp_above_limit_refused_before_anything_is_sent():
    with expected_protocol(scpi(), connect("0.000", "1")) as hv, pytest.raises(SafetyError):
        hv.ramp_to(6000.5)


def test_queries():
    pairs = [*connect(), ("MEAS:VOLT?", "1234.500"), ("MEAS:CURR?", "1.5e-07"), ("OUTP:PROT:TRIP?", "0"), ("SOUR:VOLT:LIM?", "6000.000"), ("OUTP?", "0")]
    with expected_protocol(scpi(), pairs) as hv:
        assert hv.voltage() == 1234.5
        assert hv.current() == pytest.approx(1.5e-7)
        assert hv.tripped() is False
        assert hv.instrument_limit_v() == 6000.0
        assert hv.output_on() is False


def test_clear_trip():
    with expected_protocol(scpi(), connect() + setting("OUTP:PROT:CLE")) as hv:
        hv.clear_trip()


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_leaving_with_block_turns_output_off(exc):
    # output off goes out first, with no error-queue check before or after it; then it is
    # read back, then the setpoint goes to 0 V
    pairs = [*connect("2000.000", "1"), ("OUTP OFF", None), ("OUTP?", "0"),
             *setting("SOUR:VOLT 0")]
    t = ScriptedTransport(pairs)
    hv = scpi()(t)
    hv.connect()
    with pytest.raises(exc), hv:
        raise exc("boom")
    t.assert_consumed()
    assert not hv.connected


def test_instrument_error_names_command_and_reply():
    pairs = [*connect(), ("SOUR:VOLT 100", None), ("SYST:ERR?", '-222,"Data out of range"')]
    with expected_protocol(scpi(), pairs) as hv, pytest.raises(InstrumentError) as e:
        hv.set_voltage(100)
    assert e.value.code == -222
    assert str(e.value) == (f"HV supply {RES}: 'SOUR:VOLT 100' instrument error -222: "
                            "Data out of range (reply '-222,\"Data out of range\"')")


def test_idempotent_query_retried_on_a_fresh_link():
    pairs = [*connect(), ("MEAS:VOLT?", TimeoutError("scripted")), *connect(), ("MEAS:VOLT?", "10.000")]
    with expected_protocol(scpi(), pairs) as hv:
        assert hv.voltage() == 10.0
        assert hv.session.reconnects == 1


def test_setpoint_is_never_retried():
    pairs = [*connect(), ("SOUR:VOLT 100", None), ("SYST:ERR?", TimeoutError("scripted"))]
    t = ScriptedTransport(pairs)
    hv = scpi()(t)
    hv.connect()
    with pytest.raises(DriverTimeout, match=r"'SOUR:VOLT 100'.*may or may not have been applied"):
        hv.set_voltage(100)
    t.assert_consumed()  # nothing re-sent
    # the next call first reconnects and re-reads the state the instrument really has
    t.extend(connect("100.000", "0") + setting("SOUR:VOLT 200"))
    hv.set_voltage(200)
    t.assert_consumed()
    assert hv.setpoint_v == 200.0


def test_bad_reply_names_command_and_reply():
    pairs = [*connect(), ("MEAS:VOLT?", "volts!")]
    with expected_protocol(scpi(retries=0), pairs) as hv, pytest.raises(BadReply) as e:
        hv.voltage()
    assert "'MEAS:VOLT?'" in str(e.value) and "'volts!'" in str(e.value)


def test_reconnects_are_bounded_by_one_deadline():
    pairs = [*connect(), ("MEAS:VOLT?", ConnectionError("scripted"))]
    t = ScriptedTransport(pairs, fail_opens=10_000)
    hv = ScpiHv(t, RES, limit_v=6000, ramp_v_per_s=200, reconnect_deadline_s=0.5,
                clock=FakeClock())
    hv.connect()
    t0 = time.monotonic()
    with pytest.raises(ConnectionLost, match=r"reconnect_deadline_s 0\.5"):
        hv.voltage()
    # one deadline for the whole call (the query's retries do not each get one), wall time
    assert time.monotonic() - t0 < 1.5
    assert 2 <= t.opens < 30


def test_not_connected_says_so():
    hv = scpi()(ScriptedTransport([]))
    with pytest.raises(ConnectionLost, match="not connected"):
        hv.voltage()


# --------------------------------------------------------------------------- serial line


def serial_connect(setpoint: str = "0.000", out: str = "0") -> list[tuple[str, object]]:
    found_on = [("M?", setpoint)] if out == "1" else []
    return [("ID?", "APT-DAQ,HV-SIM,0,1.0"), ("V?", setpoint), ("O?", out), *found_on,
            ("L 6000", "OK")]


def serial(clock=None):
    def make(t):
        return SerialHv(t, "/dev/ttyUSB0", limit_v=6000, ramp_v_per_s=200, ramp_step_s=0.5,
                        clock=clock or FakeClock())
    return make


def test_serial_protocol_of_each_method():
    clock = FakeClock()
    pairs = ([*serial_connect(), ("O?", "0"), ("O 1", "OK"), ("O?", "1"), ("V?", "0.000"), ("V 100", "OK"), ("M?", "99.500"), ("I?", "2e-08"), ("T?", "0"), ("C", "OK"), ("O 0", "OK"), ("O?", "0"), ("V 0", "OK")])
    with expected_protocol(serial(clock), pairs) as hv:
        hv.output(True)
        hv.ramp_to(100)
        assert hv.voltage() == 99.5
        assert hv.current() == pytest.approx(2e-8)
        assert not hv.tripped()
        hv.clear_trip()
        hv.safe_off()


def test_serial_error_line_is_an_instrument_error():
    pairs = [*serial_connect(), ("V 100", "ERR 3 out of range")]
    with expected_protocol(serial(), pairs) as hv, pytest.raises(InstrumentError) as e:
        hv.set_voltage(100)
    assert e.value.code == 3
    assert "HV supply /dev/ttyUSB0: 'V 100' instrument error 3: out of range" in str(e.value)


def test_serial_limit_refusal_uses_the_line_command():
    with expected_protocol(serial(), serial_connect()) as hv, pytest.raises(SafetyError) as e:
        hv.set_voltage(6001)
    assert str(e.value) == "HV supply /dev/ttyUSB0: 'V 6001' refused: above limit_v 6000"
