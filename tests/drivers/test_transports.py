"""The drivers against real wires: pyvisa-sim instruments, the SCPI server on a loopback socket
(pyvisa-py and raw socket), the line protocol on a pty, on socket:// and on loop://."""

from __future__ import annotations

import itertools

import pytest
from apt_daq.drivers.base import BadReply, FakeClock, InstrumentError, SafetyError
from apt_daq.sim.devices import HvSupplyModel, LaserModel
from apt_daq.sim.scpi_server import serve_hv, serve_laser
from apt_daq.sim.serial_server import serve_hv_pty, serve_hv_tcp

from apt_daq import drivers


# --------------------------------------------------------------------------- pyvisa-sim
def test_pyvisa_sim_hv_from_yaml(tmp_path):
    cfg = tmp_path / "hv.yaml"
    cfg.write_text("hv:\n  backend: scpi\n  resource: configs/pyvisa-sim/hv.yaml@sim\n"
                   "  limit_v: 6000\n  ramp_v_per_s: 500\n  ramp_step_s: 1\n")
    clock = FakeClock()
    with drivers.open_hv(cfg, clock=clock) as hv:
        assert hv.idn.startswith("apt-daq,HV-PYVISA-SIM")
        assert hv.instrument_limit_v() == 6000.0  # the driver set it on connect
        hv.output(True)
        hv.ramp_to(1500)
        assert hv._read_setpoint() == 1500.0 and hv.output_on()
        assert clock.now_s == pytest.approx(3.0)  # 1500 V at 500 V/s
        with pytest.raises(SafetyError):
            hv.set_voltage(6500)
    # after the with block: off, at 0 V (pyvisa-sim state persists in the resource manager)
    with drivers.open_hv(cfg, clock=clock) as hv:
        assert not hv.output_on() and hv.setpoint_v == 0.0


def test_pyvisa_sim_laser_and_its_error_queue():
    with drivers.open_laser({"backend": "scpi",
                             "resource": "configs/pyvisa-sim/laser.yaml@sim"}) as las:
        las.set_energy(5)
        las.set_pulse_rate(250e3)
        assert las.energy() == 5.0 and las.pulse_rate() == 250e3
        las.emission(True)
        assert las.emission_on()
        with pytest.raises(InstrumentError) as e:
            las.set_pulse_rate(900e3)  # above the instrument's 500 kHz
        assert e.value.code == -100
    with drivers.open_laser({"backend": "scpi",
                             "resource": "configs/pyvisa-sim/laser.yaml@sim"}) as las:
        assert not las.emission_on()


# --------------------------------------------------------------------------- SCPI server
@pytest.mark.parametrize("transport", ["visa", "socket"])
def test_scpi_server_hv_safety_on_loopback(transport):
    clock = FakeClock()
    model = HvSupplyModel(slew_v_per_s=1e5)
    server, iface = serve_hv(model, clock=clock.monotonic)
    cfg = {"backend": "scpi", "resource": server.resource, "limit_v": 6000,
           "ramp_v_per_s": 200, "ramp_step_s": 0.5, "options": {"transport": transport}}
    try:
        with pytest.raises(RuntimeError), drivers.open_hv(cfg, clock=clock) as hv:
            assert model.limit_v == 6000.0
            hv.output(True)
            hv.ramp_to(1000)
            clock.sleep(0.01)  # the supply's own slew (1e5 V/s) follows the last setpoint
            assert hv.voltage() == pytest.approx(1000.0)
            with pytest.raises(SafetyError):
                hv.set_voltage(6001)
            raise RuntimeError("the script fails")
        assert not model.output_on and model.setpoint_v == 0.0
        sets = [(t, v) for t, what, v in model.received if what == "setpoint_v"]
        assert max(v for _, v in sets) == 1000.0
        for (t0, v0), (t1, v1) in itertools.pairwise(sets):
            assert abs(v1 - v0) <= 200 * (t1 - t0) + 1e-6 or v1 == 0.0
        assert iface.commands_seen[:5] == ["*CLS", "*IDN?", "SOUR:VOLT?", "OUTP?",
                                           "SOUR:VOLT:LIM 6000"]
    finally:
        server.stop()


