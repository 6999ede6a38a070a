"""The laser's state is read before anything is set: on connect and on every reconnect.

Before, the SCPI laser's handshake was ``*CLS`` and ``*IDN?`` only: a laser an earlier run left
emitting at 50 pJ (``max_energy_pj`` 20) was connected to as it was, and a laser that rebooted
mid-run (dark, energy back to its default) was reconnected to silently while the run went on
with the HV feedback chasing the missing pulses. Judged from what the fake laser (written
from docs/protocols.md's command table) RECEIVED and from its final state.
"""

from __future__ import annotations

import pytest
from apt_daq.drivers.base import DriverError, FakeClock, SafetyError
from apt_daq.drivers.laser import ScpiLaser
from apt_daq.drivers.scpi import make_transport
from fake_hv import wait_for
from fake_laser import FakeLaser

MAX_PJ = 20.0


def driver(fake: FakeLaser) -> ScpiLaser:
    return ScpiLaser(make_transport(fake.resource, 2.0, "socket"), fake.resource,
                     max_energy_pj=MAX_PJ, retries=1, reconnect_deadline_s=1.0,
                     clock=FakeClock())


def received(fake: FakeLaser, since: int = 0) -> list[str]:
    return [line for _, line, _ in fake.received[since:]]


def fake_laser(*, on: bool, pj: float) -> FakeLaser:
    fake = FakeLaser("silent", FakeClock())  # never misbehave()d: served as documented
    fake.on, fake.energy_pj = on, pj
    return fake


def test_found_emitting_above_ceiling_is_switched_off_and_connect_fails() -> None:
    fake = fake_laser(on=True, pj=50.0)
    laser = driver(fake)
    with pytest.raises(SafetyError) as e:
        laser.connect()
    msg = str(e.value)
    assert msg.startswith(f"laser {fake.resource}: "), msg
    assert "found emitting at 50 pJ, above max_energy_pj 20" in msg, msg
    assert "emission switched off" in msg, msg
    assert not laser.connected
    assert wait_for(lambda: not fake.on, 2.0), "the laser is still emitting"
    lines = received(fake)
    assert "OUTP OFF" in lines, lines
    assert not any(line.startswith("SOUR:PULS:ENER ") for line in lines), lines  # nothing set
    fake.close()


def test_found_emitting_within_ceiling_is_taken_as_it_is() -> None:
    """Connecting changes nothing; the energy found becomes the one the read-backs must match."""
    fake = fake_laser(on=True, pj=5.0)
    laser = driver(fake)
    laser.connect()
    assert fake.on and laser.commanded_emission and laser.emission_on()
    assert laser.energy() == 5.0
    assert "OUTP OFF" not in received(fake)
    fake.lie_about_energy(7.0)  # a read-back it was not set to, below the ceiling
    with pytest.raises(SafetyError, match=r"read back 7 pJ, not the commanded 5 pJ"):
        laser.energy()
    assert wait_for(lambda: not fake.on, 2.0)
    laser.close()
    fake.close()


def test_dark_laser_set_above_ceiling_stays_dark_until_set_energy() -> None:
    fake = fake_laser(on=False, pj=50.0)
    laser = driver(fake)
    laser.connect()  # dark: nothing to switch off
    with pytest.raises(SafetyError, match=r"'OUTP ON' refused: the laser was found set to "
                                          r"50 pJ, above max_energy_pj 20; set_energy first"):
        laser.emission(True)
    assert "OUTP ON" not in received(fake) and not fake.on
    laser.set_energy(5.0)
    laser.emission(True)
    assert fake.on and fake.energy_pj == 5.0
    laser.safe_off()
    laser.close()
    fake.close()


def test_nan_energy_at_connect_fails_the_connect_with_off_sent() -> None:
    fake = fake_laser(on=True, pj=float("nan"))
    laser = driver(fake)
    with pytest.raises(DriverError, match=r"SOUR:PULS:ENER\?.*not a finite number"):
        laser.connect()
    assert not laser.connected
    assert wait_for(lambda: not fake.on, 2.0), "the laser is still emitting"
    fake.close()


def test_reboot_mid_run_is_a_fault_not_a_silent_reconnect() -> None:
    """Emitting at 5 pJ, the laser power-cycles (dark, 0 pJ, link dropped). The next call
    reconnects and must not carry on: a SafetyError, OUTP OFF, emission refused from then on."""
    fake = fake_laser(on=False, pj=0.0)
    laser = driver(fake)
    laser.connect()
    laser.set_energy(5.0)
    laser.emission(True)
    assert fake.on
    fake.reboot()
    with pytest.raises(DriverError) as e:
        for _ in range(3):  # the first call may only notice the dropped link
            laser.emission_on()
    assert "after a reconnect emission reads OFF, commanded ON" in str(e.value), str(e.value)
    with pytest.raises(SafetyError, match="refused"):
        laser.emission(True)
    lines = received(fake, fake.bad_since)
    assert "OUTP ON" not in lines and not fake.on, lines
    laser.close()
    fake.close()


def test_reboot_while_dark_at_another_energy_is_a_fault() -> None:
    fake = fake_laser(on=False, pj=0.0)
    laser = driver(fake)
    laser.connect()
    laser.set_energy(5.0)
    fake.reboot()  # dark before and after, but the energy is back to 0
    with pytest.raises(DriverError) as e:
        for _ in range(3):
            laser.pulse_rate()
    assert "pulse energy reads 0 pJ, commanded 5 pJ" in str(e.value), str(e.value)
    with pytest.raises(SafetyError, match="refused"):
        laser.emission(True)
    assert "OUTP ON" not in received(fake) and not fake.on
    laser.close()
    fake.close()


def test_dropped_link_with_the_state_kept_reconnects_and_carries_on() -> None:
    fake = fake_laser(on=False, pj=0.0)
    laser = driver(fake)
    laser.connect()
    laser.set_energy(5.0)
    laser.emission(True)
    fake.drop_links()
    on = None
    for _ in range(3):  # the first call may fail on the dropped link; a later one reconnects
        try:
            on = laser.emission_on()
            break
        except DriverError as e:
            assert "after a reconnect" not in str(e), e
    assert on is True and fake.on and laser.energy_fault is None
    assert laser.energy() == 5.0
    laser.safe_off()
    assert not fake.on
    laser.close()
    fake.close()
