"""The driver errors: every failure names the instrument (kind and resource), the command and
the reply. Re-exported by :mod:`apt_daq.drivers.base` and :mod:`apt_daq.drivers`."""

from __future__ import annotations

#: ``extra=`` of the log records a failed safe off writes: the CLI holds them back and prints
#: them only if the command does not end with an error line (which then says it)
SAFE_OFF_RECORD = {"safe_off": True}

#: how much of an instrument's reply a message quotes (a run-on reply is tens of kB)
REPLY_QUOTE_CHARS = 80


def clip_reply(text: str, limit: int = REPLY_QUOTE_CHARS) -> str:
    """``text`` as a message quotes it: at most ``limit`` characters, then how long it was."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} characters)"


class DriverError(Exception):
    """A driver failure naming the instrument (kind and resource), the command and the reply.

    ``str(e)`` reads e.g. ``HV supply TCPIP::127.0.0.1::5025::SOCKET: 'SOUR:VOLT 7000'
    refused: above limit_v 6000``.
    """

    def __init__(self, instrument: str, command: str | None, detail: str,
                 reply: str | None = None):
        self.instrument = instrument
        self.command = command
        self.detail = detail
        self.reply = None if reply is None else clip_reply(reply, 4 * REPLY_QUOTE_CHARS)
        text = f"{instrument}: "
        if command is not None:
            text += f"{command!r} "
        text += detail
        if reply is not None:
            text += f" (reply {clip_reply(reply)!r})"
        super().__init__(text)


class DriverTimeout(DriverError):
    """No (complete) reply within ``timeout_s``."""


class BadReply(DriverError):
    """A reply that does not parse as what the command returns."""


class InstrumentError(DriverError):
    """The instrument reported an error (SCPI error queue, ``ERR n msg`` line). ``code``."""

    def __init__(self, instrument: str, command: str | None, detail: str,
                 reply: str | None = None, code: int = 0):
        self.code = code
        super().__init__(instrument, command, detail, reply)


class ConnectionLost(DriverError):
    """The link to the instrument failed (closed socket, unplugged cable, gave up reconnecting)."""


class SafetyError(DriverError):
    """A setting the driver refused before sending it (limit, ramp rate, interlock, trip)."""


class Interrupted(DriverError):
    """A ramp stopped before its target: :meth:`HighVoltageSupply.abort_ramp` (a device's
    stop, a run's abort) or a safe off asked for meanwhile. The setpoint stays where the last
    step left it."""
