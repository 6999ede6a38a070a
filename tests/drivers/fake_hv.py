"""A misbehaving SCPI HV supply on a loopback socket, written for the tests from the protocol
table in docs/protocols.md (not from the emulator), so safety is judged by what an instrument
the project did not build received.

``FakeHv(mode)`` answers the SCPI subset correctly until :meth:`FakeHv.misbehave` is called
(or from the start with ``at_once=True``); then, by ``mode``:

- ``silent``: settings are applied, nothing is ever answered;
- ``late``: every answer comes ``late_s`` after the question (longer than the driver timeout);
- ``garbage``: every answer is junk bytes (settings are applied);
- ``nan``: ``SOUR:VOLT?`` and ``MEAS:VOLT?`` answer ``nan``;
- ``lies_off``: ``OUTP?`` always answers ``0`` (the output really is on);
- ``drop_on_off``: ``OUTP OFF`` is applied, then the connection is closed at once;

and the modes of :data:`EXTRA_MODES` (not in :data:`MODES`, which the generic misbehaving
tests run through):

- ``lies_setpoint``: ``SOUR:VOLT?`` answers ``lie_setpoint`` (settings are applied);
- ``wild_meas``: ``MEAS:VOLT?`` and ``MEAS:CURR?`` answer ``meas_reply`` (e.g. ``-5``, ``1e30``).

``received`` is every line received with the shared clock's time; ``setpoints()`` the setpoint
commands with the output state at the time, which is what the ramp rule is judged on.
"""

from __future__ import annotations

import math
import socket
import threading
import time

MODES = ("silent", "late", "garbage", "nan", "lies_off", "drop_on_off")
EXTRA_MODES = ("lies_setpoint", "wild_meas")


