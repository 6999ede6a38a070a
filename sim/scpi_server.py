"""Thin SCPI wire interfaces of the device models (Lewis style: model and wire apart).

:class:`HvScpiInterface` and :class:`LaserScpiInterface` map one command line to calls on
:class:`sim.devices.HvSupplyModel` / :class:`sim.devices.LaserModel` and keep the SCPI error
queue (``SYST:ERR?``); :class:`TcpLineServer` serves any such line handler on a TCP socket
(LF terminated, several clients, one lock around the model). Mnemonics are matched in short
or long form, case-insensitively (``SOUR:VOLT`` = ``source:voltage``).

Time: give the interface a ``clock`` (a function returning seconds) and the model is moved on
to that time before each command (the HV output slews); the HIL emulator passes none and
drives the models' time itself.
"""

from __future__ import annotations

import re
import socket
import threading
from collections import deque
from collections.abc import Callable

from sim.devices import DeviceError, HvSupplyModel, LaserModel

NUMBER = r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)"
BOOL = r"(ON|OFF|1|0)"
QUEUE_DEPTH = 16

Handler = Callable[..., str | None]


def mnemonic(short: str, long: str) -> str:
    """Regex accepting ``short`` or ``long`` (``SOUR``/``SOURCE``), case-insensitively."""
    assert long.upper().startswith(short.upper())
    rest = long[len(short):]
    return re.escape(short) + (f"(?:{re.escape(rest)})?" if rest else "")


def header(*parts: tuple[str, str]) -> str:
    return ":".join(mnemonic(s, lg) for s, lg in parts)


SOUR = ("SOUR", "SOURCE")
VOLT = ("VOLT", "VOLTAGE")
LIM = ("LIM", "LIMIT")
OUTP = ("OUTP", "OUTPUT")
MEAS = ("MEAS", "MEASURE")
CURR = ("CURR", "CURRENT")
PROT = ("PROT", "PROTECTION")
PULS = ("PULS", "PULSE")
ENER = ("ENER", "ENERGY")
FREQ = ("FREQ", "FREQUENCY")
SYST = ("SYST", "SYSTEM")
ERR = ("ERR", "ERROR")


def _on(text: str) -> bool:
    return text.upper() in ("ON", "1")


class ScpiInterface:
    """Common commands and the error queue; subclasses add their command table."""

    idn = "apt-daq,SIM,0,1.0"

    def __init__(self, model, clock: Callable[[], float] | None = None):
        self.model = model
        self.clock = clock
        self.errors: deque[tuple[int, str]] = deque(maxlen=QUEUE_DEPTH)
        self.commands_seen: list[str] = []  # every line received, for tests and logs
        self._table: list[tuple[re.Pattern[str], Handler]] = []
        self.add(r"\*IDN\?", lambda: self.idn)
        self.add(r"\*RST", self._reset)
        self.add(r"\*CLS", self.errors.clear)
        self.add(r"\*OPC\?", lambda: "1")
        self.add(header(SYST, ERR) + r"(?::NEXT)?\?", self._next_error)

    def add(self, pattern: str, handler: Handler) -> None:
        self._table.append((re.compile(pattern, re.IGNORECASE), handler))

    def push_error(self, code: int, message: str) -> None:
        self.errors.append((code, message))

    def _next_error(self) -> str:
        if not self.errors:
            return '0,"No error"'
        code, message = self.errors.popleft()
        return f'{code},"{message}"'

    def _reset(self) -> None:
        self.model.reset()

    def sync(self) -> None:
        """Move the model on to the clock's time."""
        if self.clock is None:
            return
        now = self.clock()
        dt = now - self.model.now_s
        if dt > 0:
            if hasattr(self.model, "advance"):
                self.model.advance(dt)
            else:
                self.model.now_s = now

    def handle(self, line: str) -> str | None:
        """One command line -> the reply line (None for a command without reply)."""
        line = line.strip()
        if not line:
            return None
        self.commands_seen.append(line)
        self.sync()
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
                self.push_error(-104, f"Data type error: {e}")
                return None
            return None if out is None else str(out)
        head = line.split(" ", 1)[0]
        if re.search(r"\s", line) and any(p.fullmatch(head) for p, _ in self._table):
            self.push_error(-108, f"Parameter not allowed: {line}")
        else:
            self.push_error(-113, f"Undefined header: {line}")
        return None


def _num(text: str) -> float:
    return float(text)


