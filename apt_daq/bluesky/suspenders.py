"""Signals for bluesky's suspenders.

bluesky's suspenders (``SuspendBoolLow``, ``SuspendFloor``, ...) watch a signal with the
classic ophyd API (``subscribe(cb, event_type=None, run=True)``, ``clear_sub(cb)``, callbacks
called as ``cb(value=..., old_value=..., timestamp=...)``), which ophyd-async signals do not
offer. :class:`WatchSignal` is that API over a value you set (``put``) or a callable it polls
on a thread (a vacuum gauge's driver, an interlock, ``laser.interlock_open``):

>>> vacuum_ok = WatchSignal("vacuum_ok", poll=lambda: gauge.read_mbar() < 1e-10, poll_s=1.0,
...                         fail_value=False)
>>> RE.install_suspender(SuspendBoolLow(vacuum_ok, sleep=5))

``fail_value=False``: a gauge that cannot be read counts as a bad vacuum, so a dead gauge
pauses the run instead of letting it go on on the last good reading.

During :func:`apt_daq.bluesky.acquire`, a tripped suspender pauses the apt-daq engine as
``RE.request_pause()`` does (laser off, HV held) and resumes it when it clears.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["WatchSignal"]

_KEEP = object()  # WatchSignal(fail_value=...) left out: a failed poll keeps the last value


class WatchSignal:
    """A signal with the classic ophyd subscription API, for bluesky's suspenders.

    ``value``: the initial value; ``put(v)`` (any thread) changes it and calls the
    subscribers if it changed. ``poll``: a callable giving the value, called every ``poll_s``
    seconds on a daemon thread while anything is subscribed. A poll that raises is logged and
    the signal takes ``fail_value``: give the value that trips your suspender (``False`` for
    a ``SuspendBoolLow`` on "vacuum ok", ``True`` for a ``SuspendBoolHigh`` on "interlock
    open"), so an instrument that cannot be read pauses the run. Left out, the last value is
    kept (fails open: a dead gauge reads as its last good value), and each failure is logged
    as an error saying so.
    """

    parent = None

    def __init__(self, name: str, value: Any = None, *,
                 poll: Callable[[], Any] | None = None, poll_s: float = 1.0,
                 fail_value: Any = _KEEP):
        self.name = name
        self.fail_value = fail_value
        self._value = value
        self._timestamp = time.time()
        self._subs: list[Callable[..., Any]] = []
        self._lock = threading.RLock()
        self._poll = poll
        self.poll_s = float(poll_s)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if poll is not None and value is None:
            self._value = poll()

    # -- the classic API bluesky's suspenders use
    def get(self) -> Any:
        return self._value

    def read(self) -> dict[str, dict[str, Any]]:
        return {self.name: {"value": self._value, "timestamp": self._timestamp}}

    def describe(self) -> dict[str, dict[str, Any]]:
        v = self._value
        dtype = ("boolean" if isinstance(v, bool) else "integer" if isinstance(v, int)
                 else "number" if isinstance(v, float) else "string")
        return {self.name: {"source": f"apt-daq-watch://{self.name}", "dtype": dtype,
                            "shape": []}}

    def subscribe(self, callback: Callable[..., Any], event_type: str | None = None,
                  run: bool = True) -> int:
        with self._lock:
            self._subs.append(callback)
            if self._poll is not None and (self._thread is None or not self._thread.is_alive()):
                self._stop.clear()
                self._thread = threading.Thread(target=self._polling, daemon=True,
                                                name=f"watch-{self.name}")
                self._thread.start()
        if run:
            callback(value=self._value, old_value=self._value, timestamp=self._timestamp,
                     obj=self)
        return id(callback)

    def clear_sub(self, callback: Callable[..., Any], event_type: str | None = None) -> None:
        with self._lock:
            self._subs = [c for c in self._subs if c is not callback]
            if not self._subs:
                self._stop.set()

    # -- changing the value
    def put(self, value: Any) -> None:
        with self._lock:
            old, self._value = self._value, value
            self._timestamp = time.time()
            subs = list(self._subs) if value != old else []
        for cb in subs:
            cb(value=value, old_value=old, timestamp=self._timestamp, obj=self)


    def _polling(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                value = self._poll()
            except Exception as e:
                if self.fail_value is _KEEP:
                    log.error("%s: poll failed (%s): keeping the last value %r (no fail_value "
                              "given)", self.name, e, self._value)
                    continue
                log.error("%s: poll failed (%s): taking fail_value %r", self.name, e,
                          self.fail_value)
                value = self.fail_value
            self.put(value)
