"""Where a driver reads time and waits: the :class:`Clock` protocol, wall time and a fake clock
for tests. Re-exported by :mod:`apt_daq.drivers.base` and :mod:`apt_daq.drivers`."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """Where a driver reads time and waits. Injectable so tests and the simulator need no sleep."""

    def monotonic(self) -> float: ...

    def sleep(self, dt_s: float) -> None: ...


class WallClock:
    """Real time: ``time.monotonic`` and ``time.sleep``."""

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, dt_s: float) -> None:
        if dt_s > 0:
            time.sleep(dt_s)


class FakeClock:
    """A clock that only moves when something sleeps: for tests (and reproducible scripts)."""

    def __init__(self, start_s: float = 0.0):
        self.now_s = float(start_s)

    def monotonic(self) -> float:
        return self.now_s

    def sleep(self, dt_s: float) -> None:
        if dt_s > 0:
            self.now_s += dt_s
