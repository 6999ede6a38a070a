"""A laser whose pulse-energy read-back lies is turned off, not believed and not switched on.

The audit's case (D5), ``max_energy_pj`` 20: the laser received ``SOUR:PULS:ENER 5``, answered
``SOUR:PULS:ENER?`` with 50, ``energy()`` returned 50.0 and ``OUTP ON`` followed. Now a
read-back above ``max_energy_pj``, or off the commanded energy by more than half the wire's
1 fJ quantum, is a SafetyError naming the laser and both values, ``OUTP OFF`` reaches the
laser, and emission is refused from then on (nothing more than ``OUTP OFF``/``OUTP?`` is
sent for it). Judged from what the fake laser RECEIVED and its final state.
"""

from __future__ import annotations

import pytest
from apt_daq.drivers.base import FakeClock, SafetyError
from apt_daq.drivers.laser import ScpiLaser
from apt_daq.drivers.scpi import make_transport
from fake_hv import wait_for
from fake_laser import FakeLaser

MAX_PJ = 20.0


def make(fake: FakeLaser) -> ScpiLaser:
    laser = ScpiLaser(make_transport(fake.resource, 2.0, "socket"), fake.resource,
                      max_energy_pj=MAX_PJ, retries=1, reconnect_deadline_s=1.0,
                      clock=FakeClock())
    laser.connect()
    return laser


def after_fault(fake: FakeLaser) -> list[str]:
    return [line for _, line, _ in fake.received[fake.bad_since:]]


def test_audit_case_energy_above_ceiling_before_emission() -> None:
    """5 pJ commanded, 50 read back: error, OUTP OFF, and OUTP ON never sent afterwards."""
    fake = FakeLaser("silent", FakeClock())  # never misbehave()d: only the lie
    laser = make(fake)
    laser.set_energy(5.0)
    fake.lie_about_energy(50.0)
    with pytest.raises(SafetyError) as e:
        laser.energy()
    msg = str(e.value)
    assert msg.startswith(f"laser {fake.resource}: 'SOUR:PULS:ENER?' "), msg
    assert "read back 50 pJ" in msg and "above max_energy_pj 20" in msg
    assert "commanded 5 pJ" in msg and "emission switched off" in msg
    with pytest.raises(SafetyError, match=r"'OUTP ON' refused: earlier pulse energy read back "
                                          r"50 pJ"):
        laser.emission(True)
    laser.close()
    fake.close()
    lines = after_fault(fake)
    assert "OUTP OFF" in lines, lines
    assert "OUTP ON" not in lines, lines
    assert not fake.on


def test_energy_above_ceiling_while_emitting_turns_emission_off() -> None:
    fake = FakeLaser("silent", FakeClock())
    laser = make(fake)
    laser.set_energy(5.0)
    laser.emission(True)
    assert fake.on
    fake.lie_about_energy(50.0)
    with pytest.raises(SafetyError, match=r"read back 50 pJ, above max_energy_pj 20"):
        laser.energy()
    assert wait_for(lambda: not fake.on, 2.0), "the laser is still emitting"
    with pytest.raises(SafetyError, match="refused"):
        laser.emission(True)
    laser.close()
    fake.close()
    lines = after_fault(fake)
    assert lines[0] == "SOUR:PULS:ENER?" and lines[1] == "OUTP OFF", lines  # off first
    assert "OUTP ON" not in lines, lines
    assert not fake.on


@pytest.mark.parametrize(("lie", "ok"), [
    (5.0, True),       # the commanded value
    (5.0004, True),    # rounds to it on the 1 fJ grid (a reply with more decimals)
    (5.001, False),    # one whole 1 fJ quantum off
    (4.5, False),      # below: still not what was commanded
    (12.0, False),     # within the ceiling but not the commanded energy
])
def test_read_back_must_be_the_commanded_energy(lie: float, ok: bool) -> None:
    fake = FakeLaser("silent", FakeClock())
    laser = make(fake)
    laser.set_energy(5.0)
    laser.emission(True)
    fake.energy_pj = lie  # the laser's energy drifted (answered with 4 decimals)
    fake.bad_since = len(fake.received)
    if ok:
        assert laser.energy() == pytest.approx(lie)
        laser.emission(True)
        assert fake.on
    else:
        with pytest.raises(SafetyError, match=rf"read back {lie:g} pJ, not the commanded 5 pJ"):
            laser.energy()
        with pytest.raises(SafetyError, match="refused"):
            laser.emission(True)
        assert "OUTP OFF" in after_fault(fake) and "OUTP ON" not in after_fault(fake)
        assert wait_for(lambda: not fake.on, 2.0)
    laser.safe_off()
    laser.close()
    fake.close()
    assert not fake.on


def test_energy_found_at_connect_is_the_reference_until_one_is_commanded() -> None:
    """Nothing commanded: the energy the laser had at connect (7 pJ, within the ceiling) is
    what its read-backs must match; an energy nobody sent is a fault."""
    fake = FakeLaser("silent", FakeClock())
    fake.energy_pj = 7.0  # as the laser was left
    laser = make(fake)
    assert laser.energy() == 7.0
    fake.lie_about_energy(MAX_PJ + 1)
    with pytest.raises(SafetyError, match=r"read back 21 pJ, above max_energy_pj 20 "
                                          r"\(commanded 7 pJ\)"):
        laser.energy()
    laser.close()
    fake.close()
    assert "OUTP OFF" in after_fault(fake)
    assert not fake.on


CLI_RUN = """\
instrument: {root}/configs/instruments/leap5000xs.yaml
specimen: {root}/configs/specimens/nmc811-cr.yaml
drivers:
  laser: {{backend: scpi, resource: "{resource}", options: {{transport: socket}},
           max_energy_pj: {max_pj}, timeout_s: 2, retries: 1, reconnect_deadline_s: 1.0}}
  hv: {{backend: sim, limit_v: 12000}}
  dld: {{backend: sim}}
run:
  name: lying-laser
  laser_pj: 5.0
  start_voltage_v: 3000
  stop: {{ions: 5000000}}
"""


def test_cli_run_with_a_laser_lying_about_its_energy(tmp_path) -> None:
    """`apt-daq run`, the laser starting to answer 50 pJ mid-acquisition: exit 2, one error
    line naming the laser and both energies, OUTP OFF received, and no OUTP ON after."""
    import subprocess
    import sys
    import threading

    from apt_daq.drivers.base import WallClock
    from misbehaving_run import ROOT

    fake = FakeLaser("silent", WallClock())

    def lie_mid_run() -> None:
        if wait_for(lambda: fake.on and len(fake.received) > 60, timeout_s=60):
            fake.lie_about_energy(50.0)

    threading.Thread(target=lie_mid_run, daemon=True).start()
    cfg = tmp_path / "run.yaml"
    cfg.write_text(CLI_RUN.format(root=ROOT, resource=fake.resource, max_pj=MAX_PJ))
    try:
        proc = subprocess.run([sys.executable, "-m", "apt_daq.cli", "run", str(cfg), "-o",
                               str(tmp_path / "r.h5"), "--quiet"], capture_output=True,
                              text=True, timeout=300, cwd=ROOT)
    finally:
        fake.close()
    assert fake.energy_lie_pj is not None, "the lie never started"
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 2, proc.stdout + proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    assert errors[0].startswith(f"error: laser {fake.resource}: "), errors
    assert "read back 50 pJ, above max_energy_pj 20" in errors[0], errors
    lines = after_fault(fake)
    assert "OUTP OFF" in lines and "OUTP ON" not in lines, lines[-10:]
    assert not fake.on, "the laser is still emitting"
