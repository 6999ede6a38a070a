"""Signals a lab really sends end a run safely, judged from the run file a real ``apt-daq run``
process leaves: SIGHUP (the SSH session dropped), SIGQUIT, SIGTERM, Ctrl-C twice, and the
signals whose default action would end the process (SIGUSR1, SIGXCPU, SIGALRM) each end
with /meta state ``aborted``, a last /log row with HV output and laser emission off, exit code
128 + the signal number, and no traceback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from apt_daq.io.store import RunReader

ROOT = Path(__file__).resolve().parents[2]
RUN = ROOT / "configs" / "runs" / "nmc811-cr-5pj.yaml"


def start_run(tmp_path: Path, preexec_fn=None) -> tuple[subprocess.Popen, Path]:
    out = tmp_path / "r.h5"
    proc = subprocess.Popen(
        [sys.executable, "-m", "apt_daq.cli", "run", str(RUN), "-o", str(out), "--ions",
         "100000000", "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=dict(os.environ, PYTHONUNBUFFERED="1"), cwd=ROOT, preexec_fn=preexec_fn)
    deadline = time.time() + 240  # a cold numba cache compiles first
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(proc.stderr.read().decode())
        try:
            with RunReader(out) as r:
                if r.count("hits") > 20_000:
                    return proc, out
        except Exception:  # not created yet, or being created
            pass
        time.sleep(0.2)
    proc.kill()
    raise AssertionError("the run did not produce hits in time")


def _blocked_term() -> None:
    """A parent that blocks SIGTERM (a job runner) hands the block down."""
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM])


def _nohup() -> None:
    """SIGHUP ignored, as ``nohup`` (or a harness) leaves it: the run must handle it anyway."""
    signal.signal(signal.SIGHUP, signal.SIG_IGN)


@pytest.mark.parametrize(("signals", "preexec_fn"), [
    ((signal.SIGHUP,), None), ((signal.SIGQUIT,), None), ((signal.SIGTERM,), None),
    ((signal.SIGINT, signal.SIGINT), None),
    ((signal.SIGTERM,), _blocked_term), ((signal.SIGHUP,), _nohup),
    # signals that killed the run with HV on before (state 'running', no off row): SLURM's
    # warning before a time limit, RLIMIT_CPU's soft limit, a script's alarm()
    ((signal.SIGUSR1,), None), ((signal.SIGXCPU,), None), ((signal.SIGALRM,), None)],
    ids=["SIGHUP", "SIGQUIT", "SIGTERM", "SIGINTx2", "SIGTERM-blocked-by-parent",
         "SIGHUP-under-nohup", "SIGUSR1", "SIGXCPU", "SIGALRM"])
def test_signal_ends_the_run_safe(tmp_path: Path, signals: tuple[signal.Signals, ...],
                                  preexec_fn) -> None:
    """Each case ends safely; the last two start the run as a parent that blocked SIGTERM, or
    ignored SIGHUP, would: the run unblocks and handles its signals whatever it inherited."""
    proc, out = start_run(tmp_path, preexec_fn=preexec_fn)
    for s in signals:
        proc.send_signal(s)
        time.sleep(0.5)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(f"{signals[-1].name} did not end the run") from None
    stderr = proc.stderr.read().decode()
    assert proc.returncode == 128 + signals[-1], (proc.returncode, stderr)
    assert "Traceback" not in stderr, stderr
    with RunReader(out) as r:
        assert r.meta["state"] == "aborted"
        assert signals[-1].name in r.meta["end_reason"]
        last = r.log[-1]
        assert last["hv_on"] == 0 and last["laser_on"] == 0
        assert r.count("hits") > 20_000


def test_ctrl_c_after_a_resume_pauses_again() -> None:
    """Ctrl-C pauses, Enter resumes; the next Ctrl-C pauses again (it does not abort)."""
    import threading as th
    from types import SimpleNamespace

    from apt_daq.run import State, install_signals

    pause = th.Event()
    aborted: list[bool] = []
    session = SimpleNamespace(sigint_pauses=True, _pause=pause, signal=None,
                              state=State.ACQUIRING, pause=pause.set,
                              abort=lambda: aborted.append(True),
                              _abort_why=lambda: "signal SIGINT")
    restore = install_signals(session)  # type: ignore[arg-type]
    try:
        signal.raise_signal(signal.SIGINT)
        assert pause.is_set() and not aborted
        pause.clear()  # resume
        signal.raise_signal(signal.SIGINT)
        assert pause.is_set() and not aborted  # paused again
        signal.raise_signal(signal.SIGINT)  # twice while paused: abort
        assert aborted
    finally:
        restore()


class _Late(Exception):
    pass


def test_a_signal_after_the_run_ended_reaches_the_handler_before_the_run(tmp_path, monkeypatch):
    """A SIGTERM while the end-of-run summary is counted (the run already `done`, HV and laser
    off, the file closed) was swallowed by the run's handler: `apt-daq run` exited 0 (an
    audit's six cases). Now it goes, once the run's handler is gone, to the one before it
    (the CLI's: exit 143); judged from that handler and the file."""
    from apt_daq.run import Session

    def late(signum: int, frame: object) -> None:
        raise _Late(signum)

    before = signal.signal(signal.SIGTERM, late)
    orig = Session._finish_tally

    def signalled(self):  # the signal lands while the summary's counts are finished
        signal.raise_signal(signal.SIGTERM)
        return orig(self)

    monkeypatch.setattr(Session, "_finish_tally", signalled)
    out = tmp_path / "r.h5"
    try:
        with pytest.raises(_Late):
            Session.from_yaml(str(RUN), out=out, summary=True,
                              overrides={"run.stop.ions": 5000}).run()
    finally:
        signal.signal(signal.SIGTERM, before)
    with RunReader(out) as r:
        assert r.meta["state"] == "done"
        assert r.log[-1]["hv_on"] == 0 and r.log[-1]["laser_on"] == 0
