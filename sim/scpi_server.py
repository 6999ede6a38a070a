"""Thin SCPI wire interfaces of the device models (Lewis style: model and wire apart).

:class:`HvScpiInterface` and :class:`LaserScpiInterface` map one command line to calls on
:class:`apt_daq.sim.devices.HvSupplyModel` / :class:`apt_daq.sim.devices.LaserModel` and keep the SCPI error
queue (``SYST:ERR?``); :class:`TcpLineServer` serves any such line handler on a TCP socket
(LF terminated, several clients, one lock around the model). Mnemonics are matched in short
or long form, case-insensitively (``SOUR:VOLT`` = ``source:voltage``).

Time: give the interface a ``clock`` (a function returning seconds) and the model is moved on
to that time before each command (the HV output slews); the HIL emulator passes none and
drives the models' time itself.

Exposure and limits (``docs/hil.md``): a server listens on loopback unless it is given
``allow_remote=True`` (:func:`check_host`); incoming bytes are decoded as ASCII with
replacement and every reply is encoded with replacement, error messages are stored as
printable ASCII (:func:`printable`), so no client input can kill a server thread or poison
the state other clients share; a line longer than :data:`MAX_LINE` bytes is discarded up to
its newline (SCPI: error -223 in the queue); the error queue holds :data:`QUEUE_DEPTH`
entries (then -350 "Queue overflow"); at most :data:`MAX_CLIENTS` connections per server.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import sys
import threading
from collections import deque
from collections.abc import Callable

from apt_daq.sim.devices import DeviceError, DeviceModel, History, HvSupplyModel, LaserModel
from apt_daq.sim.link_watchdog import LinkWatchdog

from apt_daq.wire.scpi_commands import (
    BOOL_RE,
    COMMON,
    DATA_TYPE_ERROR,
    DEVICE_SPECIFIC,
    ERROR_MESSAGES,
    HV,
    LASER,
    NO_ERROR,
    NUMBER_RE,
    PARAMETER_NOT_ALLOWED,
    QUEUE_OVERFLOW,
    TOO_MUCH_DATA,
    UNDEFINED_HEADER,
    ScpiCommand,
    arg_is_on,
    format_error,
)

NUMBER = NUMBER_RE  # the old names of the argument patterns
BOOL = BOOL_RE
QUEUE_DEPTH = 16  # SCPI error queue entries; a full queue ends in -350 "Queue overflow"
MAX_LINE = 4096  # bytes of one command line (without its newline)
MAX_CLIENTS = 8  # concurrent connections per server; one more is closed at once
MAX_MESSAGE = 255  # characters of a stored error message (SCPI's limit)
MAX_LOGGED = 256  # characters of a command line kept in ``commands_seen``


def printable(text: str, limit: int = MAX_MESSAGE) -> str:
    """``text`` as printable ASCII: any other character becomes ``?``; at most ``limit``
    characters (``...`` marks a cut). Safe to store and to send on any wire."""
    out = "".join(c if " " <= c <= "~" else "?" for c in text[:limit + 1])
    return out if len(out) <= limit else out[:limit - 3] + "..."


def is_loopback(host: str) -> bool:
    """True if ``host`` names only loopback addresses (``127.0.0.1``, ``::1``,
    ``localhost``); ``""`` and ``0.0.0.0`` (every interface) are not."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    if not host:
        return False
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(str(i[4][0]).split("%")[0]).is_loopback
                               for i in infos)


class RemoteHostRefused(ValueError):
    """A server asked to listen beyond loopback without ``allow_remote=True`` (the CLI's
    ``--allow-remote``): there is no authentication, anyone reaching the port drives the
    HV supply."""


def check_host(host: str, allow_remote: bool = False) -> bool:
    """Refuse a non-loopback ``host`` unless ``allow_remote``; True if the host is remote."""
    if is_loopback(host):
        return False
    if not allow_remote:
        raise RemoteHostRefused(f"--host {host or '(all interfaces)'} is not loopback: "
                                "pass --allow-remote to expose HV control")
    return True


def remote_warning(host: str) -> str:
    """The one-line warning printed when serving beyond loopback."""
    return (f"warning: serving on {host or '(all interfaces)'} (not loopback) without "
            "authentication: anyone who can reach these ports can drive the HV supply (kV), "
            "the laser and the emulator's control port")

Handler = Callable[..., float | bool | str | None]  # a value the reply format turns into text


def mnemonic(short: str, long: str) -> str:
    """Regex accepting ``short`` or ``long`` (``SOUR``/``SOURCE``), case-insensitively."""
    assert long.upper().startswith(short.upper())
    rest = long[len(short):]
    return re.escape(short) + (f"(?:{re.escape(rest)})?" if rest else "")


