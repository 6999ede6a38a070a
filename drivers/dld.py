"""Delay-line detector backend ``stream``: raw records over TCP in the framing of
``drivers/dld_stream.py`` (the HIL emulator serves it; a real front end would too)."""

from __future__ import annotations

import select
import socket
from collections import deque
from urllib.parse import urlparse

import numpy as np

from apt_daq.hits import RAW_DTYPE
from drivers import dld_stream as fr
from drivers.base import (
    BadReply,
    Clock,
    ConnectionLost,
    DelayLineDetector,
    DriverError,
    DriverTimeout,
    InstrumentError,
)


def parse_tcp_url(url: str) -> tuple[str, int]:
    """``tcp://host:port`` -> (host, port)."""
    u = urlparse(url)
    if u.scheme != "tcp" or not u.hostname or not u.port:
        raise ValueError(f"expected tcp://host:port, got {url!r}")
    return u.hostname, u.port


class StreamDld(DelayLineDetector):
    """Client of the DLD record stream. ``read_chunk`` returns one DATA frame's records (split
    into pieces of at most ``max_chunk_records``)."""

    def __init__(self, url: str, *, timeout_s: float = 2.0, max_chunk_records: int = 65536,
                 clock: Clock | None = None):
        super().__init__(url, clock=clock)
        self.host, self.port = parse_tcp_url(url)
        self.timeout_s = timeout_s
        self.max_chunk_records = max_chunk_records
        self._sock: socket.socket | None = None
        self._decoder = fr.FrameDecoder()
        self._ready: deque[np.ndarray] = deque()
        self._pending_frames: deque[fr.Frame] = deque()
        self.last_frame: fr.Frame | None = None

    def connect(self) -> None:
        with self.lock:
            try:
                self._sock = socket.create_connection((self.host, self.port),
                                                      timeout=self.timeout_s)
            except OSError as e:
                raise ConnectionLost(self.name, None, f"cannot connect: {e}") from e
            self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.connected = True

    def close(self) -> None:
        with self.lock:
            self.connected = False
            self.running = False
            sock, self._sock = self._sock, None
            if sock is not None:
                sock.close()

    def _send(self, kind: int) -> None:
        if self._sock is None:
            raise self.not_connected(fr.KINDS[kind])
        try:
            self._sock.sendall(fr.encode(kind))
        except OSError as e:
            raise ConnectionLost(self.name, fr.KINDS[kind], f"link lost: {e}") from e

    def _next_frame(self, timeout_s: float, command: str) -> fr.Frame:
        if self._sock is None:
            raise self.not_connected(command)
        deadline = self.clock.monotonic() + timeout_s
        while True:
            frames = self._pending_frames
            if frames:
                return frames.popleft()
            left = deadline - self.clock.monotonic()
            if left <= 0:
                raise DriverTimeout(self.name, command, f"no frame within {timeout_s:g} s")
            readable, _, _ = select.select([self._sock], [], [], left)
            if not readable:
                continue
            try:
                data = self._sock.recv(1 << 20)
            except OSError as e:
                raise ConnectionLost(self.name, command, f"link lost: {e}") from e
            if not data:
                raise ConnectionLost(self.name, command, "the front end closed the connection")
            try:
                self._pending_frames.extend(self._decoder.feed(data))
            except fr.FrameError as e:
                raise BadReply(self.name, command, f"corrupt stream: {e}") from e

    def start(self) -> None:
        with self.lock:
            self._send(fr.START)
            self.running = True

    def read_chunk(self, timeout_s: float) -> np.ndarray:
        """Records of the next DATA frame (RAW_DTYPE); DriverTimeout if none within timeout_s;
        an empty chunk once the front end has ended the acquisition."""
        with self.lock:
            if self._ready:
                return self._ready.popleft()
            if not self.running:
                raise DriverError(self.name, "read_chunk", "not started (call start())")
            while True:
                f = self._next_frame(timeout_s, "read_chunk")
                self.last_frame = f
                if f.kind == fr.ERROR:
                    raise InstrumentError(self.name, "read_chunk", f"front end error: {f.text}")
                if f.kind == fr.END:
                    self.running = False
                    return np.zeros(0, RAW_DTYPE)
                if f.kind == fr.DATA:
                    self._count(f.records, f.n_pulses, f.dropped)
                    n = self.max_chunk_records
                    for i in range(n, len(f.records), n):
                        self._ready.append(f.records[i:i + n])
                    return f.records[:n]

    def stop(self) -> None:
        """Send STOP and drain frames until END (DATA still in flight is counted, kept)."""
        with self.lock:
            if not self.running or self._sock is None:
                self.running = False
                return
            self._send(fr.STOP)
            try:
                while True:
                    f = self._next_frame(self.timeout_s, "STOP")
                    if f.kind == fr.DATA:
                        self._count(f.records, f.n_pulses, f.dropped)
                        if len(f.records):
                            self._ready.append(f.records)
                    elif f.kind in (fr.END, fr.ERROR):
                        break
            finally:
                self.running = False
