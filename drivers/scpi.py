"""SCPI over pyvisa: the one place that formats numbers, parses replies and checks ``SYST:ERR?``.

Layers:

- a *transport* moves text lines (``open``, ``close``, ``write``, ``read``); it raises
  ``TimeoutError`` for a missing reply and ``ConnectionError`` for a broken link.
  :class:`VisaTransport` is pyvisa (pyvisa-py sockets, pyvisa-sim ``@sim`` YAML files, VISA).
- a :class:`Link` turns those into :class:`~apt_daq.drivers.base.DriverError` naming instrument and
  command, retries idempotent queries (never settings) and reconnects a bounded number of times.
- :class:`ScpiSession` adds the SCPI rules: a setting is followed by ``SYST:ERR?`` and a
  non-zero code raises :class:`~apt_daq.drivers.base.InstrumentError`.

The number format, the reply parsers and the command table live in
:mod:`apt_daq.wire.scpi_commands` (the emulator's server reads them too); the transports live in :mod:`apt_daq.drivers.transports` and the link in
:mod:`apt_daq.drivers.link`; both are re-exported here.
"""

from __future__ import annotations

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

from apt_daq.wire.scpi_commands import (
    COMMON,
    fmt_number,
    parse_bool,
    parse_error,
    parse_float,
    parse_str,
)

__all__ = [
    "Link", "ScpiSession", "SessionLifecycle", "SocketTransport", "T", "Transport",
    "VisaTransport", "_nodelay", "_resource_manager", "fmt_number", "make_transport",
    "parse_bool", "parse_error", "parse_float", "parse_socket_resource", "parse_str",
    "split_resource",
]

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
        text = self.exchange(COMMON.error.header, True)
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
