"""The HV supply's terse line protocol as a thin wire interface on the same device model.

:class:`HvLineInterface` maps one line (``V 5000``, ``O?``, ...) to calls on
:class:`apt_daq.sim.devices.HvSupplyModel` and returns exactly one reply line (``OK``, a value or
``ERR <code> <message>``). It is served on a pseudo-terminal (:class:`PtyServer`, the path
behaves like ``/dev/ttyUSB0`` for pyserial) or on TCP (``TcpLineServer`` with CR LF, for a
``socket://host:port`` URL). The protocol is documented in ``drivers/serial_line.py`` and
``docs/protocols.md``.

Limits as in :mod:`apt_daq.sim.scpi_server`: replies and stored error messages are printable ASCII,
a line over :data:`~apt_daq.sim.scpi_server.MAX_LINE` bytes is discarded up to its newline and
answered ``ERR 2 line too long``.
"""

from __future__ import annotations

import os
import re
import select
import threading
import tty
from collections.abc import Callable

from apt_daq.sim.devices import DeviceError, HvSupplyModel
from apt_daq.sim.scpi_server import (
    MAX_LINE,
    LineBuffer,
    LineInterface,
    TcpLineServer,
    answer,
    encode_reply,
    printable,
)

from apt_daq.wire.hv_line import (
    EOL,
    ERR_ARGUMENT,
    ERR_OTHER,
    ERR_RANGE,
    ERR_TRIPPED,
    ERR_UNKNOWN,
    LINE,
    OK,
)
from apt_daq.wire.scpi_commands import DATA_OUT_OF_RANGE, NUMBER_RE


class HvLineInterface(LineInterface):
    """One command line in, one reply line out."""

    idn = "APT-DAQ,HV-SIM,0,1.0"
    model: HvSupplyModel

    def __init__(self, model: HvSupplyModel, clock: Callable[[], float] | None = None):
        super().__init__(model, clock)
        self.last_error: tuple[int, str] = (0, "No error")

    def watchdog_note(self, message: str) -> None:
        self.last_error = (ERR_OTHER, printable(message))

    def _err(self, code: int, message: str) -> str:
        message = printable(message)
        self.last_error = (code, message)
        return f"ERR {code} {message}"

    def too_long(self) -> str:
        """A line over :data:`~apt_daq.sim.scpi_server.MAX_LINE` bytes arrived (and was discarded)."""
        return self._err(ERR_ARGUMENT, f"line too long (over {MAX_LINE} bytes)")

    def handle(self, line: str) -> str | None:
        got = self.received(line)
        if got is None:
            return None
        line = got
        m, c = self.model, LINE
        parts = line.split()
        cmd, args = parts[0].upper(), parts[1:]
        queries: dict[str, Callable[[], str]] = {
            c.idn.head: lambda: self.idn,
            c.get_voltage.head: lambda: f"{m.setpoint_v:.3f}",
            c.get_limit.head: lambda: f"{m.limit_v:.3f}",
            c.get_output.head: lambda: "1" if m.output_on else "0",
            c.measure_voltage.head: lambda: f"{m.measured_v():.3f}",
            c.measure_current.head: lambda: f"{m.current_a:.6e}",
            c.get_trip.head: lambda: "1" if m.tripped else "0",
            c.get_slew.head: lambda: f"{m.slew_v_per_s:.3f}",
            c.get_watchdog.head: lambda: f"{self.watchdog_s:.3f}",
        }
        actions: dict[str, Callable[[], None]] = {c.clear_trip.head: m.clear_trip,
                                                  c.reset.head: m.reset}
        settings: dict[str, Callable[[float], None]] = {
            c.set_voltage.head: m.set_voltage, c.set_limit.head: m.set_limit,
            c.set_slew.head: m.set_slew, c.set_output.head: lambda x: m.set_output(x == 1.0),
            c.set_watchdog.head: self.set_watchdog}
        try:
            if cmd in queries and not args:
                return queries[cmd]()
            if cmd == c.get_error.head and not args:
                code, msg = self.last_error
                self.last_error = (0, "No error")
                return f"{code} {msg}"
            if cmd in actions and not args:
                actions[cmd]()
                return OK
            if cmd in settings and len(args) == 1:
                if not re.fullmatch(NUMBER_RE, args[0]):
                    return self._err(ERR_ARGUMENT, f"bad number {args[0]!r}")
                x = float(args[0])
                if cmd == c.set_output.head and x not in (0.0, 1.0):
                    return self._err(ERR_ARGUMENT, f"{cmd} takes 1 or 0")
                settings[cmd](x)
                return OK
        except DeviceError as e:
            code = ERR_TRIPPED if "tripped" in e.message else (
                ERR_RANGE if e.code == DATA_OUT_OF_RANGE else ERR_OTHER)
            return self._err(code, e.message)
        return self._err(ERR_UNKNOWN, f"unknown command {line!r}")


class PtyServer:
    """Serve a line handler on a pseudo-terminal pair; ``.path`` is the device to open.

    Local by nature (a pty has no network side). A line over ``max_line`` bytes is discarded
    up to its newline and ``on_overlong()`` answers it; a handler that raises costs only
    that line (the error goes to ``on_event``).
    """

    def __init__(self, handler: Callable[[str], str | None], eol: str = EOL, *,
                 max_line: int = MAX_LINE, on_overlong: Callable[[], str | None] | None = None,
                 on_event: Callable[[str], None] | None = None):
        self.handler = handler
        self.eol = eol
        self.max_line = max_line
        self.on_overlong = on_overlong
        self.on_event = on_event or (lambda text: None)
        self.lock = threading.RLock()
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)  # no echo, no line editing: a plain serial line
        self.path = os.ttyname(self._slave)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> PtyServer:
        self._thread = threading.Thread(target=self._run, daemon=True, name="pty-line")
        self._thread.start()
        return self

    def _run(self) -> None:
        lines = LineBuffer(self.max_line)
        while not self._stop.is_set():
            r, _, _ = select.select([self._master], [], [], 0.1)
            if not r:
                continue
            try:
                data = os.read(self._master, 4096)
            except OSError:
                break
            for line in lines.feed(data):
                try:
                    with self.lock:
                        reply = answer(self.handler, self.on_overlong, line)
                except Exception as e:  # the pty has one client: keep serving it
                    try:
                        self.on_event(f"hv_serial: {type(e).__name__}: {printable(str(e))}")
                    except Exception:
                        pass
                    continue
                if reply is not None:
                    try:
                        os.write(self._master, encode_reply(reply, self.eol))
                    except OSError:
                        return

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        for fd in (self._master, self._slave):
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self) -> PtyServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def serve_hv_pty(model: HvSupplyModel, clock: Callable[[], float] | None = None
                 ) -> tuple[PtyServer, HvLineInterface]:
    """The line protocol on a pty; open ``server.path`` with pyserial."""
    iface = HvLineInterface(model, clock)
    return PtyServer(iface.handle, on_overlong=iface.too_long).start(), iface


def serve_hv_tcp(model: HvSupplyModel, host: str = "127.0.0.1", port: int = 0,
                 clock: Callable[[], float] | None = None, *, allow_remote: bool = False
                 ) -> tuple[TcpLineServer, HvLineInterface]:
    """The line protocol on TCP (CR LF); ``server.url`` is ``socket://host:port``."""
    iface = HvLineInterface(model, clock)
    server = TcpLineServer(iface.handle, host, port, eol=EOL, allow_remote=allow_remote,
                           on_overlong=iface.too_long, name="hv_line")
    return server.start(), iface
