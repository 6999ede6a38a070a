"""A connect that fails after the link opened still switches the instrument off.

The audit's case (D3): an HV supply already on at 3000 V accepts the connection and never
answers ``*IDN?``. The driver's handshake times out, so it never counts as connected, and
``safe_off`` (which only acts on a connected driver) sent nothing: the supply received
``*CLS``, ``*IDN?`` and a disconnect, and stayed on at 3000 V. Now the failed connect sends
the documented handshake-free off (``OUTP OFF``, line protocol ``O 0``, laser ``OUTP OFF``)
on the link before closing it. Judged from what the fake instrument RECEIVED and its final
state; through the API and through ``apt-daq run`` (exit 2, one error line naming the
instrument).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from apt_daq.drivers.base import DriverError, FakeClock, WallClock
from apt_daq.drivers.hv import ScpiHv, SerialHv
from apt_daq.drivers.laser import ScpiLaser
from apt_daq.drivers.scpi import make_transport
from apt_daq.drivers.serial_line import SerialTransport
from fake_hv import FakeHv, wait_for
from fake_hv_line import FakeLineHv
from fake_laser import FakeLaser
from misbehaving_run import ROOT, assert_failed_naming

FAKES = {"scpi": FakeHv, "line": FakeLineHv}
TIMEOUT_S = 0.3


def already_on(fake: FakeHv, volts: float = 3000.0) -> FakeHv:
    """The supply as an earlier run left it: output on at ``volts``."""
    fake.setpoint_v, fake.on = volts, True
    return fake


def hv_driver(fake: FakeHv, *, clock=None) -> ScpiHv | SerialHv:
    kw = dict(limit_v=6000.0, ramp_v_per_s=200.0, retries=1, reconnect_deadline_s=1.0,
              clock=clock or FakeClock())
    if isinstance(fake, FakeLineHv):
        return SerialHv(SerialTransport(fake.resource, timeout_s=TIMEOUT_S), fake.resource, **kw)
    return ScpiHv(make_transport(fake.resource, TIMEOUT_S, "socket"), fake.resource, **kw)


def off_arrived(fake: FakeHv) -> bool:
    """Wait (a few s at most) for an off command among the lines after the fault: it may
    have gone out on a fresh connection the fake is still serving."""
    return wait_for(lambda: any(fake.is_off(ln) for ln in lines_after_fault(fake)), 5.0)


def lines_after_fault(fake: FakeHv) -> list[str]:
    return [line for _, line, _ in fake.received[fake.bad_since:]]


def assert_switched_off_after_idn(fake: FakeHv, what: str) -> None:
    """The identification query went unanswered, an off command arrived after it, and the
    instrument is off at the end."""
    after = lines_after_fault(fake)
    idn = [i for i, line in enumerate(after) if line.upper() in FakeHv.IDN_QUERIES]
    assert idn, f"the identification query never arrived: {after}"
    assert any(fake.is_off(line) for line in after[idn[0] + 1:]), (
        f"no off command after the unanswered identification: {after}")
    assert not fake.on, f"{what} is still on"


# ------------------------------------------------------------------ API


@pytest.mark.parametrize("protocol", FAKES)
def test_hv_silent_on_idn_while_on_is_switched_off(protocol: str) -> None:
    fake = already_on(FAKES[protocol]("silent", FakeClock()))
    fake.silent_on_idn()
    hv = hv_driver(fake)
    t0 = time.monotonic()
    try:
        with pytest.raises(DriverError) as e:
            hv.connect()
        off_arrived(fake)
    finally:
        fake.close()
    assert str(e.value).startswith(f"HV supply {fake.resource}: "), e.value
    assert not hv.connected and not hv.session.is_open
    assert_switched_off_after_idn(fake, "the supply's output")
    kinds = [c[0] for ln in lines_after_fault(fake) if (c := fake.classify(ln))]
    assert kinds == ["off"], kinds  # only the off went out: no setpoint, nothing on
    assert time.monotonic() - t0 < 10


def test_laser_silent_on_idn_while_emitting_is_switched_off() -> None:
    fake = FakeLaser("silent", FakeClock())
    fake.on = True  # emitting, as an earlier run left it
    fake.silent_on_idn()
    laser = ScpiLaser(make_transport(fake.resource, TIMEOUT_S, "socket"), fake.resource,
                      max_energy_pj=20.0, retries=1, reconnect_deadline_s=1.0,
                      clock=FakeClock())
    try:
        with pytest.raises(DriverError) as e:
            laser.connect()
        off_arrived(fake)
    finally:
        fake.close()
    assert str(e.value).startswith(f"laser {fake.resource}: "), e.value
    assert not laser.connected
    assert_switched_off_after_idn(fake, "the laser's emission")
    assert "OUTP OFF" in lines_after_fault(fake)


@pytest.mark.parametrize("protocol", FAKES)
def test_hv_garbage_handshake_while_on_is_switched_off(protocol: str) -> None:
    """Every reply junk from the first line: the handshake fails on a garbled reply (SCPI:
    ``SYST:ERR?`` after the limit; line: ``OK`` expected after ``L``), not a timeout."""
    fake = already_on(FAKES[protocol]("garbage", FakeClock(), at_once=True))
    hv = hv_driver(fake)
    try:
        with pytest.raises(DriverError, match=r"unexpected reply|expected OK") as e:
            hv.connect()
        off_arrived(fake)
    finally:
        fake.close()
    assert str(e.value).startswith(f"HV supply {fake.resource}: "), e.value
    assert any(fake.is_off(line) for _, line, _ in fake.received), fake.received
    assert not fake.on, "the supply's output is still on"


def test_hv_off_that_cannot_be_sent_is_noted_on_the_error() -> None:
    """The supply hangs up for good after the unanswered identification: the off cannot be
    sent; the error raised is still the handshake's, with a note saying the off failed."""
    fake = already_on(FakeHv("silent", FakeClock()))
    fake.silent_on_idn()
    hv = hv_driver(fake)
    transport = hv.session.transport
    real_open = transport.open

    def refused_after_first() -> None:  # the supply accepts one connection, then none
        if fake.connections:
            raise ConnectionRefusedError("refused (the supply hung up for good)")
        real_open()

    transport.open = refused_after_first  # type: ignore[method-assign]
    try:
        with pytest.raises(DriverError) as e:
            hv.connect()
    finally:
        fake.close()
    assert "OUTP OFF" not in [line for _, line, _ in fake.received]
    assert "no reply" in str(e.value)
    notes = getattr(e.value, "__notes__", [])
    assert any("off command could not be sent" in n for n in notes), notes


