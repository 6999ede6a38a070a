"""SCPI over pyvisa: the one place that formats numbers, parses replies and checks ``SYST:ERR?``.

Layers:

- a *transport* moves text lines (``open``, ``close``, ``write``, ``read``); it raises
  ``TimeoutError`` for a missing reply and ``ConnectionError`` for a broken link.
  :class:`VisaTransport` is pyvisa (pyvisa-py sockets, pyvisa-sim ``@sim`` YAML files, VISA).
- a :class:`Link` turns those into :class:`~apt_daq.drivers.base.DriverError` naming instrument and
  command, retries idempotent queries (never settings) and reconnects a bounded number of times.
- :class:`ScpiSession` adds the SCPI rules: a setting is followed by ``SYST:ERR?`` and a
  non-zero code raises :class:`~apt_daq.drivers.base.InstrumentError`.
"""

from __future__ import annotations

import math
import re
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

from apt_daq.drivers.base import (
    BadReply,
    Clock,
    ConnectionLost,
    DriverError,
    DriverTimeout,
    InstrumentError,
    WallClock,
)

T = TypeVar("T")

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


# --------------------------------------------------------------------------- transports


class Transport(Protocol):
    """Moves text lines; terminations are the transport's business."""

    def open(self) -> None: ...

    def close(self) -> None: ...

    def write(self, text: str) -> None: ...

    def read(self) -> str: ...


_RMS: dict[str, object] = {}


def _resource_manager(library: str):
    import pyvisa

    if library not in _RMS:
        _RMS[library] = pyvisa.ResourceManager(library)
    return _RMS[library]


def split_resource(resource: str) -> tuple[str, str | None]:
    """``(library, resource_name)`` of a config ``resource``.

    ``TCPIP::127.0.0.1::5025::SOCKET`` -> ``("@py", same)``; ``configs/pyvisa-sim/hv.yaml@sim``
    -> ``("<abs path>@sim", None)`` (the YAML's only resource). A relative YAML path is taken
    from the working directory, else from the project root (where ``configs/`` is shipped).
    """
    if not resource.endswith("@sim"):
        return "@py", resource
    path = Path(resource[: -len("@sim")])
    if not path.is_absolute() and not path.exists():
        from apt_daq.shipped import configs_dir

        root = configs_dir().parent  # "configs/..." names the shipped configs
        if (root / path).exists():
            path = root / path
    return f"{path}@sim", None


def _nodelay(inst) -> None:
    """TCP_NODELAY on a pyvisa socket. A setting then ``SYST:ERR?`` are two small writes:
    with Nagle's algorithm and the peer's delayed ACK that costs ~40 ms per setting.
    pyvisa-py (0.8) does not route VI_ATTR_TCPIP_NODELAY, so reach its socket directly."""
    try:
        inst.set_visa_attribute(0x3FFF019A, True)  # VI_ATTR_TCPIP_NODELAY
        return
    except Exception:  # not supported by this VISA library: fall through
        pass
    sess = getattr(inst.visalib, "sessions", {}).get(inst.session)
    sock = getattr(sess, "interface", None)
    if isinstance(sock, socket.socket):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


_SOCKET = re.compile(r"^TCPIP\d*::([^:]+)::(\d+)::SOCKET$", re.IGNORECASE)


def parse_socket_resource(resource: str) -> tuple[str, int] | None:
    """``TCPIP::host::port::SOCKET`` -> (host, port); anything else -> None."""
    m = _SOCKET.match(resource.strip())
    return (m.group(1), int(m.group(2))) if m else None