class LineInterface(LinkWatchdog):
    """What every wire interface of a device model shares (the SCPI ones here, the HV line
    protocol's in :mod:`apt_daq.sim.serial_server`): the model, the clock that moves it on,
    the log of the lines received, and the link watchdog (:class:`LinkWatchdog`)."""

    def __init__(self, model: DeviceModel, clock: Callable[[], float] | None = None):
        super().__init__()
        self.model = model
        self.clock = clock
        self.commands_seen = History()  # the last lines received, for tests and logs

    def sync(self) -> None:
        """Move the model on to the clock's time."""
        if self.clock is None:
            return
        dt = self.clock() - self.model.now_s
        if dt > 0:
            self.model.advance(dt)

    def received(self, line: str) -> str | None:
        """A received line stripped, logged and the model synced; None for a blank line."""
        line = line.strip()
        if not line:
            return None
        self.fed()
        self.commands_seen.append(printable(line, MAX_LOGGED))
        self.sync()
        return line

    def handle(self, line: str) -> str | None:
        """One command line -> the reply line (None for no reply)."""
        raise NotImplementedError

    def too_long(self) -> str | None:
        """A line over :data:`MAX_LINE` bytes arrived (and was discarded): the reply, if any."""
        raise NotImplementedError


class ScpiInterface(LineInterface):
    """Common commands and the error queue; subclasses add their command table."""

    idn = "apt-daq,SIM,0,1.0"

    def __init__(self, model: DeviceModel, clock: Callable[[], float] | None = None):
        super().__init__(model, clock)
        self.errors: deque[tuple[int, str]] = deque(maxlen=QUEUE_DEPTH)
        self._table: list[tuple[re.Pattern[str], Handler]] = []
        c = COMMON
        self.add(c.idn, lambda: self.idn)
        self.add(c.reset, self._reset)
        self.add(c.clear_status, self.errors.clear)
        self.add(c.operation_complete, lambda: "1")
        self.add(c.error, self._next_error)
        self.add(c.set_watchdog, self.set_watchdog)
        self.add(c.get_watchdog, lambda: self.watchdog_s)

    def watchdog_note(self, message: str) -> None:
        self.push_error(DEVICE_SPECIFIC, message)

    def add(self, command: ScpiCommand, handler: Handler) -> None:
        """Serve ``command`` (its pattern from :mod:`apt_daq.wire.scpi_commands`): ``handler``
        gets the argument (a number as float, a boolean as bool) and returns the value the
        command's reply format turns into the reply line (None: no reply)."""
        def call(*groups: str) -> str | None:
            args: list[float | bool] = [_arg(command, g) for g in groups]
            out = handler(*args)
            return None if out is None else command.reply(out)
        self._table.append((re.compile(command.pattern(), re.IGNORECASE), call))

    def push_error(self, code: int, message: str) -> None:
        """Queue an error (message stored as printable ASCII). A full queue keeps its oldest
        entries and its last becomes -350 "Queue overflow" (SCPI-99 21.8)."""
        entry = (int(code), printable(str(message)))
        if len(self.errors) >= QUEUE_DEPTH:
            self.errors[-1] = (QUEUE_OVERFLOW, ERROR_MESSAGES[QUEUE_OVERFLOW])
        else:
            self.errors.append(entry)

    def too_long(self) -> None:
        """A line over :data:`MAX_LINE` bytes arrived (and was discarded): queued, no reply."""
        self.push_error(TOO_MUCH_DATA, f"{ERROR_MESSAGES[TOO_MUCH_DATA]}: command line over "
                        f"{MAX_LINE} bytes")

    def _next_error(self) -> str:
        if not self.errors:
            return format_error(NO_ERROR, ERROR_MESSAGES[NO_ERROR])
        return format_error(*self.errors.popleft())

    def _reset(self) -> None:
        self.model.reset()

    def handle(self, line: str) -> str | None:
        """One command line -> the reply line (None for a command without reply)."""
        got = self.received(line)
        if got is None:
            return None
        line = got
        for pattern, fn in self._table:
            m = pattern.fullmatch(line)
            if m is None:
                continue
            try:
                out = fn(*m.groups())
            except DeviceError as e:
                self.push_error(e.code, e.message)
                return None
            except ValueError as e:
                self.push_error(DATA_TYPE_ERROR, f"{ERROR_MESSAGES[DATA_TYPE_ERROR]}: {e}")
                return None
            return None if out is None else str(out)
        head = line.split(" ", 1)[0]
        if re.search(r"\s", line) and any(p.fullmatch(head) for p, _ in self._table):
            self.push_error(PARAMETER_NOT_ALLOWED,
                            f"{ERROR_MESSAGES[PARAMETER_NOT_ALLOWED]}: {line}")
        else:
            self.push_error(UNDEFINED_HEADER, f"{ERROR_MESSAGES[UNDEFINED_HEADER]}: {line}")
        return None