def test_scpi_server_error_queue_and_long_forms():
    iface_model = HvSupplyModel()
    server, iface = serve_hv(iface_model)
    try:
        assert iface.handle("source:voltage 100") is None
        assert iface.handle("SOURce:VOLTage?") == "100.000"
        assert iface.handle("SOUR:VOLT 20000") is None
        assert iface.handle("BOGUS") is None
        assert iface.handle("SYST:ERR?").startswith("-222,")
        assert iface.handle("SYST:ERR?").startswith("-113,")
        assert iface.handle("SYST:ERR?") == '0,"No error"'
        assert iface.handle("*OPC?") == "1"
    finally:
        server.stop()


def test_scpi_server_laser_interlock():
    model = LaserModel()
    server, _ = serve_laser(model)
    try:
        with drivers.open_laser({"backend": "scpi", "resource": server.resource,
                                 "options": {"transport": "socket"}}) as las:
            model.open_interlock()
            assert las.interlock_open()
            with pytest.raises(InstrumentError, match="interlock open"):
                las.emission(True)
            model.close_interlock()
            las.emission(True)
            assert model.emission_on
        assert not model.emission_on
    finally:
        server.stop()


# --------------------------------------------------------------------------- serial line
def _serial_session(url: str, model: HvSupplyModel, clock: FakeClock) -> None:
    cfg = {"backend": "serial", "url": url, "limit_v": 5000, "ramp_v_per_s": 1000,
           "ramp_step_s": 0.5, "timeout_s": 2}
    with pytest.raises(KeyboardInterrupt), drivers.open_hv(cfg, clock=clock) as hv:
        assert hv.idn == "APT-DAQ,HV-SIM,0,1.0"
        hv.output(True)
        hv.ramp_to(2000)
        clock.sleep(0.01)
        assert hv.voltage() == pytest.approx(2000.0)
        with pytest.raises(SafetyError, match="'V 5001' refused"):
            hv.set_voltage(5001)
        model.trip()
        assert hv.tripped()
        with pytest.raises(InstrumentError) as e:
            hv.output(True)
        assert e.value.code == 4
        hv.clear_trip()
        raise KeyboardInterrupt
    assert not model.output_on and model.setpoint_v == 0.0 and model.limit_v == 5000.0


def test_serial_line_on_a_pty():
    clock = FakeClock()
    model = HvSupplyModel(slew_v_per_s=1e5)
    server, _ = serve_hv_pty(model, clock=clock.monotonic)
    try:
        _serial_session(server.path, model, clock)
    finally:
        server.stop()


def test_serial_line_on_socket_url():
    clock = FakeClock()
    model = HvSupplyModel(slew_v_per_s=1e5)
    server, iface = serve_hv_tcp(model, clock=clock.monotonic)
    try:
        _serial_session(server.url, model, clock)
        assert iface.commands_seen[:4] == ["ID?", "V?", "O?", "L 5000"]
    finally:
        server.stop()


def test_serial_loop_url_echo_is_a_bad_reply():
    # loop:// returns what was written: the driver must not take its own "ID?" for an answer
    # ... it does (any text is an identity), but "V?" echoed is not a setpoint
    with pytest.raises(BadReply, match=r"'V\?' unexpected reply: .*\(reply 'V\?'\)"):
        drivers.open_hv({"backend": "serial", "url": "loop://", "limit_v": 6000,
                         "timeout_s": 0.2, "retries": 0})


def test_serial_late_reply_after_timeout_is_discarded_not_taken_as_the_next_answer():
    """A device that answers the first query too late: the driver times out, and on the next
    query it must not read that late reply as the answer (reopening a serial port does not
    discard bytes in flight; the transport drains them)."""
    import os
    import time as _time

    from apt_daq.drivers.base import DriverTimeout
    from apt_daq.drivers.serial_line import SerialTransport
    from pty_device import pty_line_device

    answers = iter([(0.3, b"V 1111\r\n"), (0.0, b"V 2222\r\n"), (0.0, b"V 3333\r\n")])

    def answer(line: str) -> bytes:
        delay, reply = next(answers, (0.0, b"V 9999\r\n"))
        _time.sleep(delay)
        return reply

    path, master, slave, _ = pty_line_device(answer)
    from apt_daq.drivers.serial_line import LineSession

    t = SerialTransport(path, timeout_s=0.2)
    link = LineSession(t, path, retries=0)
    link.open()
    with pytest.raises(DriverTimeout):
        link.ask("V?", lambda s: float(s.split()[1]))
    # the late "V 1111" arrives 0.1 s into the next exchange: the reconnect must drain it
    # rather than read it as the answer
    assert link.ask("V?", lambda s: float(s.split()[1])) == 2222.0
    link.close()
    os.close(master)
    os.close(slave)
