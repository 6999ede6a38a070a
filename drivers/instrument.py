"""What every driver shares (:class:`Instrument`: naming, lock, clock, lifecycle) and the small
helpers of the safety rules (1 mV grid, finite read-backs, reading an off state back)."""

from __future__ import annotations

import abc
import logging
import math
import threading
from typing import Any, Literal

from apt_daq.drivers.clock import Clock, WallClock
from apt_daq.drivers.errors import BadReply, ConnectionLost, DriverError

from apt_daq.wire.scpi_commands import fmt_number

log = logging.getLogger("apt_daq.drivers.base")


class Instrument(abc.ABC):
    """What every driver shares: naming, lock, clock, lifecycle."""

    kind = "instrument"

    def __init__(self, resource: str, *, clock: Clock | None = None):
        self.resource = resource
        self.clock: Clock = clock or WallClock()
        self.lock = threading.RLock()
        self.connected = False

    @property
    def name(self) -> str:
        """``<kind> <resource>``: how errors name this instrument."""
        return f"{self.kind} {self.resource}"

    def error(self, cls: type[DriverError], command: str | None, detail: str,
              reply: str | None = None) -> DriverError:
        return cls(self.name, command, detail, reply)

    def not_connected(self, command: str | None) -> DriverError:
        return self.error(ConnectionLost, command, "not connected (call connect() or open_*())")

    # lifecycle ---------------------------------------------------------------
    @abc.abstractmethod
    def connect(self) -> None:
        """Open the link and read the instrument's state."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the link (no state change at the instrument)."""

    def safe_off(self) -> None:  # noqa: B027  (a detector has nothing to switch off)
        """Put the instrument in its safe state. The DLD has none."""

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> Literal[False]:
        try:
            self.safe_off()
        finally:
            self.close()
        return False

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


_fmt_v = fmt_number  # the wire's number format, in messages too


def quantize_mv(volts: float) -> float:
    """Round to the 1 mV resolution of the wire formats, so what is checked is what is sent."""
    return round(float(volts), 3)


def _read_back_off(inst: Any, read: Any, send_off: Any) -> bool:
    """Read an off state back. A link that fails the read (the off command may have gone into
    a dead connection) is reopened, the off command sent again and the state read once more."""
    try:
        return bool(read())
    except DriverError as e:
        log.warning("%s: reading back after off failed (%s): sending off again", inst.name, e)
    inst._mark_broken()
    send_off()
    return bool(read())


def _finite(inst: Instrument, what: str, value: float) -> float:
    """A read-back the safety rules rely on: finite, or a BadReply naming the instrument."""
    value = float(value)
    if not math.isfinite(value):
        raise inst.error(BadReply, None, f"{what} is not a finite number", repr(value))
    return value


def describe(obj: Any) -> str:
    """Short name of a driver for logs."""
    return getattr(obj, "name", type(obj).__name__)
