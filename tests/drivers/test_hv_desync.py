"""HV safety against supplies that fall out of step with the driver (audit 3, Dec 6), judged
from what the supply RECEIVED and the state it ends in:

- a reply line that never ends (bytes trickling in, no line end) must end in a timeout in
  bounded wall time, and must not hold back an off asked for from another thread (before:
  the read went on while bytes came, holding the driver's lock, so no off and no signal
  could reach the supply: HV stayed on);
- an output that ignores the off command once is switched off by a second one; one that
  ignores it for good has its setpoint ramped to 0 V within the ramp rule, and the off is
  reported as not verified (before: the output was left at its setpoint);
- a measured voltage above ``limit_v`` by more than a meter's error is a fault, output off
  (before: accepted while inside the 5 % agreement band: 6235 V on a 6000 V limit);
- a doubled reply is dropped before the next command, so it is never read as the answer to
  the next query (before: a doubled ``OUTP?`` "1" was read as a trip, a "fracture");
- a laser that ignores one emission-off is switched off by a second (before: "emission still
  reads ON" and left emitting until the CLI's second safe off).

Each runs over the raw SCPI socket, pyvisa-py's socket session, and the serial line protocol.
"""

from __future__ import annotations

import threading
import time

import pytest
from apt_daq.drivers.base import BadReply, DriverError, FakeClock
from apt_daq.drivers.hv import ScpiHv, SerialHv
from apt_daq.drivers.laser import ScpiLaser
from apt_daq.drivers.scpi import make_transport
from apt_daq.drivers.serial_line import SerialTransport
from fake_hv import FakeHv, wait_for
from fake_hv_line import FakeLineHv
from fake_laser import FakeLaser
from pty_device import pty_line_device
from test_hv_misbehaving import LIMIT_V, RAMP_V_PER_S, STEP_S, assert_ramp_rule

LINKS = ("socket", "visa", "line")
#: the measured-voltage and output-state queries of each protocol
MEAS = {"scpi": "MEAS:VOLT?", "line": "M?"}
OUTP = {"scpi": "OUTP?", "line": "O?"}
TRICKLE_S = 20.0  # how long an endless reply goes on (the old driver read it all)


def _desync(base: type[FakeHv]) -> type[FakeHv]:
    class Desync(base):  # type: ignore[misc, valid-type]
        endless: str | None = None  # this query is answered by a line that never ends
        doubled: str | None = None  # this query is answered twice
        ignore_off = 0  # this many output-off commands are acknowledged and ignored
        meas_gain: tuple[float, float] | None = None  # measured = a x setpoint + b

        def _handle(self, line: str):
            u = line.strip().upper()
            if self.is_off(line) and self.ignore_off > 0:
                self.ignore_off -= 1
                return "OK" if self.EOL == "\r\n" else None
            reply = super()._handle(line)
            if u == self.endless:
                return self._trickle
            if u in (MEAS["scpi"], MEAS["line"]) and self.meas_gain and self.on:
                a, b = self.meas_gain
                return f"{a * self.setpoint_v + b:.3f}"
            if u == self.doubled and reply is not None:
                return lambda conn: conn.sendall(((reply + self.EOL) * 2).encode("ascii"))
            return reply

        def _trickle(self, conn) -> None:
            def go() -> None:
                t_end = time.monotonic() + TRICKLE_S
                try:
                    while time.monotonic() < t_end and not self._stop.is_set():
                        conn.sendall(b"7" * 64)
                        time.sleep(0.005)
                except OSError:
                    return

            threading.Thread(target=go, daemon=True).start()

    return Desync


DesyncScpi, DesyncLine = _desync(FakeHv), _desync(FakeLineHv)


@pytest.fixture
def rig():
    """``rig(link, timeout_s)``: (fake supply, connected driver, clock, protocol); each closed
    at the test's end."""
    made: list = []

    def make(link: str, timeout_s: float = 0.3):
        fake, hv, clock, proto = _rig(link, timeout_s)
        made.append((fake, hv))
        return fake, hv, clock, proto

    yield make
    for fake, hv in made:
        hv.close()
        fake.close()


def _rig(link: str, timeout_s: float):
    clock = FakeClock()
    fake = (DesyncLine if link == "line" else DesyncScpi)("silent", clock)  # never misbehaves
    kw = dict(limit_v=LIMIT_V, ramp_v_per_s=RAMP_V_PER_S, ramp_step_s=STEP_S, retries=1,
              reconnect_deadline_s=1.0, clock=clock)
    if link == "line":
        hv = SerialHv(SerialTransport(fake.resource, timeout_s=timeout_s), fake.resource, **kw)
    else:
        hv = ScpiHv(make_transport(fake.resource, timeout_s, link), fake.resource, **kw)
    hv.connect()
    return fake, hv, clock, ("line" if link == "line" else "scpi")


@pytest.mark.parametrize("link", LINKS)
def test_endless_reply_times_out_and_the_supply_ends_off(link: str, rig) -> None:
    fake, hv, clock, proto = rig(link)
    hv.output(True)
    hv.ramp_to(1000.0)
    fake.endless = MEAS[proto]
    t0 = time.monotonic()
    with pytest.raises(DriverError) as err:
        hv.voltage()
    # two attempts of timeout_s 0.3 and a reconnect: seconds, not the 20 s of the trickle
    assert time.monotonic() - t0 < 6.0
    assert len(str(err.value)) < 400, "a run-on reply is quoted whole"
    t_off = clock.monotonic()
    hv.safe_off()
    assert fake.off_received_after(t_off) and not fake.on


