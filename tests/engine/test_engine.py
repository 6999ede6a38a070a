"""The run engine on the simulator: rate held, limits kept, steps marked, every end safe."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from apt_daq.config import load_run
from apt_daq.io.store import RunReader
from apt_daq.run import Session, State, Suspender

ROOT = Path(__file__).resolve().parents[2]
RUN = ROOT / "configs/runs/nmc811-cr-5pj.yaml"


def small(**over):
    o = {"run.stop.ions": 40_000, "run.chunk_pulses": 500_000, "run.seed": 5}
    o.update(over)
    return load_run(RUN, o)


def settled_rates(log, target, skip_blocks=8):
    """Block rates after the rate first reached half the target, minus a settling margin."""
    acq = log[(log["laser_on"] == 1) & (log["pulses"] > 0)]
    rates = acq["rate"]
    first = int(np.argmax(rates > 0.5 * target))
    return acq[first + skip_blocks:]


def test_constant_energy_holds_rate_and_limits(tmp_path):
    """Block by block at the base block size (fixed blocks: max_block_pulses = chunk_pulses),
    so the loop is watched at its finest step."""
    rf = small(**{"run.stop.ions": 60_000, "run.max_block_pulses": 500_000})
    res = Session(rf, out=tmp_path / "a.h5").run()
    assert res.state == State.DONE and res.ions >= 60_000
    with RunReader(tmp_path / "a.h5") as r:
        log = r.log
        assert r.meta["state"] == "done"
        assert r.count("hits") == r.count("truth") == r.count("derived") == res.ions
    target = rf.run.target_detection_rate
    tail = settled_rates(log, target)
    assert len(tail) >= 5
    assert np.all(np.abs(tail["rate"] / target - 1) < 0.10), tail["rate"]
    # never above the limit, never faster than the ramp (checked from what was logged)
    assert log["v_setpoint"].max() <= rf.drivers.hv.limit_v
    on = (log["hv_on"][1:] == 1) & (log["hv_on"][:-1] == 1)  # switching off may drop at once
    dv = np.abs(np.diff(log["v_setpoint"].astype(float)))[on]
    dt = np.diff(log["time_s"])[on]
    assert len(dv) > 10
    assert np.all(dv <= rf.drivers.hv.ramp_v_per_s * dt + 1e-3)
    # the last row: HV and laser off
    assert log["hv_on"][-1] == 0 and log["laser_on"][-1] == 0


def test_schedule_steps_are_marked_and_each_holds_rate(tmp_path):
    rf = small(**{"run.stop.ions": 10**6})
    rf = rf.model_copy(update={"run": rf.run.model_copy(update={
        "laser_pj": None,
    })})
    d = rf.model_dump()
    d["run"]["schedule"] = [dict(laser_pj=e, ions=40_000) for e in (5.0, 10.0, 15.0, 20.0)]
    rf = type(rf).model_validate(d)
    res = Session(rf, out=tmp_path / "s.h5").run()
    assert res.state == State.DONE, res.reason
    assert "schedule done" in res.reason
    with RunReader(tmp_path / "s.h5") as r:
        log = r.log
        hits = r.read("hits")
    target = rf.run.target_detection_rate
    for step, energy in enumerate((5.0, 10.0, 15.0, 20.0)):
        rows = log[(log["step"] == step) & (log["laser_on"] == 1)]
        assert np.allclose(rows["laser_pj"], energy)
        tail = rows[2:]
        assert len(tail) >= 3, f"step {step}: too few settled blocks"
        # each of the last three blocks within 10 % of the target (a 2500-ion block with
        # multi-hit clumps scatters ~3 %), their mean within 5 %: a loop that carried its own
        # approach forward as drift sat at +7 to +11 % here (issue 22)
        last = tail["rate"][-3:] / target
        assert np.all(np.abs(last - 1) < 0.10) and abs(np.mean(last) - 1) < 0.05, (
            step, tail["rate"])
    # each hit carries the energy of its step: analysis can split by it
    assert set(np.unique(hits["laser_pj"])) == {5.0, 10.0, 15.0, 20.0}


def test_hv_trip_ends_failed_and_safe(tmp_path):
    def trip_after_3(session, info):
        if info["ions"] > 0 and session._ins.virtual is not None and info["pulses"] > 3e6:
            session._ins.virtual.hv.trip()

    res = Session(small(), out=tmp_path / "t.h5", on_block=trip_after_3).run()
    assert res.state == State.FAILED and "tripped" in res.reason
    with RunReader(tmp_path / "t.h5") as r:
        assert r.meta["state"] == "failed"
        log = r.log
        assert log["hv_on"][-1] == 0 and log["laser_on"][-1] == 0


def test_pause_resume_from_a_script(tmp_path):
    seen = []

    def control(session, info):
        seen.append(session.state)
        if len(seen) == 4:
            session.pause()
        if session.state == State.ACQUIRING and len(seen) > 4 and not seen.count("resumed"):
            seen.append("resumed")

    s = Session(small(**{"run.stop.ions": 10_000}), out=tmp_path / "p.h5", on_block=control)
    s.suspenders.append(Suspender("resume after a while", _after_polls(s, 3)))
    res = s.run()
    assert res.state == State.DONE
    names = [t[1] for t in s.transitions]
    i = names.index("paused")
    assert names[i + 1] == "acquiring"


def _after_polls(session, n):
    """A suspender check that resumes a paused session after n polls."""
    count = [0]

    def ok(ins):
        if session.state == State.PAUSED:
            count[0] += 1
            assert not ins.laser.emission_on(), "laser must be off while paused"
            if count[0] >= n:
                session.resume()
        return True

    return ok


def test_suspender_pauses_while_interlock_open(tmp_path):
    polls = [0]

    def interlock(session, info):
        if info["pulses"] > 2e6 and not polls[0]:
            session._ins.virtual.laser.open_interlock()

    def ok(ins):
        if ins.laser.interlock_open():
            polls[0] += 1
            if polls[0] >= 3:
                ins.virtual.laser.close_interlock()
            return False
        return True

    s = Session(small(**{"run.stop.ions": 10_000}), out=tmp_path / "i.h5", on_block=interlock,
                suspenders=[Suspender("laser interlock", ok)])
    res = s.run()
    assert res.state == State.DONE
    whys = [t[2] for t in s.transitions if t[1] == "paused"]
    assert whys == ["laser interlock"]


def _start_run(tmp_path, *extra):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    out = tmp_path / "r.h5"
    proc = subprocess.Popen(
        [sys.executable, "-m", "apt_daq.cli", "run", str(RUN), "-o", str(out), "--ions",
         "100000000", "--quiet", *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=env)
    deadline = time.time() + 120
    while time.time() < deadline:
        if out.exists():
            try:  # the store's reader does not lock: a run being written can be read
                with RunReader(out) as r:
                    if r.count("hits") > 20_000:
                        return proc, out
            except Exception:
                pass
        if proc.poll() is not None:
            raise AssertionError(proc.stderr.read().decode())
        time.sleep(0.3)
    proc.kill()
    raise AssertionError("run did not produce hits in time")


def test_sigint_twice_aborts_safely(tmp_path):
    proc, out = _start_run(tmp_path)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)
    with RunReader(out) as r:
        assert r.meta["state"] == "aborted"
        log = r.log
        assert log["hv_on"][-1] == 0 and log["laser_on"][-1] == 0
        assert r.count("hits") == r.count("truth") > 20_000
    assert b"Traceback" not in proc.stderr.read()


def test_sigkill_leaves_a_readable_file(tmp_path):
    proc, out = _start_run(tmp_path)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    with RunReader(out) as r:
        n_hits, n_truth = r.count("hits"), r.count("truth")
        assert n_hits > 20_000
        hits = r.read("hits")
        # at most the chunk being written is incomplete
        assert abs(n_hits - n_truth) <= 65536
        assert np.all(np.diff(hits["pulse"].astype(np.int64)) >= 0)
        assert r.meta["state"] == "running"
    # and the analysis still reads it
    from apt_daq.analysis.report import analyze_run

    assert analyze_run(out)["ions"] > 0


def test_live_dashboard_png_is_written(tmp_path):
    png = tmp_path / "live.png"
    res = Session(small(**{"run.stop.ions": 8_000}), out=tmp_path / "l.h5", live_png=png).run()
    assert res.state == State.DONE
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert not (tmp_path / "live.png.tmp.png").exists()


def test_run_file_carries_its_ranges(tmp_path):
    """A run is analysable anywhere: the ranges it was ranged with travel in /meta."""
    import shutil

    from apt_daq.analysis.report import analyze_run

    rf = small(**{"run.stop.ions": 8_000})
    res = Session(rf, out=tmp_path / "a.h5").run()
    assert res.state == State.DONE
    # in place, with the configured range file named explicitly
    here = analyze_run(tmp_path / "a.h5", ROOT / "configs/ranges/nmc811.rrng", roi="none",
                       store=False)
    moved = tmp_path / "elsewhere" / "a.h5"
    moved.parent.mkdir()
    shutil.move(tmp_path / "a.h5", moved)
    s = analyze_run(moved, roi="none")  # far from the range file, and not told of it
    assert "stored in the run" in s["ranges"]
    assert s["ranged_ions"] == here["ranged_ions"] > 0
    assert s["ion_counts"] == here["ion_counts"] and s["ion_counts"]["O2+"] > 0


def test_background_firing_gives_the_same_run(tmp_path, monkeypatch):
    """The sim DLD fires the next chunk on a thread while the engine stores the last one
    (SimDld.arm); holding the instrument's lock, it must give byte-identical data and log."""
    from apt_daq.drivers.sim_backends import SimDld

    rf = small(**{"run.stop.ions": 30_000, "run.chunk_pulses": 300_000})
    Session(rf, out=tmp_path / "armed.h5").run()
    monkeypatch.setattr(SimDld, "arm", lambda self: None)
    Session(rf, out=tmp_path / "plain.h5").run()
    with RunReader(tmp_path / "armed.h5") as a, RunReader(tmp_path / "plain.h5") as b:
        for name in ("raw", "hits", "derived", "truth", "lost"):
            assert a.read(name).tobytes() == b.read(name).tobytes(), name
        assert a.log.tobytes() == b.log.tobytes()
        assert a.count("hits") >= 30_000


