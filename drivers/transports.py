"""Transports: what moves text lines to an instrument (``open``, ``close``, ``write``, ``read``).

A transport raises ``TimeoutError`` for a missing reply and ``ConnectionError`` for a broken
link; :class:`apt_daq.drivers.link.Link` turns those into driver errors.
:class:`VisaTransport` is pyvisa (pyvisa-py sockets, pyvisa-sim ``@sim`` YAML files, VISA),
:class:`SocketTransport` a raw SCPI socket without VISA. Re-exported by
:mod:`apt_daq.drivers.scpi`.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


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