class HvScpiInterface(ScpiInterface):
    """The HV supply's SCPI subset (see ``docs/protocols.md``)."""

    idn = "apt-daq,HV-SIM,0,1.0"

    def __init__(self, model: HvSupplyModel, clock: Callable[[], float] | None = None):
        super().__init__(model, clock)
        m = model
        self.add(header(SOUR, VOLT, LIM) + r"\s+" + NUMBER, lambda v: m.set_limit(_num(v)))
        self.add(header(SOUR, VOLT, LIM) + r"\?", lambda: f"{m.limit_v:.3f}")
        self.add(header(SOUR, VOLT) + r"\s+" + NUMBER, lambda v: m.set_voltage(_num(v)))
        self.add(header(SOUR, VOLT) + r"\?", lambda: f"{m.setpoint_v:.3f}")
        self.add(header(OUTP, PROT) + ":TRIP\\?", lambda: "1" if m.tripped else "0")
        self.add(header(OUTP, PROT) + ":" + mnemonic("CLE", "CLEAR"), m.clear_trip)
        self.add(header(OUTP) + r"\s+" + BOOL, lambda s: m.set_output(_on(s)))
        self.add(header(OUTP) + r"(?::" + mnemonic("STAT", "STATE") + r")?\?",
                 lambda: "1" if m.output_on else "0")
        self.add(header(MEAS, VOLT) + r"\?", lambda: f"{m.measured_v():.3f}")
        self.add(header(MEAS, CURR) + r"\?", lambda: f"{m.current_a:.6e}")


class LaserScpiInterface(ScpiInterface):
    """The laser's SCPI set (see ``docs/protocols.md``)."""

    idn = "apt-daq,LASER-SIM,0,1.0"

    def __init__(self, model: LaserModel, clock: Callable[[], float] | None = None):
        super().__init__(model, clock)
        m = model
        self.add(header(SOUR, PULS, ENER) + r"\s+" + NUMBER, lambda v: m.set_energy(_num(v)))
        self.add(header(SOUR, PULS, ENER) + r"\?", lambda: f"{m.energy_pj:.3f}")
        self.add(header(SOUR, PULS, FREQ) + r"\s+" + NUMBER,
                 lambda v: m.set_pulse_rate(_num(v)))
        self.add(header(SOUR, PULS, FREQ) + r"\?", lambda: f"{m.pulse_rate_hz:.3f}")
        self.add(header(OUTP) + r"\s+" + BOOL, lambda s: m.set_emission(_on(s)))
        self.add(header(OUTP) + r"(?::" + mnemonic("STAT", "STATE") + r")?\?",
                 lambda: "1" if m.emission_on else "0")
        self.add(header(SYST) + r":(?:INTL|INTERLOCK)\?",
                 lambda: "1" if m.interlock_open else "0")


class TcpLineServer:
    """Serve a line handler on TCP: each received line -> ``handler(line)`` -> reply + EOL.

    ``drop_clients()`` closes every open connection (a fault for reconnect tests).
    """

    def __init__(self, handler: Callable[[str], str | None], host: str = "127.0.0.1",
                 port: int = 0, eol: str = "\n", lock: threading.RLock | None = None):
        self.handler = handler
        self.eol = eol
        self.lock = lock or threading.RLock()
        self._sock = socket.create_server((host, port))
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

    def start(self) -> TcpLineServer:
        self._thread = threading.Thread(target=self._accept, daemon=True, name="scpi-accept")
        self._thread.start()
        return self

    def _accept(self) -> None:
        self._sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except (TimeoutError, OSError):
                continue
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.lock:
                self._clients.add(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buf = b""
        try:
            while not self._stop.is_set():
                data = conn.recv(65536)
                if not data:
                    break
                buf += data
                while b"\n" in buf:
                    raw, buf = buf.split(b"\n", 1)
                    line = raw.decode("ascii", "replace").rstrip("\r")
                    with self.lock:
                        reply = self.handler(line)
                    if reply is not None:
                        conn.sendall((reply + self.eol).encode("ascii"))
        except OSError:
            pass
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
             clock: Callable[[], float] | None = None) -> tuple[TcpLineServer, HvScpiInterface]:
    """Start an HV SCPI server; returns (server, interface). ``server.resource`` for pyvisa."""
    iface = HvScpiInterface(model, clock)
    return TcpLineServer(iface.handle, host, port).start(), iface


def serve_laser(model: LaserModel, host: str = "127.0.0.1", port: int = 0,
                clock: Callable[[], float] | None = None
                ) -> tuple[TcpLineServer, LaserScpiInterface]:
    """Start a laser SCPI server; returns (server, interface)."""
    iface = LaserScpiInterface(model, clock)
    return TcpLineServer(iface.handle, host, port).start(), iface