@pytest.mark.parametrize("link", LINKS)
def test_an_off_from_another_thread_is_not_held_up_by_an_endless_reply(link: str, rig) -> None:
    """A signal handler or a suspender switching off while the run's thread reads."""
    fake, hv, _, proto = rig(link, timeout_s=0.5)
    hv.output(True)
    hv.ramp_to(1000.0)
    fake.endless = MEAS[proto]
    def read() -> None:
        with pytest.raises(DriverError):
            hv.voltage()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    time.sleep(0.2)  # the read is under way, the lock held
    t0 = time.monotonic()
    off = threading.Thread(target=hv.send_off, daemon=True)
    off.start()
    off.join(TRICKLE_S)
    took = time.monotonic() - t0
    # the off left at once after the read's own deadline (0.5 s) and a retry's ...
    assert not off.is_alive() and took < 3.0, took
    # ... and the supply received it (its server thread may still be reading it)
    assert wait_for(lambda: fake.off_received_after(0.0) and not fake.on, 2.0)
    reader.join(5.0)


@pytest.mark.parametrize("link", LINKS)
def test_an_off_ignored_once_is_sent_again_and_verified(link: str, rig) -> None:
    fake, hv, _, _ = rig(link)
    hv.output(True)
    hv.ramp_to(1000.0)
    fake.ignore_off = 1
    hv.safe_off()  # no error: the second off switched it off, and reads so
    assert not fake.on


@pytest.mark.parametrize("link", LINKS)
def test_an_output_that_never_switches_off_is_ramped_down(link: str, rig) -> None:
    fake, hv, clock, _ = rig(link)
    hv.output(True)
    hv.ramp_to(1500.0)
    fake.ignore_off = 1000
    t_fault = clock.monotonic()
    with pytest.raises(DriverError, match="still reads ON"):
        hv.safe_off()
    assert fake.on  # it really is stuck on ...
    assert fake.setpoint_v == 0.0  # ... but at 0 V
    after = [v for t, v, on in fake.setpoints() if t >= t_fault]
    assert after and after == sorted(after, reverse=True), "not a ramp down"
    assert_ramp_rule(fake)  # and no step on the live output broke the rule


@pytest.mark.parametrize("link", LINKS)
def test_a_measured_voltage_above_the_limit_is_a_fault(link: str, rig) -> None:
    fake, hv, clock, _ = rig(link)
    fake.meas_gain = (1.05, 40.0)  # 6235 V at 5900: inside a 5 % agreement band
    hv.output(True)
    hv.ramp_to(5900.0)
    clock.sleep(10.0)  # settled
    with pytest.raises(BadReply, match="above limit_v"):
        hv.voltage()
    assert not fake.on


@pytest.mark.parametrize("link", LINKS)
def test_a_doubled_reply_is_not_read_as_the_next_answer(link: str, rig) -> None:
    fake, hv, _, proto = rig(link)
    hv.output(True)
    hv.ramp_to(1000.0)
    fake.doubled = OUTP[proto]
    assert hv.output_on() is True
    fake.doubled = None
    assert hv.tripped() is False  # the stale "1" is no trip
    assert hv.output_on() is True and fake.on


class _OffOnceLaser(FakeLaser):
    """A laser that acknowledges its first emission-off command and keeps emitting."""

    ignore_off = 1

    def _handle(self, line: str):
        if self.is_off(line) and self.ignore_off > 0:
            self.ignore_off -= 1
            return None
        return super()._handle(line)


def test_a_laser_ignoring_one_emission_off_is_switched_off() -> None:
    clock = FakeClock()
    fake = _OffOnceLaser("silent", clock)  # never misbehaves otherwise
    laser = ScpiLaser(make_transport(fake.resource, 0.3, "socket"), fake.resource,
                      max_energy_pj=20.0, retries=1, reconnect_deadline_s=1.0, clock=clock)
    laser.connect()
    try:
        laser.set_energy(5.0)
        laser.emission(True)
        assert fake.on
        laser.safe_off()  # no error: the second off went out and reads back off
        assert not fake.on
        offs = [line for _, line, _ in fake.received if fake.is_off(line)]
        assert len(offs) == 2
    finally:
        laser.close()
        fake.close()


def test_a_serial_port_that_vanishes_is_a_driver_error() -> None:
    """The pty of a serial HV line closed mid-run (a USB adapter unplugged): pyserial's flush
    raises termios.error, which is no OSError; it escaped the driver raw, and the run's one
    error line ended "after: (5, 'Input/output error')". Now a ConnectionLost names the HV."""
    import os

    from apt_daq.drivers.base import ConnectionLost

    clock = FakeClock()
    fake = FakeLineHv("silent", clock)  # its protocol table; served here on a pty
    path, master, slave, stop = pty_line_device(
        lambda line: (fake._handle(line) + "\r\n").encode())
    hv = SerialHv(SerialTransport(path, timeout_s=0.3), path, limit_v=LIMIT_V,
                  ramp_v_per_s=RAMP_V_PER_S, ramp_step_s=STEP_S, retries=1,
                  reconnect_deadline_s=1.0, clock=clock)
    hv.connect()
    try:
        hv.output(True)
        hv.ramp_to(500.0)
        stop.set()
        os.close(master)  # the adapter is gone
        os.close(slave)
        with pytest.raises(DriverError) as err:
            hv.voltage()
        assert isinstance(err.value, ConnectionLost) and path in str(err.value)
    finally:
        hv.close()
        fake.close()
