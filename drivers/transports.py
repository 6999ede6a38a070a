"""Transports: what moves text lines to an instrument (``open``, ``close``, ``write``, ``read``).

A transport raises ``TimeoutError`` for a missing reply (no complete line within ``timeout_s``
of the read, however the bytes trickle in), :class:`ReplyTooLong` for a line over
:data:`MAX_REPLY_BYTES` and ``ConnectionError`` for a broken link;
:class:`apt_daq.drivers.link.Link` turns those into driver errors. Before each command a
transport drops what the instrument sent unasked (a late or a doubled reply), so a reply is
never taken for the answer to a later query.
:class:`VisaTransport` is pyvisa (pyvisa-py sockets, pyvisa-sim ``@sim`` YAML files, VISA),
:class:`SocketTransport` a raw SCPI socket without VISA. Re-exported by
:mod:`apt_daq.drivers.scpi`.
"""

from __future__ import annotations

import logging
import re
import select
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

T = TypeVar("T")
log = logging.getLogger("apt_daq.drivers")

#: the longest reply line a transport reads, bytes: the instruments' replies are < 100 bytes;
#: an endless line (a jammed instrument, a wrong port) must not grow memory without bound
MAX_REPLY_BYTES = 65536


class ReplyTooLong(Exception):
    """A reply line over :data:`MAX_REPLY_BYTES` (:class:`~apt_daq.drivers.link.Link` makes it
    a BadReply)."""

    def __init__(self, head: bytes):
        self.head = head.decode("ascii", "replace")
        super().__init__(f"no line end within {MAX_REPLY_BYTES} bytes")


def _no_line(timeout_s: float, got: bytes) -> TimeoutError:
    from apt_daq.drivers.errors import clip_reply

    return TimeoutError(f"no complete line within {timeout_s:g} s (got {len(got)} bytes"
                        + (f": {clip_reply(got.decode('ascii', 'replace'))!r})" if got else ")"))


def unread(sock: socket.socket, head: bytes = b"") -> tuple[bytes, bool]:
    """What ``sock`` holds unread (after ``head``, bytes already buffered), read without
    waiting, up to about :data:`MAX_REPLY_BYTES`; and whether the peer closed it."""
    junk = head
    while len(junk) <= MAX_REPLY_BYTES and select.select([sock], [], [], 0)[0]:
        data = sock.recv(65536)
        if not data:
            return junk, True
        junk += data
    return junk, False


def dropped(what: str, data: bytes) -> None:
    """Log the bytes an instrument sent unasked, dropped before the next command."""
    from apt_daq.drivers.errors import clip_reply

    log.warning("%s: dropped %d bytes the instrument sent unasked (a late or doubled reply): "
                "%r", what, len(data), clip_reply(data.decode("ascii", "replace")))


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
        self._drop_unasked()
        try:
            self._sock.sendall(text.encode("ascii") + self.termination)
        except TimeoutError as e:
            raise TimeoutError(f"send: {e}") from e

    def _drop_unasked(self) -> None:
        """Drop what arrived since the last reply was read (nothing was asked for it)."""
        assert self._sock is not None
        junk, closed = unread(self._sock, self._buf)
        self._buf = b""
        if closed:
            raise ConnectionError("connection closed by the instrument")
        if junk:
            dropped(f"{self.host}:{self.port}", junk)

    def read(self) -> str:
        """One reply line within ``timeout_s`` in all (not per chunk: a reply trickling in
        must not hold the link, and the driver's lock, for ever)."""
        sock = self._sock
        if sock is None:
            raise ConnectionError("not open")
        deadline = time.monotonic() + self.timeout_s
        try:
            while self.termination not in self._buf:
                if len(self._buf) > MAX_REPLY_BYTES:
                    raise ReplyTooLong(self._buf[:256])
                left = deadline - time.monotonic()
                if left <= 0:
                    raise _no_line(self.timeout_s, self._buf)
                sock.settimeout(left)
                data = sock.recv(65536)  # socket.timeout is TimeoutError
                if not data:
                    raise ConnectionError("connection closed by the instrument")
                self._buf += data
        except TimeoutError:
            raise _no_line(self.timeout_s, self._buf) from None
        finally:
            sock.settimeout(self.timeout_s)
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
        self._drop_unasked()
        self._io(lambda: self._inst.write(text))

    def _drop_unasked(self) -> None:
        """Drop what the instrument sent since the last reply was read, where the session
        shows it: pyvisa-py's socket session keeps bytes past a line end in its own buffer
        and the rest waits in its socket (other VISA sessions: nothing to do)."""
        inst = self._inst
        if inst is None:
            return
        sess = getattr(inst.visalib, "sessions", {}).get(inst.session)
        pending = getattr(sess, "_pending_buffer", None)
        sock = getattr(sess, "interface", None)
        if not isinstance(pending, bytearray) or not isinstance(sock, socket.socket):
            return
        try:  # closed: the write or read that follows says so
            junk, _ = unread(sock, bytes(pending))
        except OSError:
            return
        finally:
            pending.clear()
        if junk:
            dropped(self.resource, junk)

    def read(self) -> str:
        """One reply line within ``timeout_s`` in all: chunks read with the time left as the
        VISA timeout (pyvisa's ``read`` restarts its timeout for every chunk, so a reply
        trickling in would hold the link, and the driver's lock, for ever)."""
        inst = self._inst
        if inst is None:
            raise ConnectionError("not open")
        term = self.termination.encode("ascii")
        deadline = time.monotonic() + self.timeout_s
        buf = bytearray()
        try:
            while not buf.endswith(term):
                if len(buf) > MAX_REPLY_BYTES:
                    raise ReplyTooLong(bytes(buf[:256]))
                left = deadline - time.monotonic()
                if left <= 0:
                    raise _no_line(self.timeout_s, bytes(buf))
                inst.timeout = max(1, int(left * 1000))
                try:
                    buf += self._io(lambda: inst.read_bytes(4096, break_on_termchar=True))
                except TimeoutError:
                    raise _no_line(self.timeout_s, bytes(buf)) from None
        finally:
            if self._inst is not None:
                self._inst.timeout = int(self.timeout_s * 1000)
        return buf[: -len(term)].decode("ascii", "replace")