def _arg(command: ScpiCommand, text: str) -> float | bool:
    """A captured argument as the handler takes it."""
    return arg_is_on(text) if command.arg == "bool" else float(text)


class HvScpiInterface(ScpiInterface):
    """The HV supply's SCPI subset (:data:`apt_daq.wire.scpi_commands.HV`)."""

    idn = "apt-daq,HV-SIM,0,1.0"

    def __init__(self, model: HvSupplyModel, clock: Callable[[], float] | None = None):
        super().__init__(model, clock)
        m, c = model, HV
        self.add(c.set_limit, m.set_limit)
        self.add(c.get_limit, lambda: m.limit_v)
        self.add(c.set_slew, m.set_slew)
        self.add(c.get_slew, lambda: m.slew_v_per_s)
        self.add(c.set_voltage, m.set_voltage)
        self.add(c.get_voltage, lambda: m.setpoint_v)
        self.add(c.get_trip, lambda: m.tripped)
        self.add(c.clear_trip, m.clear_trip)
        self.add(c.set_output, m.set_output)
        self.add(c.get_output, lambda: m.output_on)
        self.add(c.measure_voltage, m.measured_v)
        self.add(c.measure_current, lambda: m.current_a)


class LaserScpiInterface(ScpiInterface):
    """The laser's SCPI set (:data:`apt_daq.wire.scpi_commands.LASER`)."""

    idn = "apt-daq,LASER-SIM,0,1.0"

    def __init__(self, model: LaserModel, clock: Callable[[], float] | None = None):
        super().__init__(model, clock)
        m, c = model, LASER
        self.add(c.set_energy, m.set_energy)
        self.add(c.get_energy, lambda: m.energy_pj)
        self.add(c.set_rate, m.set_pulse_rate)
        self.add(c.get_rate, lambda: m.pulse_rate_hz)
        self.add(c.set_emission, m.set_emission)
        self.add(c.get_emission, lambda: m.emission_on)
        self.add(c.get_interlock, lambda: m.interlock_open)


class LineBuffer:
    """Bytes in, whole lines out, never more than ``max_line`` bytes held (plus one read).

    ``feed(data)`` returns the completed items: a ``str`` line (ASCII, undecodable bytes
    replaced, trailing CR stripped) or ``None`` for a line over ``max_line`` bytes, which is
    discarded up to its newline however long it goes on.
    """

    def __init__(self, max_line: int = MAX_LINE):
        self.max_line = max_line
        self._buf = bytearray()
        self._discarding = False

    def feed(self, data: bytes) -> list[str | None]:
        self._buf += data
        out: list[str | None] = []
        while True:
            i = self._buf.find(b"\n")
            if i < 0:
                if len(self._buf) > self.max_line:
                    if not self._discarding:
                        out.append(None)
                        self._discarding = True
                    self._buf.clear()
                return out
            raw = bytes(self._buf[:i])
            del self._buf[:i + 1]
            if self._discarding:  # the tail of a line already reported
                self._discarding = False
            elif len(raw) > self.max_line:
                out.append(None)
            else:
                out.append(raw.decode("ascii", "replace").rstrip("\r"))

    @property
    def pending(self) -> int:
        """Bytes held of an incomplete line."""
        return len(self._buf)


def answer(handler: Callable[[str], str | None],
           on_overlong: Callable[[], str | None] | None, line: str | None) -> str | None:
    """The reply to one item of :meth:`LineBuffer.feed`: ``handler(line)``, or for a line
    that was too long (None) ``on_overlong()`` if there is one."""
    if line is not None:
        return handler(line)
    return on_overlong() if on_overlong is not None else None


def encode_reply(reply: str, eol: str) -> bytes:
    """A reply line as bytes: ASCII, any other character replaced (never raises)."""
    return (reply + eol).encode("ascii", "replace")


