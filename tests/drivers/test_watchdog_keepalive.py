"""The drivers' side of the link watchdog, against the emulator's instruments over loopback:
``watchdog_s`` arms it in the connect handshake; a keepalive feeds it while the driver is
idle, so a quiet script keeps HV on; when the driver's process stops talking (here: its
keepalive stopped and nothing sent, as after SIGKILL) the instrument switches off; and an
instrument without the command fails the connect with its own error instead of running
unguarded."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
from apt_daq.drivers.base import DriverError, FakeClock
from apt_daq.drivers.hv import ScpiHv
from apt_daq.drivers.laser import ScpiLaser
from apt_daq.drivers.scpi import make_transport
from fake_hv import FakeHv

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sim"))
from emulator_support import loopback_emulator

WATCHDOG_S = 0.6


@pytest.fixture(scope="module")
def emu():
    """One emulator on loopback for the module (tests/sim/emulator_support.py)."""
    with loopback_emulator() as e:
        yield e


def hv_driver(resource: str, watchdog_s: float = WATCHDOG_S) -> ScpiHv:
    return ScpiHv(make_transport(resource, 1.0, "socket"), resource, limit_v=6000,
                  ramp_v_per_s=5000, ramp_step_s=0.02, watchdog_s=watchdog_s)


def test_an_idle_driver_keeps_its_output_and_a_dead_one_does_not(emu):
    emu.reset()
    hv = hv_driver(emu.ports["hv"])
    laser = ScpiLaser(make_transport(emu.ports["laser"], 1.0, "socket"), emu.ports["laser"],
                      max_energy_pj=50, watchdog_s=WATCHDOG_S)
    hv.connect()
    laser.connect()
    try:
        assert emu.interfaces["hv"].watchdog_s == WATCHDOG_S  # armed by the handshake
        assert emu.interfaces["laser"].watchdog_s == WATCHDOG_S
        hv.output(True)
        hv.ramp_to(500)
        laser.emission(True)
        time.sleep(5 * WATCHDOG_S)  # the script does nothing for five watchdog periods
        assert emu.leap.hv.output_on and emu.leap.laser.emission_on
        assert hv._keepalive is not None and hv._keepalive.sent >= 3
        assert hv.voltage() > 0  # the link is still in step after the keepalives
        # the process "dies": its keepalive stops and nothing is sent any more
        hv._keepalive.stop()
        laser._keepalive.stop()
        t0 = time.monotonic()
        while emu.leap.hv.output_on or emu.leap.laser.emission_on:
            assert time.monotonic() - t0 < WATCHDOG_S + 2.0, "the watchdog did not fire"
            time.sleep(0.02)
    finally:
        hv.close()
        laser.close()


def test_keepalive_and_a_busy_script_share_the_link(emu):
    """A script querying as fast as it can while the keepalive runs: every reply is the
    answer to its own question (no keepalive reply read as a voltage)."""
    emu.reset()
    hv = hv_driver(emu.ports["hv"], watchdog_s=0.2)  # a keepalive every 50 ms of quiet
    hv.connect()
    try:
        hv.output(True)
        hv.ramp_to(300)
        t0 = time.monotonic()
        n = 0
        while time.monotonic() - t0 < 2.0:
            assert hv.instrument_limit_v() == 6000.0
            assert hv.output_on() is True
            n += 1
            if n % 50 == 0:
                time.sleep(0.2)  # quiet spells let the keepalive in
        assert hv._keepalive is not None and hv._keepalive.sent >= 3
        assert emu.leap.hv.output_on
    finally:
        hv.close()


def test_closing_the_driver_stops_its_keepalive(emu):
    emu.reset()
    hv = hv_driver(emu.ports["hv"])
    hv.connect()
    ka = hv._keepalive
    hv.close()
    assert ka is not None and not ka._thread.is_alive()


def test_an_instrument_without_the_watchdog_fails_the_connect():
    clock = FakeClock()
    fake = FakeHv("silent", clock)  # answers correctly; -113 to a command it does not know
    try:
        hv = ScpiHv(make_transport(fake.resource, 0.5, "socket"), fake.resource,
                    limit_v=6000, ramp_v_per_s=200, watchdog_s=5.0, clock=clock)
        with pytest.raises(DriverError, match=r"HV supply .*-113"):
            hv.connect()
        assert not fake.on
    finally:
        fake.close()
