"""Session control at odd times, judged from what fake SCPI instruments (written from
docs/protocols.md, on loopback) RECEIVED. An outside audit (Dec 5 2026) found:

- ``abort()`` called before ``run()`` still switched the HV on and ramped it to the start
  voltage before the abort was seen; ``pause()`` before ``run()`` held it there;
- ``pause()`` then ``resume()`` in quick succession during the ramp-up failed the run: the
  ramp's ``Interrupted`` was taken for an off once the pause had been cleared.
"""

from __future__ import annotations

import threading

import pytest
from apt_daq.drivers.base import WallClock
from fake_hv import FakeHv
from fake_laser import FakeLaser
from test_bluesky_safety import RUN, overrides

from apt_daq.run import Session, State


@pytest.fixture
def fakes():
    clock = WallClock()
    hv, laser = FakeHv("silent", clock), FakeLaser("silent", clock)  # never misbehave()d
    yield hv, laser
    hv.close()
    laser.close()


def session(fakes, tmp_path, **ov) -> Session:
    hv, laser = fakes
    o = overrides(hv.resource, laser.resource)
    o.update({"run.start_voltage_v": 2000.0, "run.stop.ions": 3000, **ov})
    return Session.from_yaml(RUN, o, out=tmp_path / "r.h5", handle_signals=False)


def hv_was_switched_on(hv: FakeHv) -> bool:
    return any(line.strip().upper() in ("OUTP ON", "OUTP 1") for _, line, _ in hv.received)


def test_abort_before_run_never_switches_the_hv_on(fakes, tmp_path):
    hv, laser = fakes
    s = session(fakes, tmp_path)
    s.abort()
    res = s.run()
    assert res.state == State.ABORTED and "before the HV came on" in res.reason
    assert not hv_was_switched_on(hv)
    assert [v for _, v, on in hv.setpoints() if v > 0] == []
    assert not hv.on and not laser.on


def test_pause_before_run_holds_with_the_hv_off_until_resumed(fakes, tmp_path):
    hv, laser = fakes
    s = session(fakes, tmp_path)
    s.pause()
    resumed: list[float] = []

    def resume() -> None:
        resumed.append(hv.clock.monotonic())
        s.resume()

    threading.Timer(1.5, resume).start()
    res = s.run()
    assert res.state == State.DONE, res.reason
    first_on = min(t for t, line, _ in hv.received if line.strip().upper() in ("OUTP ON",
                                                                              "OUTP 1"))
    assert first_on >= resumed[0]  # the supply was switched on only after the resume
    assert not hv.on and not laser.on


def test_pause_and_resume_at_once_during_the_ramp_up_do_not_fail_the_run(fakes, tmp_path):
    """Four threads pause and resume as fast as they can while the HV ramps to 2 kV (2 s at
    the fakes' 1 kV/s): the run completes, and the supply saw no step beyond the ramp rule."""
    hv, laser = fakes
    s = session(fakes, tmp_path)
    stop = threading.Event()

    def storm() -> None:
        while not stop.is_set():
            s.pause()
            s.resume()

    threads = [threading.Thread(target=storm) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        res = s.run()
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert res.state == State.DONE, res.reason
    assert not hv.on and not laser.on


def test_overrides_are_read_never_written(tmp_path):
    """A script kept a base dict of overrides and added a section per session: the first
    session's ``drivers.hv.limit_v`` was written into the caller's nested dict, and the next
    session, which asked for 6000 V, got 12000 V."""
    import copy

    from apt_daq.config import load_run

    base = {"drivers.hv": {"backend": "sim", "limit_v": 6000.0}}
    kept = copy.deepcopy(base)
    a = load_run(RUN, {**base, "drivers.hv.limit_v": 12000.0})
    b = load_run(RUN, base)
    assert base == kept
    assert (a.drivers.hv.limit_v, b.drivers.hv.limit_v) == (12000.0, 6000.0)


def test_a_fault_after_which_the_hv_is_not_verified_off_says_so_first(tmp_path):
    """The supply goes silent during the ramp-up: the fault is its timeout, and the safe off
    after it cannot be confirmed either. The one error a user reads led with the first fault
    only; it now says the HV was not verified off, naming the supply."""
    from apt_daq.drivers.base import DriverError

    clock = WallClock()
    hv, laser = FakeHv("silent", clock, after_setpoints=3), FakeLaser("silent", clock)
    try:
        s = session((hv, laser), tmp_path)
        with pytest.raises(DriverError) as err:
            s.run()
    finally:
        hv.close()
        laser.close()
    text = str(err.value)
    assert text.startswith(f"HV supply {hv.resource}") and "NOT verified off" in text, text
    assert len(text.splitlines()) == 1
    import h5py

    with h5py.File(tmp_path / "r.h5") as f:  # not read back from links that are gone
        last = f["log"][-1]
    assert (last["step"], last["hv_on"], last["laser_on"]) == (-1, 255, 255)
    lines = [line for _, line, _ in hv.received]
    first_off = next(i for i, line in enumerate(lines) if hv.is_off(line))
    assert not [ln for ln in lines[first_off:] if ln.startswith("MEAS")], lines[first_off:]


@pytest.mark.parametrize("kw", [{"pause_timeout_s": float("nan")}, {"pause_timeout_s": -1},
                                {"suspenders": 5}, {"md": "x"}])
def test_acquire_refuses_a_wrong_argument_before_anything_is_energised(fakes, tmp_path, kw):
    """``acquire(..., suspenders=5)`` ramped the HV to 2 kV with the laser emitting, then
    failed with a TypeError at the first block; a NaN pause timeout was taken."""
    from apt_daq.bluesky import acquire

    hv, laser = fakes
    with pytest.raises((TypeError, ValueError)):
        acquire(RUN, tmp_path / "a.h5", overrides=overrides(hv.resource, laser.resource), **kw)
    assert not hv_was_switched_on(hv) and not laser.on
