"""What every driver shares (:class:`Instrument`: naming, lock, clock, lifecycle) and the small
helpers of the safety rules (1 mV grid, finite read-backs, reading an off state back)."""

from __future__ import annotations

import abc
import functools
import logging
import math
import threading
from collections.abc import Callable
from typing import Any, Literal

from apt_daq.drivers.clock import Clock, WallClock
from apt_daq.drivers.errors import SAFE_OFF_RECORD, BadReply, ConnectionLost, DriverError

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


class SwitchedInstrument(Instrument):
    """An instrument with a switch that makes it safe (the HV output, the laser emission):
    ``safe_off`` is ``send_off`` (first on the link) then ``verify_off`` (read back)."""

    #: what the switch is called in messages ("could not turn <it> off")
    switch_name = "the output"

    @abc.abstractmethod
    def _cmd_off(self) -> str:
        """The command text that switches off, naming it in messages."""

    @abc.abstractmethod
    def send_off(self) -> None:
        """Switch off, sent before anything else; a DriverError if it could not be sent."""

    @abc.abstractmethod
    def verify_off(self) -> None:
        """A DriverError unless the instrument reports the switch off."""

    def _interrupt(self) -> None:
        """Stop a long call another thread holds the lock for (the HV supply's ramp), so the
        off is not held up behind it; without the lock (that thread has it)."""

    def safe_off(self) -> None:
        """Switched off first, then verified off (a ramp in progress is stopped first)."""
        self._interrupt()
        with self.lock:
            if not self.connected:
                return
            try:
                self.send_off()
            except DriverError as e:
                raise self.error(ConnectionLost, self._cmd_off(),
                                 f"could not turn {self.switch_name} off: {e.detail}") from e
            self.verify_off()

    def _mark_broken(self) -> None:
        """Backends with a link mark it for reconnection."""


_fmt_v = fmt_number  # the wire's number format, in messages too


def quantize_wire(value: float) -> float:
    """Round to the 3 decimals the wire formats carry (1 mV for a voltage, 1 fJ for a pulse
    energy in pJ), so what is checked is what is sent."""
    return round(float(value), 3)


#: how long a switch is given to open before its state is read back once more, s (a relay
#: switches in ~10 ms; an HV output's bleed-down of its "on" sense takes longer)
OFF_RECHECK_S = 0.2


def _read_back_off(inst: SwitchedInstrument, read: Callable[[], bool],
                   send_off: Callable[[], None]) -> bool:
    """Read an off state back; True if it still reads ON. A link that fails the read (the off
    command may have gone into a dead connection) is reopened, the off command sent again and
    the state read once more; so is a state that still reads ON (an off command lost or
    ignored once), after :data:`OFF_RECHECK_S`."""
    try:
        if not read():
            return False
        log.warning("%s: still ON after the off command: sending it again", inst.name,
                    extra=SAFE_OFF_RECORD)
        send_off()
        inst.clock.sleep(OFF_RECHECK_S)
        return bool(read())
    except DriverError as e:
        log.warning("%s: reading back after off failed (%s): sending off again", inst.name, e,
                    extra=SAFE_OFF_RECORD)
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


def _telling(read: Callable[[Any], bool], listeners: str) -> Callable[[Any], bool]:
    """The query ``read`` (a method returning a bool) calling every callback in the
    instance's list ``listeners`` each time it returns True (``HighVoltageSupply.tripped``
    and its ``on_trip`` listeners). A callback that raises is logged: the reading is still
    returned."""

    @functools.wraps(read)
    def query(self: Any) -> bool:
        t = bool(read(self))
        if t:
            for callback in list(getattr(self, listeners)):
                try:
                    callback()
                except Exception as e:
                    log.error("%s: a listener of %s failed: %s", self.name, read.__name__, e)
        return t

    return query
