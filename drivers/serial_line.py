"""The terse HV line protocol (many lab HV supplies speak one like it) over pyserial.

ASCII lines terminated by CR LF both ways. Every command gets exactly one reply line:
a setting answers ``OK``, a query answers its value, any refused command answers
``ERR <code> <message>``. Commands (declared in :mod:`apt_daq.wire.hv_line`, the table both
this driver and the emulator read; ``docs/protocols.md`` has the full table)::

    ID?        -> APT-DAQ,HV-SIM,0,1.0        identity
    V <volts>  -> OK                          setpoint, V
    V?         -> 5000.000                    setpoint, V
    L <volts>  -> OK / L? -> 6000.000         limit, V (the supply refuses V above it)
    O 1|0      -> OK / O? -> 1|0              output relay
    M?         -> 4999.870                    measured voltage, V
    I?         -> 1.2e-07                     measured current, A
    T?         -> 1|0                         over-current trip latched
    C          -> OK                          clear the trip (output stays off)
    R          -> OK                          reset: output off, setpoint 0, limit = maximum
    S <V/s>    -> OK / S? -> 400.000          the supply's own slew rate, V/s
    E?         -> 0 No error | <code> <msg>   last error, then cleared

Error codes: 1 unknown command, 2 bad argument, 3 out of range, 4 tripped, 5 other.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

from apt_daq.drivers.base import BadReply, InstrumentError
from apt_daq.drivers.scpi import Link, T
from apt_daq.drivers.transports import MAX_REPLY_BYTES, ReplyTooLong, _no_line, dropped

from apt_daq.wire.hv_line import EOL, OK  # the error codes are there too (ERR_*)

_ERR = re.compile(r"^ERR\s+(-?\d+)\s*(.*)$")

try:  # pyserial's flush and reset call termios, whose error is no OSError: a port gone (an
    from termios import error as _TermiosError  # unplugged USB adapter, a closed pty) raises it
except ImportError:  # not POSIX
    _TermiosError = OSError  # type: ignore[misc, assignment]


def parse_err(reply: str) -> tuple[int, str] | None:
    """``ERR n msg`` -> (n, msg); anything else -> None."""
    m = _ERR.match(reply.strip())
    return (int(m.group(1)), m.group(2)) if m else None


class SerialTransport:
    """A pyserial port from a URL (``/dev/ttyUSB0``, ``socket://host:port``, ``loop://``)."""

    def __init__(self, url: str, baudrate: int = 9600, timeout_s: float = 2.0):
        self.url = url
        self.baudrate = baudrate
        self.timeout_s = timeout_s
        self._port: Any = None  # a serial.Serial once open (pyserial ships no type hints)
        self._reopened = False  # opened before: the next open follows trouble

    def open(self) -> None:
        import serial

        try:
            self._port = serial.serial_for_url(self.url, baudrate=self.baudrate,
                                               timeout=self.timeout_s,
                                               write_timeout=self.timeout_s)
        except (serial.SerialException, OSError, ValueError) as e:
            raise ConnectionError(f"cannot open {self.url}: {e}") from e
        # a reopen follows trouble (a timeout: its reply may be on the way): wait it out
        try:
            self.drain(None if self._reopened else 0.15)
        except (serial.SerialException, OSError, _TermiosError) as e:
            raise ConnectionError(f"cannot open {self.url}: {e}") from e
        self._reopened = True

    def drain(self, quiet_s: float | None = None) -> bytes:
        """Read and discard what the instrument still sends, until ``quiet_s`` of silence
        (default ``timeout_s``, 0.15 ... 1 s; at most ``timeout_s`` + ``quiet_s`` in all; the
        first open waits 0.15 s). Unlike a TCP reconnect, reopening a serial port does not
        discard a reply still in flight: after a timeout, a late reply would otherwise be read
        as the answer to the next command, and the driver would run out of step with the
        instrument (a setpoint taken as sent when it was not). A reply later than that is
        dropped before the next command (:meth:`write`) unless it lands while a reply is
        awaited."""
        port = self._port
        port.reset_input_buffer()
        if quiet_s is None:
            quiet_s = min(max(self.timeout_s, 0.15), 1.0)
        old = port.timeout
        got = bytearray()
        deadline = time.monotonic() + self.timeout_s + quiet_s
        try:
            port.timeout = quiet_s
            while time.monotonic() < deadline:
                chunk = port.read(4096)
                if not chunk:
                    break
                got += chunk
        finally:
            port.timeout = old
        return bytes(got)

    def close(self) -> None:
        port, self._port = self._port, None
        if port is not None:
            try:
                port.close()
            except Exception:  # a dead port must not mask the real error
                pass

    def write(self, text: str) -> None:
        import serial

        if self._port is None:
            raise ConnectionError("not open")
        try:
            if self._port.in_waiting:  # sent unasked (a late or doubled reply): drop it
                junk = self._port.read(min(self._port.in_waiting, MAX_REPLY_BYTES))
                self._port.reset_input_buffer()
                dropped(self.url, junk)
            self._port.write((text + EOL).encode("ascii"))
            self._port.flush()
        except serial.SerialTimeoutException as e:
            raise TimeoutError(str(e)) from e
        except (serial.SerialException, OSError, _TermiosError) as e:
            raise ConnectionError(f"the port failed: {e}") from e

    def read(self) -> str:
        import serial

        if self._port is None:
            raise ConnectionError("not open")
        try:  # pyserial's read_until: timeout_s in all, not per byte
            line = self._port.read_until(b"\n", MAX_REPLY_BYTES + 1)
        except (serial.SerialException, OSError, _TermiosError) as e:
            raise ConnectionError(f"the port failed: {e}") from e
        if not line.endswith(b"\n"):
            if len(line) > MAX_REPLY_BYTES:
                raise ReplyTooLong(line[:256])
            raise _no_line(self.timeout_s, line)
        return line.decode("ascii", "replace").rstrip("\r\n")


class LineSession(Link):
    """The line protocol's rules on a link: a setting must answer ``OK``."""

    def write(self, command: str) -> None:
        """A setting: sent once (never retried); ``OK`` or InstrumentError/BadReply."""
        text = self.exchange(command, True)
        assert text is not None
        if text.strip() == OK:
            return
        self.check_reply_error(command, text)
        self.broken = True
        raise BadReply(self.name, command, "expected OK", text)

    def check_reply_error(self, command: str, text: str) -> None:
        err = parse_err(text)
        if err is not None:
            raise InstrumentError(self.name, command, f"instrument error {err[0]}: {err[1]}",
                                  text, code=err[0])

    def ask(self, command: str, parse: Callable[[str], T]) -> T:
        return self.query(command, parse, idempotent=True)