# ------------------------------------------------------------------ apt-daq run

CLI_RUN = """\
instrument: {root}/configs/instruments/leap5000xs.yaml
specimen: {root}/configs/specimens/nmc811-cr.yaml
drivers:
  laser: {laser}
  hv: {hv}
  dld: {{backend: sim}}
run:
  name: connect-fails
  laser_pj: 5.0
  start_voltage_v: 300
  chunk_pulses: 100000
  stop: {{ions: 100000, instrument_time_s: 600}}
"""
LINK = "timeout_s: 0.3, retries: 1, reconnect_deadline_s: 1.0"
HV_LINKS = {
    "scpi": '{{backend: scpi, resource: "{}", options: {{transport: socket}}, limit_v: 6000, '
            'ramp_v_per_s: 200, ' + LINK + '}}',
    "line": '{{backend: serial, url: "{}", limit_v: 6000, ramp_v_per_s: 200, ' + LINK + '}}'}
LASER_LINK = ('{{backend: scpi, resource: "{}", options: {{transport: socket}}, '
              'max_energy_pj: 20, ' + LINK + '}}')


def run_cli(fake: FakeHv, config_text: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    cfg = tmp_path / "run.yaml"
    cfg.write_text(config_text)
    try:
        proc = subprocess.run([sys.executable, "-m", "apt_daq.cli", "run", str(cfg), "-o",
                               str(tmp_path / "r.h5"), "--quiet"], capture_output=True,
                              text=True, timeout=120, cwd=ROOT)
    finally:
        fake.close()
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def assert_one_error_line(proc: subprocess.CompletedProcess[str], instrument: str) -> None:
    assert_failed_naming(proc, instrument)
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, proc.stderr


@pytest.mark.parametrize("protocol", FAKES)
def test_cli_run_hv_silent_on_idn_while_on_ends_off(tmp_path, protocol: str) -> None:
    fake = already_on(FAKES[protocol]("silent", WallClock()))
    fake.silent_on_idn()
    proc = run_cli(fake, CLI_RUN.format(root=ROOT, laser="{backend: sim}",
                                        hv=HV_LINKS[protocol].format(fake.resource)), tmp_path)
    assert_one_error_line(proc, f"HV supply {fake.resource}")
    assert_switched_off_after_idn(fake, "the supply's output")


def test_cli_run_laser_silent_on_idn_while_emitting_ends_off(tmp_path) -> None:
    fake = FakeLaser("silent", WallClock())
    fake.on = True
    fake.silent_on_idn()
    proc = run_cli(fake, CLI_RUN.format(root=ROOT, laser=LASER_LINK.format(fake.resource),
                                        hv="{backend: sim, limit_v: 12000}"), tmp_path)
    assert_one_error_line(proc, f"laser {fake.resource}")
    assert_switched_off_after_idn(fake, "the laser's emission")


def test_cli_run_hv_that_fails_its_connect_still_gets_the_laser_switched_off(tmp_path) -> None:
    """The HV supply opens first; when it failed, the laser's link was never opened, and a
    laser an earlier run left emitting stayed on (the run could not start, but 'every fault
    ends with HV and laser off'). Now the laser is reached to switch it off."""
    hv = FakeHv("silent", WallClock())
    hv.silent_on_idn()
    laser = FakeLaser("silent", WallClock())  # well-behaved: never told to misbehave
    laser.on = True  # emitting, as an earlier run left it
    try:
        proc = run_cli(hv, CLI_RUN.format(root=ROOT, laser=LASER_LINK.format(laser.resource),
                                          hv=HV_LINKS["scpi"].format(hv.resource)), tmp_path)
    finally:
        laser.close()
    assert_one_error_line(proc, f"HV supply {hv.resource}")
    assert any(laser.is_off(line) for _, line, _ in laser.received), laser.received
    assert not laser.on, "the laser is still emitting"