class TcpLineServer:
    """Serve a line handler on TCP: each received line -> ``handler(line)`` -> reply + EOL.

    ``drop_clients()`` closes every open connection (a fault for reconnect tests). The host
    must be loopback unless ``allow_remote`` (:func:`check_host`). A line over ``max_line``
    bytes is discarded up to its newline and ``on_overlong()`` is called (its reply, if any,
    is sent); a connection beyond ``max_clients`` is closed at once and reported to
    ``on_event``. A handler that raises closes only its own connection.
    """

    def __init__(self, handler: Callable[[str], str | None], host: str = "127.0.0.1",
                 port: int = 0, eol: str = "\n", lock: threading.RLock | None = None, *,
                 allow_remote: bool = False, max_line: int = MAX_LINE,
                 max_clients: int = MAX_CLIENTS,
                 on_overlong: Callable[[], str | None] | None = None,
                 on_event: Callable[[str], None] | None = None, name: str = "line"):
        check_host(host, allow_remote)
        self.handler = handler
        self.eol = eol
        self.lock = lock or threading.RLock()
        self.max_line = max_line
        self.max_clients = max_clients
        self.on_overlong = on_overlong
        self.on_event = on_event or (lambda text: None)
        self.name = name
        self.refused = 0  # connections closed at once because of max_clients
        self._sock = socket.create_server((host, port))
        self._sock.settimeout(0.2)  # here, not in the thread: stop() may close it first
        self.host, self.port = self._sock.getsockname()[:2]
        self._clients: set[socket.socket] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def resource(self) -> str:
        """The pyvisa resource string of this server."""
        return f"TCPIP::{self.host}::{self.port}::SOCKET"

    @property
    def url(self) -> str:
        """The pyserial URL of this server."""
        return f"socket://{self.host}:{self.port}"

    @property
    def n_clients(self) -> int:
        with self.lock:
            return len(self._clients)

    def start(self) -> TcpLineServer:
        self._thread = threading.Thread(target=self._accept, daemon=True, name="scpi-accept")
        self._thread.start()
        return self

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, addr = self._sock.accept()
            except (TimeoutError, OSError):
                continue
            with self.lock:
                full = len(self._clients) >= self.max_clients
                if not full:
                    self._clients.add(conn)
            if full:
                self.refused += 1
                conn.close()
                self._event(f"{self.name}: connection from {addr[0]}:{addr[1]} refused, "
                            f"{self.max_clients} clients already connected")
                continue
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._serve, args=(conn,), daemon=True,
                             name=f"{self.name}-client").start()

    def _event(self, text: str) -> None:
        try:
            self.on_event(text)
        except Exception:  # a broken logger must not stop the server
            pass

    def _serve(self, conn: socket.socket) -> None:
        lines = LineBuffer(self.max_line)
        try:
            while not self._stop.is_set():
                data = conn.recv(65536)
                if not data:
                    break
                for line in lines.feed(data):
                    with self.lock:
                        reply = answer(self.handler, self.on_overlong, line)
                    if reply is not None:
                        conn.sendall(encode_reply(reply, self.eol))
        except OSError:
            pass
        except Exception as e:  # a bug must cost only this connection, never the server
            self._event(f"{self.name}: connection closed by {type(e).__name__}: "
                        f"{printable(str(e))}")
            print(f"{self.name} server: {type(e).__name__}: {printable(str(e))}",
                  file=sys.stderr)
        finally:
            with self.lock:
                self._clients.discard(conn)
            conn.close()

    def drop_clients(self) -> None:
        with self.lock:
            for c in list(self._clients):
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                c.close()
            self._clients.clear()

    def stop(self) -> None:
        self._stop.set()
        self.drop_clients()
        self._sock.close()
        if self._thread is not None:
            self._thread.join(timeout=2)

    def __enter__(self) -> TcpLineServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def serve_hv(model: HvSupplyModel, host: str = "127.0.0.1", port: int = 0,
             clock: Callable[[], float] | None = None, *, allow_remote: bool = False
             ) -> tuple[TcpLineServer, HvScpiInterface]:
    """Start an HV SCPI server; returns (server, interface). ``server.resource`` for pyvisa."""
    iface = HvScpiInterface(model, clock)
    server = TcpLineServer(iface.handle, host, port, allow_remote=allow_remote,
                           on_overlong=iface.too_long, name="hv")
    return server.start(), iface


def serve_laser(model: LaserModel, host: str = "127.0.0.1", port: int = 0,
                clock: Callable[[], float] | None = None, *, allow_remote: bool = False
                ) -> tuple[TcpLineServer, LaserScpiInterface]:
    """Start a laser SCPI server; returns (server, interface)."""
    iface = LaserScpiInterface(model, clock)
    server = TcpLineServer(iface.handle, host, port, allow_remote=allow_remote,
                           on_overlong=iface.too_long, name="laser")
    return server.start(), iface
