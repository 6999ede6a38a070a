"""The signals a lab sends during a run: SIGHUP, SIGQUIT, SIGTERM abort; SIGINT pauses."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from typing import Protocol

from apt_daq.engine.states import RunAborted, State

log = logging.getLogger("apt_daq.run")


class Controlled(Protocol):
    """What the handler needs of a session."""

    state: State
    signal: int | None
    late_signal: int | None  # one that came after the run had ended (its file closed)
    sigint_pauses: bool
    _pause: threading.Event

    def pause(self) -> None: ...

    def abort(self) -> None: ...

    def _abort_why(self) -> str: ...


#: the signals that end a run, and the exit code of a CLI run each of them ended (128 + n)
END_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGHUP, signal.SIGQUIT, signal.SIGTERM,
                                           signal.SIGINT)

#: other signals whose default action ends the process, which would leave HV and laser on:
#: SLURM's ``--signal`` sends SIGUSR1 before a job's time limit, ``ulimit -t`` SIGXCPU, a
#: script's ``alarm()`` SIGALRM. Each aborts a run like SIGTERM, unless something else
#: handles or ignores it (Python ignores SIGXFSZ; a test harness may own SIGALRM)
FATAL_BY_DEFAULT: tuple[signal.Signals, ...] = tuple(
    getattr(signal, n) for n in ("SIGUSR1", "SIGUSR2", "SIGALRM", "SIGVTALRM", "SIGPROF",
                                 "SIGXCPU", "SIGXFSZ", "SIGPWR", "SIGIO")
    if hasattr(signal, n))


def ending_signals() -> list[signal.Signals]:
    """The signals a run handles now: :data:`END_SIGNALS` (always), and those of
    :data:`FATAL_BY_DEFAULT` still at their default action."""
    return [*END_SIGNALS, *(s for s in FATAL_BY_DEFAULT
                            if signal.getsignal(s) == signal.SIG_DFL)]


def install_signals(session: Controlled) -> Callable[[], None]:
    """Handle the signals a lab sends for the run's duration; returns the restorer.

    SIGHUP (the SSH session dropped; under ``nohup`` too: the run, not nohup, decides what a
    hang-up does), SIGQUIT, SIGTERM and :data:`FATAL_BY_DEFAULT` abort the run; SIGINT pauses
    it at the next block if ``session.sigint_pauses`` (Ctrl-C again aborts), else aborts. An abort
    ends like every other way out: HV output and laser emission off, a last /log row showing
    both off, /meta state ``aborted``. While the run is connecting or ramping (long blocking
    driver calls) the handler raises :class:`RunAborted` at once; while acquiring it takes
    effect at the next readout block. After SIGHUP the terminal is gone: stdout and stderr
    are pointed at /dev/null so a late print cannot fail the safe shutdown.

    Does nothing off the main thread (Python delivers signals there only).
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    presses = [0]

    def on_signal(signum: int, frame: object) -> None:
        if session.state in (State.DONE, State.FAILED, State.ABORTED):
            # the run has ended safe (its summary is being counted): the signal goes to the
            # handler before the run's, once the run's is gone (a CLI exits 128 + n)
            session.late_signal = session.late_signal or signum
            return
        if signum == signal.SIGINT and session.sigint_pauses:
            if not session._pause.is_set():
                presses[0] = 0  # resumed since the last Ctrl-C: this one pauses again
            presses[0] += 1
            if presses[0] == 1:
                session.pause()
                when = ("now: the HV ramp-up holds where it is" if session.state in (
                    State.CONNECTING, State.RAMPING) else "at the next block")
                log.warning("Ctrl-C: pausing %s (Ctrl-C again aborts safely)", when)
                return
        if signum == signal.SIGHUP:
            _detach_terminal()
        first = session.signal is None
        if first:
            session.signal = signum
        session.abort()
        if first and session.state in (State.CONNECTING, State.RAMPING):
            raise RunAborted(session._abort_why())

    handled = ending_signals()  # END_SIGNALS also when inherited ignored: under nohup too
    old = {s: signal.signal(s, on_signal) for s in handled}
    # a signal blocked by the parent (a job runner, an earlier library) would never arrive:
    # the run could not be stopped safely. Unblocked for the run, the mask restored after
    mask = signal.pthread_sigmask(signal.SIG_UNBLOCK, handled)

    def restore() -> None:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        for s, h in old.items():
            signal.signal(s, h)

    return restore


def install_sigint(session: Controlled) -> Callable[[], None]:
    """Kept for scripts written against the old name: :func:`install_signals`."""
    return install_signals(session)


def _detach_terminal() -> None:
    """Point stdout and stderr at /dev/null if they are a terminal (after SIGHUP it is gone)."""
    import os
    import sys

    try:
        null = os.open(os.devnull, os.O_WRONLY)
    except OSError:
        return
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None and stream.isatty():
                stream.flush()
                os.dup2(null, stream.fileno())
        except (OSError, ValueError):
            pass
    os.close(null)


class SignalHandOver:
    """SIGHUP, SIGQUIT, SIGTERM (and :data:`FATAL_BY_DEFAULT`) for a session another loop
    drives: a bluesky plan, whose RunEngine owns the main thread (and SIGINT) while the session
    runs on a thread of its own, where Python delivers no signal. Without it such a signal killed the process with HV and
    laser on.

    :meth:`install` (on the main thread, when the plan is made; elsewhere it does nothing)
    puts a handler in place. While :attr:`active` (the plan's run), a signal aborts the session
    (``session.signal`` names it; HV output and laser emission end off, the ramp stopped at its
    next step); :meth:`finish`, at the plan's end, then passes it on. Passing on restores the
    handler it displaced and raises the signal again: by default the process ends as the
    signal asks, after the safe end. A signal while not active is passed on at once.
    """

    def __init__(self, session: Controlled):
        self.session = session
        self.active = False
        self.received: int | None = None
        self._old: dict[int, object] = {}

    def install(self) -> SignalHandOver:
        if threading.current_thread() is threading.main_thread():
            taken = [s for s in ending_signals() if s != signal.SIGINT]  # SIGINT: the plan's
            self._old = {int(s): signal.signal(s, self._handle) for s in taken}
        return self

    def _handle(self, signum: int, frame: object) -> None:
        if not self.active:
            self._pass_on(signum)
            return
        if signum == signal.SIGHUP:
            _detach_terminal()
        if self.received is None:
            self.received = signum
            self.session.signal = signum
            log.warning("%s: aborting the run (HV and laser off), then passing it on",
                        signal.Signals(signum).name)
        self.session.abort()

    def _pass_on(self, signum: int) -> None:
        old = self._old.pop(signum, signal.SIG_DFL)
        signal.signal(signum, old if old is not None else signal.SIG_DFL)  # type: ignore[arg-type]
        signal.raise_signal(signum)

    def finish(self) -> None:
        """The plan has ended (any thread): a signal that aborted it is raised again, for the
        main thread's handler to pass on."""
        self.active = False
        if self.received is not None:
            signal.raise_signal(self.received)