def test_settled_blocks_grow_and_hold_the_rate(tmp_path):
    """The default sizing: base blocks while ramping, so the voltage reaches the operating
    point at the same instrument time as with fixed blocks; once settled, blocks grow to what
    the detector buffer allows (several times the base block), and every settled block's rate
    stays within +-10 % of the target (the feed-forward keeps the mean on it)."""
    over = {"run.stop.ions": 600_000, "run.chunk_pulses": 1_000_000, "run.seed": 3}
    rf = load_run(RUN, over)
    fixed = load_run(RUN, {**over, "run.max_block_pulses": 1_000_000})
    Session(rf, out=tmp_path / "a.h5").run()
    Session(fixed, out=tmp_path / "f.h5").run()
    target = rf.run.target_detection_rate
    with RunReader(tmp_path / "a.h5") as a, RunReader(tmp_path / "f.h5") as f:
        la, lf = a.log, f.log
        assert a.count("hits") == a.count("truth") == a.count("derived") >= 600_000

    def first_on_target(log):
        acq = log[(log["laser_on"] == 1) & (log["pulses"] > 0)]
        return acq[int(np.argmax(acq["rate"] > 0.9 * target))]["time_s"]

    # the ramp-up in instrument time is the fixed-block engine's (same blocks until then)
    assert first_on_target(la) == first_on_target(lf)
    blocks = np.diff(la["pulses"].astype(np.int64))[1:-1]
    assert blocks.max() >= 4 * rf.run.chunk_pulses
    tail = settled_rates(la, target)
    assert len(tail) >= 5
    assert np.all(np.abs(tail["rate"][:-1] / target - 1) < 0.10), tail["rate"]
    # the mean of the settled blocks, weighted by pulses, on the target within 3 %
    p = np.diff(tail["pulses"].astype(np.float64))
    mean = float((tail["rate"][1:] * p).sum() / p.sum())
    assert abs(mean / target - 1) < 0.03, mean
    # the HV ramp rule and the feedback's step per block still hold
    on = (la["hv_on"][1:] == 1) & (la["hv_on"][:-1] == 1)
    dv = np.abs(np.diff(la["v_setpoint"].astype(float)))[on]
    assert np.all(dv <= rf.drivers.hv.ramp_v_per_s * np.diff(la["time_s"])[on] + 1e-3)
    assert np.all(dv <= rf.run.feedback.max_step_v + 1e-3)


