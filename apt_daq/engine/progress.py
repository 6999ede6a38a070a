"""The run's progress display (a rich bar on a terminal, a line every 30 s otherwise)."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from apt_daq.engine.states import State


class Watched(Protocol):
    """What the display reads of a session: its state and its transitions."""

    state: State
    transitions: list[tuple[float, str, str]]


class Progress:
    """The run's progress display: ions of the stop count, rate vs target, V, pJ, step, ETA.

    On a terminal, a rich bar on stderr, cleared when the run ends (the final lines then start
    on a clean line). While the run is paused it shows PAUSED, why, and the keys that resume
    (Enter, when ``session.enter_resumes``) or abort (Ctrl-C); the ETA stops, and it is
    computed from unpaused time only (the ion rate of the last minute of acquisition). Not on
    a terminal (a log file, CI), a plain line every 30 s and one at each pause and resume.
    """

    WINDOW_S = 60.0  # ion rate of the ETA: over this much unpaused time
    LOG_EVERY_S = 30.0  # not on a terminal: a status line this often

    def __init__(self, session: Watched, r: Any, *, console: Any = None,
                 clock: Callable[[], float] = time.monotonic,
                 enter_resumes: bool | None = None):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self.session = session
        self.target = r.target_detection_rate
        self.total = r.stop.ions or None
        self.clock = clock
        self.enter_resumes = (bool(getattr(session, "enter_resumes", False))
                              if enter_resumes is None else enter_resumes)
        self.console = console or Console(stderr=True, soft_wrap=True, highlight=False)
        self._samples: list[tuple[float, int]] = []  # (clock, ions) since the last pause
        self._pauses = self._pause_count()
        self._status = ""
        self._last_line = -math.inf
        self._closed = threading.Event()
        self.p = None
        if self.console.is_terminal:
            outer = self

            class _EtaOrPaused(TextColumn):
                def render(self, task: Any) -> Any:
                    from rich.text import Text

                    if outer.marker():
                        return Text(outer.marker(), style="bold yellow")
                    return Text(f"{outer._status}  ETA {clock_text(outer.eta_s())}")

            self.p = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                              MofNCompleteColumn(), _EtaOrPaused(""), console=self.console,
                              transient=True, refresh_per_second=4)
            self.task = self.p.add_task(r.name, total=self.total)
            self.p.start()
        else:
            threading.Thread(target=self._watch_pauses, daemon=True,
                             name="progress-pauses").start()

    def _pause_count(self) -> int:
        return sum(1 for t in list(self.session.transitions) if t[1] == "paused")

    def marker(self) -> str:
        """``PAUSED ...`` with the keys to resume or abort while the run is paused, else ''."""
        if self.session.state != State.PAUSED:
            return ""
        why = next((t[2] for t in reversed(list(self.session.transitions)) if t[1] == "paused"),
                   "")
        if why == "pause requested":
            keys = "Enter resumes, " if self.enter_resumes else ""
            return f"PAUSED (laser off, HV held): {keys}Ctrl-C again aborts safely"
        return (f"PAUSED ({why}): resumes when it clears (laser off, HV held); "
                "Ctrl-C twice aborts safely")

    def eta_s(self) -> float | None:
        """Seconds to the stop count at the recent unpaused ion rate; None while paused or
        before the rate is known."""
        if self.total is None or self.session.state == State.PAUSED or len(self._samples) < 2:
            return None
        (t0, n0), (t1, n1) = self._samples[0], self._samples[-1]
        if t1 <= t0 or n1 <= n0:
            return None
        return max(0, self.total - n1) / ((n1 - n0) / (t1 - t0))

    def update(self, ions: int, rate: float, v: float, pj: float, step: int) -> None:
        now = self.clock()
        pauses = self._pause_count()
        if pauses != self._pauses:  # paused since the last block: the rate starts afresh
            self._pauses, self._samples = pauses, []
        self._samples.append((now, ions))
        while self._samples[-1][0] - self._samples[0][0] > self.WINDOW_S:
            self._samples.pop(0)
        self._status = (f"rate {100 * rate:.3f}% (target {100 * self.target:.2f}%)  "
                        f"V {v:7.0f}  {_pj(pj)} pJ  step {step}")
        if self.p is not None:
            self.p.update(self.task, completed=ions)
        elif now - self._last_line >= self.LOG_EVERY_S:
            self._last_line = now
            of = f"/{self.total}" if self.total else ""
            self.console.print(f"{ions}{of} ions  {self._status}  "
                               f"ETA {clock_text(self.eta_s())}")

    def _watch_pauses(self) -> None:
        """Not on a terminal: one line when the run pauses and one when it resumes."""
        shown = ""
        while not self._closed.wait(0.25):
            now = self.marker()
            if now != shown:
                if now or self.session.state == State.ACQUIRING:
                    self.console.print(now or "resumed")
                shown = now

    def close(self) -> None:
        self._closed.set()
        if self.p is not None:
            p, self.p = self.p, None
            p.stop()  # transient: the bar is cleared, the cursor at the start of its line


def clock_text(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "-:--:--"
    h, rest = divmod(int(seconds), 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}"


def _pj(pj: float) -> str:
    """A laser energy as the status line shows it: 5 columns, one decimal from 1 pJ up, and
    three significant figures below (0.005 pJ, a likely nJ slip, is not shown as 0.0)."""
    return f"{pj:5.1f}" if abs(pj) >= 1 or pj == 0 else f"{pj:5.3g}"
