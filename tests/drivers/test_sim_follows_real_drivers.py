"""A simulated detector under real instruments (``dld: sim`` with an SCPI HV supply and an
SCPI laser): the virtual specimen must see what the real drivers command.

Found by running the misbehaving-supply CLI test on the line protocol (Dec 2026): the virtual
instrument's own supply model was never switched on, so the specimen sat at 0 V, the run
recorded 74 000 detector-background "ions" at ``v_dc`` 0 and ended ``done``; the end-of-run
summary then failed with exit 2 ("m/n cannot be computed").

Judged from outside: the setpoints and pulse energies the fake instruments (written from the
protocol table, tests/drivers/fake_hv.py and fake_laser.py) RECEIVED, against the voltage and
energy stamped on the stored hits and the simulator's truth (evaporated ions, not background).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
from apt_daq.drivers.base import WallClock
from fake_hv import FakeHv
from fake_laser import FakeLaser

from apt_daq.io.store import RunReader

ROOT = Path(__file__).resolve().parents[2]
RUN = """\
instrument: {root}/configs/instruments/leap5000xs.yaml
specimen: {root}/configs/specimens/nmc811-cr.yaml
drivers:
  laser: {{backend: scpi, resource: "{laser}", options: {{transport: socket}}}}
  hv: {{backend: scpi, resource: "{hv}", options: {{transport: socket}}, limit_v: 12000,
        ramp_v_per_s: 4000, ramp_step_s: 0.05}}
  dld: {{backend: sim}}
run:
  name: sim-under-real
  laser_pj: 7.5
  start_voltage_v: 3000
  stop: {{ions: 20000, instrument_time_s: 3000}}
"""


def test_the_virtual_specimen_sees_the_real_supply_and_laser(tmp_path):
    hv, laser = FakeHv("silent", WallClock()), FakeLaser("silent", WallClock())  # never bad
    cfg = tmp_path / "run.yaml"
    cfg.write_text(RUN.format(root=ROOT, hv=hv.resource, laser=laser.resource))
    proc = subprocess.run([sys.executable, "-m", "apt_daq.cli", "run", str(cfg), "-o",
                           str(tmp_path / "r.h5"), "--quiet"], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)
    hv.close()
    laser.close()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    sent_v = np.array([v for _, v, on in hv.setpoints() if on])
    assert 7.5 in laser.energies()
    with RunReader(tmp_path / "r.h5") as r:
        hits = r.read("hits")
        truth = r.read("truth")
    v = hits["v_dc"]
    assert len(hits) >= 20000
    # the specimen sat at the supply's voltage: every hit within what the supply was sent
    # (the model slews to a setpoint, so it lags, never leads), and the run well above 0 V.
    # The run file stores V_dc as float32; rounding is monotonic, so the bound is the
    # float32 of the highest setpoint sent (3079.113 V is stored as 3079.11304)
    top = np.float32(sent_v.max())
    assert v.min() > 0 and v.max() <= top, (v.min(), v.max(), sent_v.max())
    assert np.median(v) > 1000
    assert np.all(hits["laser_pj"] == 7.5)
    # evaporated ions, not only detector background (a specimen at 0 V gives background
    # only). Their share depends on how fast the supply climbs in wall time while the
    # simulator fires pulses at its own pace, so a count, not a share: a run of the shipped
    # all-sim config to 20 000 ions from 2 kV holds ~2 000
    evaporated = truth["species"] >= 0
    assert evaporated.sum() >= 1000, evaporated.sum()
    assert v[evaporated].min() > 2500  # field evaporation needs the field