class SocketTransport:
    """A raw SCPI socket (``TCPIP::host::port::SOCKET``) without VISA.

    Same wire as pyvisa-py's socket session, but a connection closed by the instrument is
    seen at once (pyvisa-py 0.8 waits for the full timeout). Choose it with
    ``options: {transport: socket}``.
    """

    def __init__(self, resource: str, timeout_s: float = 2.0, termination: str = "\n"):
        where = parse_socket_resource(resource)
        if where is None:
            raise ValueError(f"not a TCPIP::host::port::SOCKET resource: {resource!r}")
        self.host, self.port = where
        self.timeout_s = timeout_s
        self.termination = termination.encode("ascii")
        self._sock: socket.socket | None = None
        self._buf = b""

    def open(self) -> None:
        try:
            self._sock = socket.create_connection((self.host, self.port), timeout=self.timeout_s)
        except OSError as e:
            raise ConnectionError(f"cannot connect to {self.host}:{self.port}: {e}") from e
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._buf = b""

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    def write(self, text: str) -> None:
        if self._sock is None:
            raise ConnectionError("not open")
        try:
            self._sock.sendall(text.encode("ascii") + self.termination)
        except TimeoutError as e:
            raise TimeoutError(f"send: {e}") from e

    def read(self) -> str:
        if self._sock is None:
            raise ConnectionError("not open")
        while self.termination not in self._buf:
            data = self._sock.recv(65536)  # socket.timeout is TimeoutError
            if not data:
                raise ConnectionError("connection closed by the instrument")
            self._buf += data
        line, self._buf = self._buf.split(self.termination, 1)
        return line.decode("ascii", "replace")


def make_transport(resource: str, timeout_s: float = 2.0, kind: str = "visa") -> Transport:
    """The transport for a config: ``kind`` ``visa`` (default, any pyvisa resource) or
    ``socket`` (raw TCP for ``TCPIP::host::port::SOCKET``)."""
    if kind == "socket":
        return SocketTransport(resource, timeout_s)
    if kind == "visa":
        return VisaTransport(resource, timeout_s)
    raise ValueError(f"options.transport: expected visa or socket, got {kind!r}")


class VisaTransport:
    """A pyvisa message-based resource with LF terminations."""

    def __init__(self, resource: str, timeout_s: float = 2.0, termination: str = "\n"):
        self.resource = resource
        self.timeout_s = timeout_s
        self.termination = termination
        self._inst: Any = None  # a pyvisa resource once open (pyvisa's types: too loose to help)

    def open(self) -> None:
        import pyvisa

        library, name = split_resource(self.resource)
        try:
            rm = _resource_manager(library)
            if name is None:
                found = rm.list_resources("?*")
                if not found:
                    raise ConnectionError(f"{library} lists no resources")
                name = found[0]
            self._inst = rm.open_resource(
                name, read_termination=self.termination, write_termination=self.termination,
                timeout=int(self.timeout_s * 1000))
            if name.upper().startswith("TCPIP") and not library.endswith("@sim"):
                _nodelay(self._inst)
        except (pyvisa.errors.VisaIOError, OSError, ValueError) as e:
            raise ConnectionError(f"cannot open: {e}") from e

    def close(self) -> None:
        inst, self._inst = self._inst, None
        if inst is not None:
            try:
                inst.close()
            except Exception:  # closing a dead link must not mask the real error
                pass

    def _io(self, fn: Callable[[], T]) -> T:
        import pyvisa

        if self._inst is None:
            raise ConnectionError("not open")
        try:
            return fn()
        except pyvisa.errors.VisaIOError as e:
            if e.error_code == pyvisa.constants.StatusCode.error_timeout:
                raise TimeoutError(str(e)) from e
            raise ConnectionError(str(e)) from e
        except (OSError, pyvisa.errors.InvalidSession) as e:
            raise ConnectionError(str(e)) from e

    def write(self, text: str) -> None:
        self._io(lambda: self._inst.write(text))

    def read(self) -> str:
        return self._io(lambda: self._inst.read())


# --------------------------------------------------------------------------- link


