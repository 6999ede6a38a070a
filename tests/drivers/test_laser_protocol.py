"""Exact protocol of the SCPI laser driver, and its safety refusals."""

from __future__ import annotations

import pytest
from apt_daq.drivers.base import FakeClock, InstrumentError, SafetyError
from apt_daq.drivers.hv import ScpiHv
from apt_daq.drivers.laser import ScpiLaser
from drivers_protocol import OK, ScriptedTransport, expected_protocol

RES = "TCPIP::127.0.0.1::5026::SOCKET"
CONNECT = [("*CLS", None), ("*IDN?", "ACME,UV355,7,2.1"), ("OUTP?", "0"),
           ("SOUR:PULS:ENER?", "0.000")]


def laser(hv=None):
    def make(t):
        return ScpiLaser(t, RES, max_energy_pj=100.0, hv=hv)
    return make


def test_each_method_exact():
    pairs = [*CONNECT, ("SOUR:PULS:ENER 5.5", None), ("SYST:ERR?", OK), ("SOUR:PULS:ENER?", "5.500"), ("SOUR:PULS:FREQ 200000", None), ("SYST:ERR?", OK), ("SOUR:PULS:FREQ?", "200000.000"), ("OUTP ON", None), ("SYST:ERR?", OK), ("OUTP?", "1"), ("SYST:INTL?", "0"), ("OUTP OFF", None), ("OUTP?", "0")]
    with expected_protocol(laser(), pairs) as las:
        assert las.idn == "ACME,UV355,7,2.1"
        las.set_energy(5.5)
        assert las.energy() == 5.5
        las.set_pulse_rate(200e3)
        assert las.pulse_rate() == 200e3
        las.emission(True)
        assert las.emission_on() is True
        assert las.interlock_open() is False
        las.safe_off()


def test_energy_above_ceiling_refused_and_not_sent():
    with expected_protocol(laser(), CONNECT) as las, pytest.raises(SafetyError) as e:
        las.set_energy(150)
    assert str(e.value) == (f"laser {RES}: 'SOUR:PULS:ENER 150' refused: outside "
                            "0..max_energy_pj 100")


def test_interlock_refusal_is_an_instrument_error():
    pairs = [*CONNECT, ("OUTP ON", None), ("SYST:ERR?", '-300,"Device-specific error: interlock open"')]
    with expected_protocol(laser(), pairs) as las, pytest.raises(InstrumentError) as e:
        las.emission(True)
    assert e.value.code == -300 and "'OUTP ON'" in str(e.value)


def test_emission_refused_while_hv_tripped():
    hv_t = ScriptedTransport([
        ("*CLS", None), ("*IDN?", "HV"), ("SOUR:VOLT?", "0.000"), ("OUTP?", "0"),
        ("SOUR:VOLT:LIM 6000", None), ("SYST:ERR?", OK), ("OUTP:PROT:TRIP?", "1"),
        ("OUTP:PROT:TRIP?", "0")])
    hv = ScpiHv(hv_t, "TCPIP::127.0.0.1::5025::SOCKET", limit_v=6000, ramp_v_per_s=200,
                clock=FakeClock())
    hv.connect()
    pairs = [*CONNECT, ("OUTP ON", None), ("SYST:ERR?", OK)]
    with expected_protocol(laser(hv), pairs) as las:
        with pytest.raises(SafetyError, match=r"'OUTP ON' refused: HV supply .* reports a trip"):
            las.emission(True)  # laser sees nothing: refused before sending
        las.emission(True)  # trip cleared: allowed
    hv_t.assert_consumed()


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_leaving_with_block_turns_emission_off(exc):
    t = ScriptedTransport([*CONNECT, ("OUTP OFF", None), ("OUTP?", "0")])
    las = laser()(t)
    las.connect()
    with pytest.raises(exc), las:
        raise exc()
    t.assert_consumed()
