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
