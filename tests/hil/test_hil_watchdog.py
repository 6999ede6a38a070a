"""A controller that dies without a word: `apt-daq run` driving the emulator process over its
wires is killed with SIGKILL mid-acquisition (no handler runs, no safe-off is sent; as a
crash, an OOM kill or a pulled cable). The shipped HIL config arms both instruments' link
watchdogs (``watchdog_s: 5``), so the instruments themselves switch HV and the laser off.
Judged from the emulator's device log and state: both off within the watchdog time plus a
tick, and the emulator says why."""

from __future__ import annotations

import time

import pytest
import yaml
from hil_support import HIL_RUN, final_state, start_run

pytestmark = pytest.mark.hil

WATCHDOG_S = yaml.safe_load(HIL_RUN.read_text())["drivers"]["hv"]["watchdog_s"]


def test_a_killed_controller_leaves_hv_and_laser_off(emulator, tmp_path):
    emulator.reset()
    proc = start_run(emulator, tmp_path / "kill.h5")
    assert final_state(emulator.log()) == (True, True)  # mid-acquisition
    proc.kill()  # SIGKILL: nothing of the controller runs any more
    proc.wait(timeout=30)
    t_kill = time.monotonic()
    off_after = None
    while time.monotonic() - t_kill < WATCHDOG_S + 10:
        s = emulator.control("status")
        if not s["hv_output_on"] and not s["laser_emission_on"]:
            off_after = time.monotonic() - t_kill
            break
        time.sleep(0.1)
    assert off_after is not None, "HV or laser still on 10 s after the watchdog time"
    assert off_after <= WATCHDOG_S + 2.0, f"off {off_after:.1f} s after the kill"
    log = emulator.log()
    assert final_state(log) == (False, False)
    events = [what for _, what in log["events"]]
    assert any("hv_serial: watchdog" in e for e in events), events
    assert any("laser: watchdog" in e for e in events), events


def test_a_paused_run_keeps_its_output_past_the_watchdog(emulator, tmp_path):
    """The keepalive feeds the watchdogs while the run engine waits (SIGINT pauses a run):
    three watchdog periods paused, HV and laser still on; then SIGTERM ends it safely."""
    import signal

    emulator.reset()
    proc = start_run(emulator, tmp_path / "pause.h5")
    proc.send_signal(signal.SIGINT)
    time.sleep(3 * WATCHDOG_S)
    log = emulator.log()
    events = [what for _, what in log["events"]]
    assert not any("watchdog" in e for e in events), events
    assert final_state(log)[0], "HV went off during a pause"
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    assert final_state(emulator.log()) == (False, False)