class FakeHv:
    def __init__(self, mode: str, clock, *, at_once: bool = False, late_s: float = 0.6,
                 after_setpoints: int | None = None, lie_setpoint: float = 5500.0,
                 meas_reply: str = "-5"):
        assert mode in MODES + EXTRA_MODES, mode
        self.lie_setpoint = lie_setpoint  # what SOUR:VOLT? answers in lies_setpoint mode
        self.meas_reply = meas_reply  # what MEAS:VOLT?/MEAS:CURR? answer in wild_meas mode
        self.mode = mode
        self.after_setpoints = after_setpoints  # turn bad after this many setpoints
        self.clock = clock
        self.late_s = late_s
        self.bad = at_once
        self.bad_since = 0  # index in ``received`` of the first line after the fault
        self.setpoint_v = 0.0
        self.limit_v = 15000.0
        self.on = False
        self.errors: list[str] = []
        self.received: list[tuple[float, str, bool]] = []  # (time, line, output on before it)
        self.connections = 0
        self._lock = threading.Lock()
        self._sock = socket.create_server(("127.0.0.1", 0))
        # before the thread starts: a close() that comes first left it a closed socket
        # (OSError EBADF in the thread, a pytest warning)
        self._sock.settimeout(0.1)
        self.port = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def resource(self) -> str:
        return f"TCPIP::127.0.0.1::{self.port}::SOCKET"

    def misbehave(self) -> None:
        self.bad = True
        self.bad_since = len(self.received)

    # ------------------------------------------------------------------ silent on *IDN?
    #: set by silent_on_idn(): the identification query is never answered (all else is)
    idn_silent = False
    IDN_QUERIES = ("*IDN?", "ID?")  # SCPI; the line protocol

    def silent_on_idn(self) -> None:
        """From now on never answer the identification query (``*IDN?``, line ``ID?``);
        every other command is served as before (an output that is on stays on). What
        follows in ``received`` is after the fault (``bad_since``)."""
        self.idn_silent = True
        self.bad_since = len(self.received)

    # ------------------------------------------------------------------ a latched trip
    #: set by trip(): the over-current protection latched the output off (docs/protocols.md:
    #: OUTP:PROT:TRIP? answers 1, OUTP ON is refused with -300 until OUTP:PROT:CLE)
    tripped = False

    def trip(self) -> None:
        with self._lock:
            self.tripped = True
            self.on = False
            self.bad_since = len(self.received)

    def _unanswered(self, line: str) -> bool:
        return self.idn_silent and line.strip().upper() in self.IDN_QUERIES

    def close(self) -> None:
        self._stop.set()
        self._sock.close()
        for c in list(self._conns):
            try:
                c.close()
            except OSError:
                pass

    # ------------------------------------------------------------------ what was received
    EOL = "\n"  # the reply terminator

    @staticmethod
    def classify(line: str) -> tuple[str, float] | None:
        """What a received line asks of the output: ("on" | "off", 0) or ("set", volts);
        None for anything else (queries, the limit, errors)."""
        u = line.upper()
        if u in ("OUTP ON", "OUTP 1"):
            return ("on", 0.0)
        if u in ("OUTP OFF", "OUTP 0"):
            return ("off", 0.0)
        if u.startswith("SOUR:VOLT ") and not u.startswith("SOUR:VOLT:"):
            return ("set", float(u.split()[1]))
        return None

    def events(self) -> list[tuple[float, str, float]]:
        """(time, "on" | "off" | "set", volts) of every output command received, in order."""
        return [(t, *c) for t, line, _ in self.received if (c := self.classify(line))]

    def live_steps(self) -> list[tuple[float, float, float, float]]:
        """(dt since the previous setpoint or output on, |dV|, new V, previous V) of every
        setpoint received while the output was on, from the received log; the output must
        go on at a 0 V setpoint."""
        out, v, on, t_ref = [], 0.0, False, 0.0
        for t, kind, new in self.events():
            if kind == "on":
                if not on:
                    assert v == 0.0, f"output went on at a {v} V setpoint"
                    t_ref = t
                on = True
            elif kind == "off":
                on = False
            else:
                if on:
                    out.append((t - t_ref, abs(new - v), new, v))
                    t_ref = t
                v = new
        return out

    def setpoints(self) -> list[tuple[float, float, bool]]:
        """(time, volts, output on) of every setpoint command received."""
        return [(t, float(c[1]), on) for t, line, on in self.received
                if (c := self.classify(line)) and c[0] == "set"]

    def is_off(self, line: str) -> bool:
        c = self.classify(line)
        return c is not None and c[0] == "off"

    def off_received_after(self, t_s: float) -> bool:
        return any(self.is_off(line) and t >= t_s for t, line, _ in self.received)

    # ------------------------------------------------------------------ serving
    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except (TimeoutError, OSError):
                continue
            self.connections += 1
            self._conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        buf = b""
        try:
            while not self._stop.is_set():
                data = conn.recv(4096)
                if not data:
                    return
                buf += data
                while b"\n" in buf:
                    raw, buf = buf.split(b"\n", 1)
                    line = raw.decode("ascii", "replace").strip()
                    with self._lock:
                        self.received.append((self.clock.monotonic(), line, self.on))
                        reply = self._handle(line)
                        if (self.after_setpoints is not None and not self.bad
                                and len(self.setpoints()) >= self.after_setpoints):
                            self.bad = True
                            self.bad_since = len(self.received)
                    if self.bad and self.mode == "drop_on_off" and self.is_off(line):
                        conn.close()
                        return
                    if reply is None or self._unanswered(line):
                        continue
                    if callable(reply):  # a subclass's own way of answering (it sends)
                        reply(conn)
                        continue
                    if self.bad and self.mode == "silent":
                        continue
                    if self.bad and self.mode == "garbage":
                        reply = "\x07#?!%&garbage"
                    if self.bad and self.mode == "late":
                        threading.Timer(self.late_s, _send, (conn, reply, self.EOL)).start()
                        continue
                    _send(conn, reply, self.EOL)
        except OSError:
            return
        finally:
            conn.close()

    def _handle(self, line: str) -> str | None:
        u = line.upper()
        parts = u.split()
        if u == "*CLS":
            self.errors.clear()
            return None
        if u == "*IDN?":
            return "FAKE,HV-TEST,1,0.1"
        if u == "SYST:ERR?":
            return self.errors.pop(0) if self.errors else '0,"No error"'
        if u == "SOUR:VOLT?":
            if self.bad and self.mode == "lies_setpoint":
                return f"{self.lie_setpoint:.3f}"
            return "nan" if self.bad and self.mode == "nan" else f"{self.setpoint_v:.3f}"
        if u == "MEAS:VOLT?":
            if self.bad and self.mode == "nan":
                return "nan"
            if self.bad and self.mode == "wild_meas":
                return self.meas_reply
            return f"{self.setpoint_v if self.on else 0.0:.3f}"
        if u == "MEAS:CURR?":
            return self.meas_reply if self.bad and self.mode == "wild_meas" else "1e-09"
        if u == "OUTP?":
            if self.bad and self.mode == "lies_off":
                return "0"
            return "1" if self.on else "0"
        if u in ("OUTP:PROT:TRIP?",):
            return "1" if self.tripped else "0"
        if u == "OUTP:PROT:CLE":
            self.tripped = False
            return None
        if u in ("OUTP ON", "OUTP 1") and self.tripped:
            self.errors.append('-300,"Device-specific error"')  # latched: stays off
            return None
        if u == "SOUR:VOLT:LIM?":
            return f"{self.limit_v:.3f}"
        if len(parts) == 2 and parts[0] in ("SOUR:VOLT", "SOUR:VOLT:LIM"):
            try:
                v = float(parts[1])
            except ValueError:
                self.errors.append('-104,"Data type error"')
                return None
            if not math.isfinite(v) or v < 0:
                self.errors.append('-222,"Data out of range"')
            elif parts[0] == "SOUR:VOLT:LIM":
                self.limit_v = v
            elif v > self.limit_v:
                self.errors.append('-222,"Data out of range"')
            else:
                self.setpoint_v = v
            return None
        if len(parts) == 2 and parts[0] == "OUTP" and parts[1] in ("ON", "OFF", "1", "0"):
            self.on = parts[1] in ("ON", "1")
            return None
        self.errors.append('-113,"Undefined header"')
        return None


def _send(conn: socket.socket, reply: str, eol: str = "\n") -> None:
    try:
        conn.sendall((reply + eol).encode("ascii", "replace"))
    except OSError:
        pass


def wait_for(cond, timeout_s: float = 5.0) -> bool:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if cond():
            return True
        time.sleep(0.01)
    return cond()
