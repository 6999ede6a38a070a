"""Signals through the emulator: a real `apt-daq run` driving the emulator process over its
wires (SCPI laser, serial-line HV, DLD stream) gets SIGHUP or SIGTERM mid-acquisition. Judged
from the emulator's own device log (what the instruments received): HV output and laser
emission end off; and from the run file: state ``aborted``, last /log row off, exit 128 + n."""

from __future__ import annotations

import signal

import pytest
from hil_support import final_state, start_run

from apt_daq.io.store import RunReader

pytestmark = pytest.mark.hil


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGTERM], ids=["SIGHUP", "SIGTERM"])
def test_signal_through_the_emulator_ends_safe(emulator, tmp_path, sig):
    emulator.reset()
    out = tmp_path / "sig.h5"
    proc = start_run(emulator, out)
    hv_on, laser_on = final_state(emulator.log())
    assert hv_on and laser_on  # the signal really lands mid-acquisition
    proc.send_signal(sig)
    proc.wait(timeout=60)
    stderr = proc.stderr.read().decode()
    assert proc.returncode == 128 + sig, (proc.returncode, stderr)
    assert "Traceback" not in stderr
    hv_on, laser_on = final_state(emulator.log())
    assert not hv_on and not laser_on, "the instruments did not receive off"
    with RunReader(out) as r:
        assert r.meta["state"] == "aborted"
        assert r.log[-1]["hv_on"] == 0 and r.log[-1]["laser_on"] == 0