class Link:
    """A transport with driver errors, deadline-bounded reconnects and retries of idempotent
    queries.

    After any failure mid-exchange the link is marked ``broken`` (a reply may still be in
    flight); the next exchange first reconnects and then calls ``on_reconnect`` (the driver's
    handshake: identity, limit, state). Reconnecting is a loop, never a recursion: an exchange
    made by the handshake itself does not reconnect again, and the loop gives up at
    ``reconnect_deadline_s`` (wall time: link timeouts are wall time) after it began.

    :meth:`send_now` is the safe-off path: the command goes out as the first bytes on the
    link (a fresh connection if the old one is broken), with no handshake before it.
    """

    def __init__(self, transport: Transport, name: str, *, retries: int = 2,
                 reconnect_deadline_s: float = 10.0, clock: Clock | None = None,
                 on_reconnect: Callable[[], None] | None = None):
        self.transport = transport
        self.name = name
        self.retries = retries
        if not reconnect_deadline_s > 0:
            raise ValueError("reconnect_deadline_s must be > 0")
        self.reconnect_deadline_s = float(reconnect_deadline_s)
        self.clock = clock or WallClock()
        self.on_reconnect = on_reconnect
        self.broken = False
        self.is_open = False
        self.needs_handshake = False  # opened by send_now: state not re-read yet
        self.reconnects = 0  # total, for logs and tests
        self.opens = 0  # transport opens after the first, for logs and tests
        self._in_handshake = False

    def open(self) -> None:
        try:
            self.transport.open()
        except (ConnectionError, OSError, TimeoutError) as e:
            raise ConnectionLost(self.name, None, f"cannot connect: {e}") from e
        self.is_open = True
        self.broken = False
        self.needs_handshake = False

    def close(self) -> None:
        self.is_open = False
        self.transport.close()

    def _reopen(self, deadline: float, why: str) -> None:
        """Close and open the transport until it opens or ``deadline`` (time.monotonic)."""
        attempt = 0
        while True:
            self.transport.close()
            self.opens += 1
            try:
                self.transport.open()
            except (ConnectionError, OSError, TimeoutError) as e:
                wait = min(0.05 * 2**attempt, 1.0)
                if time.monotonic() + wait >= deadline:
                    self.broken = True
                    raise ConnectionLost(self.name, None, f"{why}: no connection within "
                                         f"reconnect_deadline_s {self.reconnect_deadline_s:g}"
                                         f" ({e})") from e
                time.sleep(wait)
                attempt += 1
                continue
            self.is_open = True
            self.broken = False
            self.needs_handshake = self.on_reconnect is not None
            return

    def reconnect(self) -> None:
        """Reopen the link and run the handshake, retried until ``reconnect_deadline_s``."""
        deadline = time.monotonic() + self.reconnect_deadline_s
        attempt = 0
        while True:
            if self.broken or not self.is_open:
                self._reopen(deadline, "gave up reconnecting")
            try:
                self.handshake()
            except DriverError as e:
                self.broken = True
                wait = min(0.05 * 2**attempt, 1.0)
                if time.monotonic() + wait >= deadline:
                    raise ConnectionLost(
                        self.name, None, f"gave up reconnecting after reconnect_deadline_s "
                        f"{self.reconnect_deadline_s:g}: the handshake failed: {e}") from e
                time.sleep(wait)
                attempt += 1
                continue
            self.reconnects += 1
            return

    def handshake(self) -> None:
        """Run ``on_reconnect`` (the driver's handshake) with reconnects suspended."""
        if self.on_reconnect is None:
            self.needs_handshake = False
            return
        self._in_handshake = True
        try:
            self.on_reconnect()
        finally:
            self._in_handshake = False
        self.needs_handshake = False

    def ensure(self) -> None:
        """Reconnect (and re-run the handshake) first if the link is broken or was reopened
        without one. Inside the handshake the link is used as it is (no recursion)."""
        if not self.is_open:
            raise ConnectionLost(self.name, None, "not connected (call connect() or open_*())")
        if self._in_handshake:
            if self.broken:
                raise ConnectionLost(self.name, None, "link lost during the handshake")
            return
        if self.broken or self.needs_handshake:
            self.reconnect()

    def exchange(self, command: str, reply: bool) -> str | None:
        """Write ``command``; read one reply line if ``reply``. One attempt, errors mapped."""
        self.ensure()
        return self._raw_exchange(command, reply)

    def _raw_exchange(self, command: str, reply: bool) -> str | None:
        try:
            self.transport.write(command)
            return self.transport.read() if reply else None
        except TimeoutError as e:
            self.broken = True
            raise DriverTimeout(self.name, command, f"no reply ({e})") from e
        except (ConnectionError, OSError) as e:
            self.broken = True
            raise ConnectionLost(self.name, command, f"link lost: {e}") from e
        except BaseException:  # Ctrl-C mid-exchange: a reply may be pending, resync next time
            self.broken = True
            raise

    def send_now(self, command: str, reply: bool = False) -> None:
        """Send ``command`` as the first bytes on the link: on the open link if it is sound,
        else on a fresh connection with NO handshake before it (the safe-off path: nothing
        the instrument says can hold the command back). Retried on a fresh connection until
        ``reconnect_deadline_s``. With ``reply`` one line is read and discarded (a garbled or
        missing reply only marks the link broken: the command went out; verify separately).
        """
        if not self.is_open:
            raise ConnectionLost(self.name, command, "not connected")
        deadline = time.monotonic() + self.reconnect_deadline_s
        while True:
            if self.broken:
                self._reopen(deadline, f"could not send {command!r}")
            try:
                self.transport.write(command)
            except (ConnectionError, OSError, TimeoutError) as e:
                self.broken = True
                if time.monotonic() >= deadline:
                    raise ConnectionLost(self.name, command, f"link lost: {e}") from e
                continue
            except BaseException:
                self.broken = True
                raise
            break
        if reply:
            try:
                self.transport.read()
            except (ConnectionError, OSError, TimeoutError):
                self.broken = True

    def ask_now(self, command: str, parse: Callable[[str], T]) -> T:
        """One query on the link as it is (reopened without handshake if broken): verifying
        a safe-off must not depend on the instrument passing its handshake."""
        if not self.is_open:
            raise ConnectionLost(self.name, command, "not connected")
        if self.broken:
            self._reopen(time.monotonic() + self.reconnect_deadline_s,
                         f"could not send {command!r}")
        text = self._raw_exchange(command, True)
        assert text is not None
        try:
            return parse(text)
        except ValueError as e:
            self.broken = True
            raise BadReply(self.name, command, f"unexpected reply: {e}", text) from e

    def query(self, command: str, parse: Callable[[str], T], *, idempotent: bool = True) -> T:
        """Ask and parse; idempotent queries are retried ``retries`` times on a fresh link
        (not inside the handshake, whose caller retries the whole handshake)."""
        attempts = 1 + (self.retries if idempotent and not self._in_handshake else 0)
        for i in range(attempts):
            self.ensure()  # a reconnect that gives up is final: it had its own deadline
            try:
                text = self._raw_exchange(command, True)
                assert text is not None
                try:
                    return parse(text)
                except ValueError as e:
                    self.check_reply_error(command, text)
                    self.broken = True
                    raise BadReply(self.name, command, f"unexpected reply: {e}", text) from e
            except (DriverTimeout, ConnectionLost, BadReply):
                if i == attempts - 1:
                    raise
        raise AssertionError("unreachable")

    def check_reply_error(self, command: str, text: str) -> None:
        """Hook: line protocols that answer errors inline raise InstrumentError here."""


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


class SessionLifecycle:
    """``connect``/``close`` of a driver that talks through a :class:`Link` session (``self.
    session``) and re-runs ``self._handshake`` after every reconnect. Mixed in before the
    instrument interface, which supplies ``lock`` and ``connected``."""

    session: Link
    lock: Any
    connected: bool

    def _handshake(self) -> None:
        raise NotImplementedError

    def connect(self) -> None:
        with self.lock:
            self.session.open()
            try:
                self.session.handshake()
            except BaseException:
                self.session.close()
                raise
            self.connected = True

    def close(self) -> None:
        with self.lock:
            self.connected = False
            self.session.close()

    def _mark_broken(self) -> None:
        self.session.broken = True
