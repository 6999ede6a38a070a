"""Laser safety judged from the instrument side, against a laser that misbehaves.

A script sets a fake SCPI laser (tests/drivers/fake_laser.py, written from the protocol table,
not from the emulator) to 5 pJ and turns emission on; the laser then turns bad (silent, late,
garbage, ``nan``, lying that it is off, dropping the link on ``OUTP OFF``) and the script
carries on as scripts do: reads the energy back, asks for more energy, for emission again and
for an energy above the ceiling, then leaves its ``with`` block. From what the laser RECEIVED:

- ``OUTP OFF`` arrived after the fault and the laser is not emitting at the end;
- no pulse energy above ``max_energy_pj`` (nor a non-finite one) was ever sent;
- every error the script saw is a DriverError naming the laser, and a ``nan`` read-back is
  an error, not a number;
- the whole thing is bounded in wall time and in connections.
"""

from __future__ import annotations

import math
import time

import pytest
from apt_daq.drivers.base import DriverError, FakeClock, SafetyError
from apt_daq.drivers.laser import ScpiLaser
from apt_daq.drivers.scpi import make_transport
from fake_hv import MODES
from fake_laser import FakeLaser
from misbehaving_run import ROOT, assert_failed_naming, assert_off_after_fault, run_against

MAX_PJ = 20.0


@pytest.mark.parametrize("mode", MODES)
def test_misbehaving_laser_ends_off_and_never_exceeds_its_ceiling(mode: str) -> None:
    clock = FakeClock()
    fake = FakeLaser(mode, clock)
    laser = ScpiLaser(make_transport(fake.resource, 0.3, "socket"), fake.resource,
                      max_energy_pj=MAX_PJ, retries=1, reconnect_deadline_s=1.0, clock=clock)
    laser.connect()
    seen: list[DriverError] = []
    read_back: list[float] = []
    t_wall = time.monotonic()
    try:
        with laser:
            laser.set_energy(5.0)
            laser.emission(True)
            assert fake.on
            t_fault = clock.monotonic()
            fake.misbehave()
            for step in (
                    lambda: read_back.append(laser.energy()),
                    lambda: laser.set_energy(10.0),
                    lambda: laser.emission(True),
                    lambda: laser.set_energy(MAX_PJ * 5),  # a script's typo: refused unsent
                    lambda: read_back.append(laser.energy())):
                clock.sleep(5.0)
                try:
                    step()
                except SafetyError as e:
                    seen.append(e)
                except DriverError as e:
                    seen.append(e)
    except DriverError as e:  # safe-off's own failure on leaving the block
        seen.append(e)
    elapsed = time.monotonic() - t_wall
    fake.close()
    assert fake.off_received_after(t_fault), "OUTP OFF never reached the laser"
    assert not fake.on, "the laser is still emitting"
    assert all(math.isfinite(e) and 0 <= e <= MAX_PJ for e in fake.energies()), fake.energies()
    assert all(math.isfinite(v) for v in read_back), read_back
    assert all(str(e).startswith(f"laser {fake.resource}: ") for e in seen), seen
    assert any(isinstance(e, SafetyError) for e in seen), "the 100 pJ request was not refused"
    if mode not in ("lies_off", "drop_on_off"):  # these answer queries correctly until then
        assert any(not isinstance(e, SafetyError) for e in seen), \
            "a misbehaving laser went unnoticed"
    assert elapsed < 30, f"{elapsed:.1f} s: reconnects not bounded"
    assert fake.connections < 40, f"{fake.connections} connections: a reconnect storm"


CLI_RUN = """\
instrument: {root}/configs/instruments/leap5000xs.yaml
specimen: {root}/configs/specimens/nmc811-cr.yaml
drivers:
  laser: {{backend: scpi, resource: "{resource}", options: {{transport: socket}},
           max_energy_pj: {max_pj}, timeout_s: 0.3, retries: 1, reconnect_deadline_s: 1.0}}
  hv: {{backend: sim, limit_v: 12000}}
  dld: {{backend: sim}}
run:
  name: misbehaving-laser
  laser_pj: 5.0
  start_voltage_v: 3000
  stop: {{ions: 5000000}}
"""


@pytest.mark.parametrize("mode", [m for m in MODES if m != "lies_off"])
def test_cli_run_against_a_misbehaving_laser(tmp_path, mode: str) -> None:
    """`apt-daq run` with the laser turning bad mid-acquisition (the simulated specimen under
    it, following what the laser is commanded): one error line naming the laser, exit 2, no
    traceback; OUTP OFF reached the laser after the fault, it is dark, and no energy above
    its ceiling was ever sent."""
    import threading

    from apt_daq.drivers.base import WallClock
    from fake_hv import wait_for

    fake = FakeLaser(mode, WallClock())

    def fault_mid_run() -> None:  # once emitting and polled for a while
        if wait_for(lambda: fake.on and len(fake.received) > 60, timeout_s=60):
            fake.misbehave()

    threading.Thread(target=fault_mid_run, daemon=True).start()
    proc = run_against(fake, CLI_RUN.format(root=ROOT, resource=fake.resource, max_pj=MAX_PJ),
                       tmp_path, timeout_s=300)
    assert_failed_naming(proc, f"laser {fake.resource}")
    assert_off_after_fault(fake, "the laser is still emitting")
    assert all(math.isfinite(e) and 0 <= e <= MAX_PJ for e in fake.energies()), fake.energies()
