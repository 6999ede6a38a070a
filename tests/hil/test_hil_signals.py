"""Signals through the emulator: a real `apt-daq run` driving the emulator process over its
wires (SCPI laser, serial-line HV, DLD stream) gets SIGHUP or SIGTERM mid-acquisition. Judged
from the emulator's own device log (what the instruments received): HV output and laser
emission end off; and from the run file: state ``aborted``, last /log row off, exit 128 + n."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest
from hil_support import HIL_RUN, ROOT, final_state

from apt_daq.io.store import RunReader

pytestmark = pytest.mark.hil


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGTERM], ids=["SIGHUP", "SIGTERM"])
def test_signal_through_the_emulator_ends_safe(emulator, tmp_path, sig):
    emulator.reset()
    out = tmp_path / "sig.h5"
    proc = subprocess.Popen(
        [sys.executable, "-m", "apt_daq.cli", "run", str(HIL_RUN), "--ports-file",
         str(emulator.ports_file), "-o", str(out), "--ions", "100000000", "--quiet"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(proc.stderr.read().decode())
        try:
            with RunReader(out) as r:
                if r.count("hits") > 3000:
                    break
        except Exception:  # not there yet
            pass
        time.sleep(0.1)
    else:
        proc.kill()
        raise AssertionError("no hits in time")
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