def test_summary_tally_is_the_analysis_of_the_file(tmp_path):
    """The end-of-run summary counted from the stream (Session(summary=True)) is what
    analyze computes reading the file back: same ranged ions, same composition (a run under
    the calibration sample: the fit sees the same hits)."""
    from apt_daq.analysis.report import analyze_run
    from apt_daq.commands.run import _tally_summary

    res = Session(small(**{"run.stop.ions": 50_000}), out=tmp_path / "a.h5", summary=True).run()
    assert res.tally is not None and res.tally.hits == res.ions
    got = _tally_summary(res.tally)
    want = analyze_run(tmp_path / "a.h5")
    assert got is not None and got["ranged_ions"] == want["ranged_ions"] > 0
    for el, v in want["composition"].items():
        assert got["composition"][el]["fraction"] == pytest.approx(v["fraction"], abs=1e-12)
    assert got["ratios"]["O2+/O+"] == pytest.approx(want["ratios"]["O2+/O+"], rel=1e-12)


def test_tally_fit_on_a_thread_counts_the_same(tmp_path):
    """The calibration fitted on a thread once the sample is complete, the blocks that arrive
    meanwhile held and counted after it: the same calibration and counts as fitting on the
    engine's thread; every hit counted once."""
    from apt_daq.engine.loop import load_ranges, run_meta
    from apt_daq.engine.tally import RunTally

    rf = small(**{"run.stop.ions": 30_000})
    Session(rf, out=tmp_path / "a.h5").run()
    ranges = load_ranges(rf)
    with RunReader(tmp_path / "a.h5") as r:
        blocks = list(r.iter("hits", 1_500))
    tallies = [RunTally(rf, ranges, run_meta(rf, ranges), fit_sample=10_000, background=bg)
               for bg in (True, False)]
    for t in tallies:
        for b in blocks:
            t.add(b)
        t.finish()
    bg, fg = tallies
    a, b = bg.calibration.as_dict(), fg.calibration.as_dict()
    a.pop("created", None), b.pop("created", None)  # when it was fitted
    assert a == b
    assert np.array_equal(bg.counts, fg.counts) and np.array_equal(bg.counts_roi, fg.counts_roi)
    assert bg.in_roi == fg.in_roi and bg.hits == fg.hits == sum(len(b) for b in blocks)
    assert bg.counts.sum() <= bg.hits and not bg.held
