"""Delay-line detector backend ``stream``: raw records over TCP in the framing of
``drivers/dld_stream.py`` (the HIL emulator serves it; a real front end would too)."""

from __future__ import annotations

import select
import socket
from collections import deque
from urllib.parse import urlparse

import numpy as np
from apt_daq.drivers.clock import Clock
from apt_daq.drivers.dld_base import DelayLineDetector
from apt_daq.drivers.errors import (
    BadReply,
    ConnectionLost,
    DriverError,
    DriverTimeout,
    InstrumentError,
)

from apt_daq.hits import RAW_DTYPE
from apt_daq.wire import dld_stream as fr


def parse_tcp_url(url: str) -> tuple[str, int]:
    """``tcp://host:port`` -> (host, port)."""
    u = urlparse(url)
    if u.scheme != "tcp" or not u.hostname or not u.port:
        raise ValueError(f"expected tcp://host:port, got {url!r}")
    return u.hostname, u.port


class StreamDld(DelayLineDetector):
    """Client of the DLD record stream. ``read_chunk`` returns one DATA frame's records (split
    into pieces of at most ``max_chunk_records``); ``last_chunk_pulses`` is the pulses the last
    chunk covers (a split frame's pulses are shared out in proportion to the records).

    A DATA frame of 0 pulses and 0 records is a status frame (the front end reports drops while
    no pulses fire): ``read_chunk`` counts its drops and reads on. ``overflow()`` is True while
    the newest frame received reports dropped records (the front end is overflowing); it also
    takes in, without blocking, frames already waiting on the socket, so it stays current while
    the run is paused and not reading.
    """

    def __init__(self, url: str, *, timeout_s: float = 2.0, max_chunk_records: int = 65536,
                 clock: Clock | None = None):
        super().__init__(url, clock=clock)
        self.host, self.port = parse_tcp_url(url)
        self.timeout_s = timeout_s
        self.max_chunk_records = max_chunk_records
        self._sock: socket.socket | None = None
        self._decoder = fr.FrameDecoder()
        self._ready: deque[tuple[np.ndarray, int]] = deque()
        self._pending_frames: deque[fr.Frame] = deque()
        self.last_frame: fr.Frame | None = None
        self.last_chunk_pulses = 0
        self._latest_dropped = 0

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
            self._take(data, command)

    def _take(self, data: bytes, command: str) -> None:
        try:
            frames = self._decoder.feed(data)
        except fr.FrameError as e:
            raise BadReply(self.name, command, f"corrupt stream: {e}") from e
        for f in frames:
            if f.kind == fr.DATA:
                self._latest_dropped = f.dropped
        self._pending_frames.extend(frames)

    def overflow(self) -> bool:
        """True while the front end reports dropped records in its newest frame."""
        with self.lock:
            if self._sock is None or not self.running:
                return False
            while select.select([self._sock], [], [], 0)[0]:
                try:
                    data = self._sock.recv(1 << 20)
                except OSError as e:
                    raise ConnectionLost(self.name, "overflow", f"link lost: {e}") from e
                if not data:
                    raise ConnectionLost(self.name, "overflow",
                                         "the front end closed the connection")
                self._take(data, "overflow")
            return self._latest_dropped > 0

    def start(self) -> None:
        with self.lock:
            self._send(fr.START)
            self.running = True

    def read_chunk(self, timeout_s: float) -> np.ndarray:
        """Records of the next DATA frame (RAW_DTYPE); DriverTimeout if none within timeout_s;
        an empty chunk once the front end has ended the acquisition."""
        with self.lock:
            if self._ready:
                chunk, self.last_chunk_pulses = self._ready.popleft()
                return chunk
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
                    if f.n_pulses == 0 and not len(f.records):
                        continue  # a status frame: no pulses, nothing to return
                    n = self.max_chunk_records
                    total = len(f.records)
                    given = 0
                    for i in range(n, total, n):
                        share = f.n_pulses * (min(i + n, total) - i) // total
                        self._ready.append((f.records[i:i + n], share))
                        given += share
                    self.last_chunk_pulses = f.n_pulses - given
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
                            self._ready.append((f.records, f.n_pulses))
                    elif f.kind in (fr.END, fr.ERROR):
                        break
            finally:
                self.running = False
