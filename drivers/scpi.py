"""SCPI over pyvisa: the one place that formats numbers, parses replies and checks ``SYST:ERR?``.

Layers:

- a *transport* moves text lines (``open``, ``close``, ``write``, ``read``); it raises
  ``TimeoutError`` for a missing reply and ``ConnectionError`` for a broken link.
  :class:`VisaTransport` is pyvisa (pyvisa-py sockets, pyvisa-sim ``@sim`` YAML files, VISA).
- a :class:`Link` turns those into :class:`~apt_daq.drivers.base.DriverError` naming instrument and
  command, retries idempotent queries (never settings) and reconnects a bounded number of times.
- :class:`ScpiSession` adds the SCPI rules: a setting is followed by ``SYST:ERR?`` and a
  non-zero code raises :class:`~apt_daq.drivers.base.InstrumentError`.

The transports live in :mod:`apt_daq.drivers.transports` and the link in
:mod:`apt_daq.drivers.link`; both are re-exported here.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

from apt_daq.drivers.errors import BadReply, ConnectionLost, DriverTimeout, InstrumentError
from apt_daq.drivers.link import Link, SessionLifecycle, T
from apt_daq.drivers.transports import (
    SocketTransport,
    Transport,
    VisaTransport,
    _nodelay,
    _resource_manager,
    make_transport,
    parse_socket_resource,
    split_resource,
)

__all__ = [
    "Link", "ScpiSession", "SessionLifecycle", "SocketTransport", "T", "Transport",
    "VisaTransport", "_nodelay", "_resource_manager", "fmt_number", "make_transport",
    "parse_bool", "parse_error", "parse_float", "parse_socket_resource", "parse_str",
    "split_resource",
]

# --------------------------------------------------------------------------- formats


def fmt_number(x: float) -> str:
    """A number as the wire carries it: fixed point, at most 3 decimals, no trailing zeros."""
    return f"{float(x):.3f}".rstrip("0").rstrip(".")


def parse_float(reply: str) -> float:
    """A finite number. ``nan``/``inf`` (which ``float`` accepts) are refused: a read-back the
    safety rules rely on must be a real value."""
    value = float(reply.strip())
    if not math.isfinite(value):
        raise ValueError(f"not a finite number: {reply.strip()!r}")
    return value


def parse_bool(reply: str) -> bool:
    """``1``/``0`` (also ``ON``/``OFF``, as some instruments answer ``OUTP?``)."""
    r = reply.strip().upper()
    if r in ("1", "ON"):
        return True
    if r in ("0", "OFF"):
        return False
    raise ValueError(f"not 1/0/ON/OFF: {reply!r}")


def parse_str(reply: str) -> str:
    return reply.strip()


_ERR = re.compile(r'^\s*([+-]?\d+)\s*,\s*"?(.*?)"?\s*$')


def parse_error(reply: str) -> tuple[int, str]:
    """``SYST:ERR?`` reply ``code,"message"`` -> (code, message); ``0,"No error"`` is (0, ...)."""
    m = _ERR.match(reply)
    if not m:
        raise ValueError(f'not code,"message": {reply!r}')
    return int(m.group(1)), m.group(2)


class ScpiSession(Link):
    """SCPI rules on a link: settings are checked with ``SYST:ERR?``."""

    def send(self, command: str) -> None:
        """A command with no reply and no error check (``*CLS``)."""
        self.exchange(command, False)

    def write(self, command: str) -> None:
        """A setting: sent once (never retried), then ``SYST:ERR?`` must answer code 0."""
        self.exchange(command, False)
        try:
            self.check_error(command)
        except (DriverTimeout, ConnectionLost) as e:
            raise type(e)(self.name, command, f"{e.detail} while reading SYST:ERR? after it "
                          "(the setting may or may not have been applied)") from e

    def check_error(self, after: str) -> None:
        """Read ``SYST:ERR?``; a non-zero code raises InstrumentError naming ``after``."""
        text = self.exchange("SYST:ERR?", True)
        assert text is not None
        try:
            code, message = parse_error(text)
        except ValueError as e:
            self.broken = True
            raise BadReply(self.name, f"{after}; SYST:ERR?", f"unexpected reply: {e}",
                           text) from e
        if code != 0:
            err = InstrumentError(self.name, after, f"instrument error {code}: {message}",
                                  text, code=code)
            raise err

    def ask(self, command: str,
            parse: Callable[[str], T] = parse_str) -> T:  # type: ignore[assignment]  # T is str when parse is left out: mypy cannot tie a default to a TypeVar
        return self.query(command, parse, idempotent=True)
