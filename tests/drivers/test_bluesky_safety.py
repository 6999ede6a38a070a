"""Safety of bluesky control scripts, judged from what fake instruments (written from
docs/protocols.md, on loopback) RECEIVED and from their final state.

An outside audit (Dec 3 2026) found, with the devices and with ``acquire``:
- a ramp of ``devs.hv`` ran on to its target on a worker thread after ``RE.abort()`` had
  returned, and leaving the block waited for it with the laser emitting;
- SIGTERM / SIGHUP (and, until Dec 6, SIGUSR1: SLURM's warning before a time limit) to a
  script running ``acquire`` killed it with HV on and laser emitting;
- a pause asked for during ``acquire``'s ramp-up was taken after it (52 setpoints later) and
  emission went on after the user had asked to pause;
- a WatchSignal whose poll failed kept its last value (a dead vacuum gauge read "ok").
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("bluesky", reason="the bluesky extra is not installed")
pytest.importorskip("ophyd_async", reason="the bluesky extra is not installed")

import bluesky.plan_stubs as bps
from apt_daq.drivers.base import WallClock
from bluesky import RunEngine
from bluesky.utils import FailedStatus, RunEngineInterrupted
from fake_hv import FakeHv, wait_for
from fake_laser import FakeLaser

from apt_daq.bluesky import WatchSignal, acquire, open_devices

ROOT = Path(__file__).resolve().parents[2]
RUN = str(ROOT / "configs" / "runs" / "nmc811-cr-5pj.yaml")
RAMP_V_PER_S, STEP_S, MAX_STEP_V = 1000.0, 0.1, 100.0


def overrides(hv_resource: str, laser_resource: str) -> dict:
    scpi = {"backend": "scpi", "timeout_s": 1.0, "retries": 1, "reconnect_deadline_s": 1.0,
            "options": {"transport": "socket"}}
    return {"drivers.hv": {**scpi, "resource": hv_resource, "limit_v": 6000.0,
                           "ramp_v_per_s": RAMP_V_PER_S, "ramp_step_s": STEP_S,
                           "max_step_v": MAX_STEP_V},
            "drivers.laser": {**scpi, "resource": laser_resource, "max_energy_pj": 20.0},
            "drivers.dld": {"backend": "sim"}}


@pytest.fixture
def fakes():
    clock = WallClock()
    hv, laser = FakeHv("silent", clock), FakeLaser("silent", clock)  # never misbehave()d
    yield hv, laser
    hv.close()
    laser.close()


def setpoints_after(hv: FakeHv, t: float) -> list[float]:
    return [v for ts, v, _ in hv.setpoints() if ts > t and v > 0]


def test_device_ramp_stops_when_the_plan_fails(fakes) -> None:
    """A plan starts a 5 kV ramp of ``devs.hv`` (5 s) and raises 1 s in: the RunEngine stops
    the device, so the supply gets no further step after one ramp step's grace; HV and laser
    are off as soon as the block is left, not when the ramp would have ended."""
    hv, laser = fakes
    RE = RunEngine({})
    when: dict[str, float] = {}

    def plan(devs):
        yield from bps.abs_set(devs.hv, 5000, group="ramp")
        yield from bps.sleep(1.0)
        when["raise"] = time.monotonic()
        raise ValueError("a bug in the user's plan")

    with pytest.raises(ValueError, match="a bug"), open_devices(RUN, overrides(
            hv.resource, laser.resource)) as devs:
        RE(bps.mv(devs.hv.output, True))
        RE(bps.mv(devs.laser.energy, 5.0))
        RE(bps.mv(devs.laser.emission, True))
        assert laser.on
        RE(plan(devs))
    late = setpoints_after(hv, when["raise"] + 2 * STEP_S)
    assert late == [], f"the ramp ran on after the plan failed: {late[:3]} ... {late[-3:]}"
    assert max(v for _, v, _ in hv.setpoints()) < 2000  # ~1 s of a 1000 V/s ramp
    assert not hv.on and not laser.on
    off = [t for t, line, _ in laser.received if line == "OUTP OFF"]
    assert off and off[0] - when["raise"] < 1.0, (off, when)


def test_device_ramp_stops_on_abort_from_a_pause(fakes) -> None:
    hv, laser = fakes
    RE = RunEngine({})
    when: dict[str, float] = {}

    def pause_soon():
        time.sleep(1.0)
        when["pause"] = time.monotonic()
        RE.request_pause()

    with open_devices(RUN, overrides(hv.resource, laser.resource)) as devs:
        RE(bps.mv(devs.hv.output, True))
        threading.Thread(target=pause_soon, daemon=True).start()
        with pytest.raises(RunEngineInterrupted):
            RE(bps.mv(devs.hv, 5000))
        try:
            RE.abort()
        except FailedStatus as e:  # the stopped ramp's status may fail during the abort
            assert "ramp stopped at" in str(e), e
        time.sleep(0.5)
        late = setpoints_after(hv, when["pause"] + 2 * STEP_S)
        assert late == [], f"the ramp ran on after the abort: {late[:3]} ... {late[-3:]}"
        assert hv.on  # held where it got to: an abort of a plan is not an off
    assert not hv.on


CHILD = r'''
import sys
from bluesky import RunEngine
from apt_daq.bluesky import acquire
sys.path.insert(0, sys.argv[4])
from test_bluesky_safety import RUN, overrides
ov = overrides(sys.argv[1], sys.argv[2])
ov["run.stop.ions"] = 50_000_000
ov["run.start_voltage_v"] = 2000.0
RE = RunEngine({})
def cb(name, doc):
    if name == "event":
        print("EVENT", doc["seq_num"], flush=True)
RE(acquire(RUN, sys.argv[3], overwrite=True, overrides=ov), cb)
print("CHILD DONE", flush=True)
'''


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGHUP", "SIGUSR1"])
def test_a_signal_to_a_script_running_acquire_ends_with_hv_and_laser_off(
        fakes, tmp_path, signame) -> None:
    """A lab script (its own process) runs ``RE(acquire(...))``; the signal arrives after its
    third event. The supply and the laser get OUTP OFF, and then the process ends as the
    signal asks (killed by it: returncode -n), the run file kept."""
    import signal

    hv, laser = fakes
    out = tmp_path / "sig.h5"
    p = subprocess.Popen([sys.executable, "-c", CHILD, hv.resource, laser.resource, str(out),
                          str(Path(__file__).parent)], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    events = 0
    assert p.stdout is not None
    for line in p.stdout:
        events += line.startswith("EVENT")
        if events == 3:
            break
    assert events == 3, "the child never acquired"
    assert hv.on and laser.on
    t_sig = time.monotonic()
    sig = getattr(signal, signame)
    p.send_signal(sig)
    try:
        rest, _ = p.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        p.kill()
        raise
    assert p.returncode == -sig, (p.returncode, rest[-2000:])
    assert "CHILD DONE" not in rest
    assert wait_for(lambda: not hv.on and not laser.on, 2.0)
    for fake in (hv, laser):
        offs = [t for t, line, _ in fake.received if line == "OUTP OFF" and t >= t_sig]
        assert offs and offs[0] - t_sig < 2.0, [line for _, line, _ in fake.received[-8:]]
    assert out.exists()


def test_a_pause_during_the_ramp_up_holds_the_hv_and_keeps_the_laser_dark(fakes, tmp_path):
    """``acquire`` ramps to 5000 V (5 s at 1000 V/s); a pause 1 s in holds the HV at once (no
    setpoint after one step's grace), the laser never gets OUTP ON; the abort then ends it."""
    hv, laser = fakes
    RE = RunEngine({})
    when: dict[str, float] = {}

    def pause_soon():
        assert wait_for(lambda: hv.on, 30.0)
        time.sleep(1.0)
        when["pause"] = time.monotonic()
        RE.request_pause()

    ov = overrides(hv.resource, laser.resource)
    ov.update({"run.stop.ions": 3_000_000, "run.start_voltage_v": 5000.0})
    threading.Thread(target=pause_soon, daemon=True).start()
    with pytest.raises(RunEngineInterrupted):
        RE(acquire(RUN, tmp_path / "p.h5", overwrite=True, overrides=ov))
    assert RE.state == "paused"
    time.sleep(0.5)
    late = setpoints_after(hv, when["pause"] + 2 * STEP_S)
    assert late == [], f"the ramp-up ran on after the pause: {late[:3]} ... {late[-3:]}"
    assert hv.on and max(v for _, v, _ in hv.setpoints()) < 3000
    RE.abort()
    assert not hv.on and not laser.on
    assert "OUTP ON" not in [line for _, line, _ in laser.received]


def test_watch_signal_takes_its_fail_value_when_the_poll_fails() -> None:
    """A vacuum gauge that stops answering: with ``fail_value=False`` the signal reads False
    (a SuspendBoolLow pauses the run), not its last good True."""
    alive = [True]

    def gauge_ok() -> bool:
        if not alive[0]:
            raise OSError("gauge not answering")
        return True

    seen: list[object] = []
    sig = WatchSignal("vacuum_ok", poll=gauge_ok, poll_s=0.02, fail_value=False)
    def sub(value, **kw):
        seen.append(value)

    sig.subscribe(sub)
    assert sig.get() is True
    alive[0] = False
    assert wait_for(lambda: sig.get() is False, 2.0)
    assert seen[-1] is False
    keep = WatchSignal("kept", True, poll=gauge_ok, poll_s=0.02)  # no fail_value: as before
    def cb(value, **kw):
        pass

    keep.subscribe(cb)
    time.sleep(0.1)
    assert keep.get() is True
    for s, c in ((sig, sub), (keep, cb)):
        s.clear_sub(c)  # the poll threads end


def test_an_output_that_reads_off_with_no_trip_is_a_fault_not_a_state(fakes) -> None:
    """The engine logs ``output_on()`` each block: a supply that answers OUTP? 0 while on, and
    no trip, went on for 352 setpoints with every event saying ``hv_on False``. Now the read
    is a fault: OUTP OFF reaches the supply and a BadReply names it."""
    from apt_daq.drivers import BadReply
    from apt_daq.drivers.hv import ScpiHv
    from apt_daq.drivers.scpi import make_transport

    hv, _ = fakes
    drv = ScpiHv(make_transport(hv.resource, 1.0, "socket"), hv.resource, limit_v=6000.0,
                 ramp_v_per_s=RAMP_V_PER_S, ramp_step_s=STEP_S, max_step_v=MAX_STEP_V,
                 retries=1, reconnect_deadline_s=1.0)
    drv.connect()
    drv.output(True)
    drv.ramp_to(300.0)
    assert drv.output_on() and hv.on
    hv.mode = "lies_off"
    hv.misbehave()
    with pytest.raises(BadReply, match="reads OFF although the driver switched it ON and no "
                                       "trip is reported"):
        drv.output_on()
    assert not hv.on
    assert "OUTP OFF" in [line for _, line, _ in hv.received[hv.bad_since:]]
    drv.close()


def test_an_hv_trip_switches_an_emitting_laser_off(fakes) -> None:
    """With the devices, an HV trip (a fracture) left an emitting laser on until the script's
    block was left: only a new emission-on was refused. Now the first ``tripped()`` that reads
    the trip, whoever asks (a suspender's poll, a read of ``devs.hv.tripped``, the engine),
    sends the laser its OUTP OFF."""
    hv, laser = fakes
    RE = RunEngine({})
    with open_devices(RUN, overrides(hv.resource, laser.resource)) as devs:
        RE(bps.mv(devs.hv.output, True))
        RE(bps.mv(devs.hv, 500))
        RE(bps.mv(devs.laser.energy, 5.0))
        RE(bps.mv(devs.laser.emission, True))
        assert laser.on
        hv.trip()
        t_trip = time.monotonic()
        assert devs.hv.driver.tripped()  # as a suspender's poll would ask
        assert not laser.on
        offs = [t for t, line, _ in laser.received if line == "OUTP OFF" and t >= t_trip]
        assert offs, [line for _, line, _ in laser.received[-6:]]
        with pytest.raises(Exception, match="trip"):
            RE(bps.mv(devs.laser.emission, True))
        assert not laser.on
