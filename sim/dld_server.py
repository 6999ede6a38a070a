"""The DLD front end's TCP endpoint of the HIL emulator (:class:`DldStreamServer`).

Raw records in the binary framing of ``apt_daq.wire.dld_stream`` on TCP (``tcp://host:port``):
START/STOP in, DATA/END frames out; client frames are capped at :data:`MAX_COMMAND_FRAME`
bytes.
"""

from __future__ import annotations

import queue
import socket
import threading
import time
from collections.abc import Callable

import numpy as np
from apt_daq.sim.scpi_server import check_host

from apt_daq.wire import dld_stream as fr

MAX_COMMAND_FRAME = 65536  # bytes of a DLD client's frame (START/STOP are header only)


class DldStreamServer:
    """The DLD front end's TCP endpoint: one client; START/STOP in, DATA/END frames out.

    Outgoing frames go through a bounded queue and a sender thread, so a slow client never
    stalls the pulse clock: when the queue is full the block's records are dropped and
    counted in the next frame's ``dropped`` (what a real front end does on overflow).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, max_queued: int = 4,
                 on_event: Callable[[str], None] | None = None, *,
                 allow_remote: bool = False):
        check_host(host, allow_remote)
        self._sock = socket.create_server((host, port))
        self._sock.settimeout(0.1)  # here, not in the thread: stop() may close it first
        self.host, self.port = self._sock.getsockname()[:2]
        self.running = False
        self.on_event = on_event or (lambda text: None)
        self._client: socket.socket | None = None
        self._q: queue.Queue[bytes | None] = queue.Queue(max_queued)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.stall_until = 0.0
        self.down_until = 0.0
        self.overflow_dropped = 0  # records dropped because the queue was full
        self.frames_sent = 0
        self._threads = [threading.Thread(target=self._accept, daemon=True, name="dld-accept"),
                         threading.Thread(target=self._send_loop, daemon=True, name="dld-send")]

    @property
    def url(self) -> str:
        return f"tcp://{self.host}:{self.port}"

    def start(self) -> DldStreamServer:
        for t in self._threads:
            t.start()
        return self

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except (TimeoutError, OSError):
                continue
            if time.monotonic() < self.down_until:
                conn.close()
                continue
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.drop("a new client connected")
            with self._lock:
                self._client = conn
            self.on_event("dld client connected")
            threading.Thread(target=self._read_loop, args=(conn,), daemon=True,
                             name="dld-read").start()

    def _read_loop(self, conn: socket.socket) -> None:
        dec = fr.FrameDecoder()
        try:
            while not self._stop.is_set():
                data = conn.recv(4096)
                if not data:
                    break
                frames = dec.feed(data)
                if dec.pending > MAX_COMMAND_FRAME:
                    raise fr.FrameError(f"client frame over {MAX_COMMAND_FRAME} bytes")
                for f in frames:
                    if f.kind == fr.START:
                        self.running = True
                        self.on_event("dld START")
                    elif f.kind == fr.STOP:
                        self.running = False
                        self.on_event("dld STOP")
                        self._put(fr.encode(fr.END), block=True)
        except (OSError, fr.FrameError) as e:
            self.on_event(f"dld client link ended: {e}")
        finally:
            with self._lock:
                if self._client is conn:
                    self._client = None
                    self.running = False
            conn.close()

    def _put(self, data: bytes, block: bool = False) -> bool:
        try:
            self._q.put(data, block=block, timeout=1.0 if block else None)
            return True
        except queue.Full:
            return False

    def send_block(self, records: np.ndarray, first_pulse: int, n_pulses: int,
                   dropped: int = 0) -> int:
        """Queue one DATA frame; if the queue is full the records are dropped and counted in
        the next frame. Returns the drops the queued frame reports (-1: not queued)."""
        if self._client is None:
            return 0
        dropped += self.overflow_dropped
        frame = fr.encode_data(records, first_pulse=first_pulse, n_pulses=n_pulses,
                               dropped=dropped)
        if self._put(frame):
            self.overflow_dropped = 0
            return dropped
        self.overflow_dropped = dropped + len(records)
        return -1

    def send_raw(self, data: bytes) -> None:
        """Bytes straight onto the wire (fault injection)."""
        self._put(data)

    def _send_loop(self) -> None:
        while not self._stop.is_set():
            try:
                data = self._q.get(timeout=0.1)
            except queue.Empty:
                continue
            if data is None:
                break
            while time.monotonic() < self.stall_until and not self._stop.is_set():
                time.sleep(0.01)
            with self._lock:
                conn = self._client
            if conn is None:
                continue
            try:
                conn.sendall(data)
                self.frames_sent += 1
            except OSError:
                self.drop("send failed")

    def drop(self, why: str = "dropped") -> None:
        with self._lock:
            conn, self._client = self._client, None
            self.running = False
        if conn is not None:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()
            self.on_event(f"dld link closed: {why}")
        while True:  # frames for the old client are void
            try:
                self._q.get_nowait()
            except queue.Empty:
                break

    @property
    def connected(self) -> bool:
        return self._client is not None

    def stop(self) -> None:
        self._stop.set()
        self.drop("emulator stopping")
        try:
            self._q.put_nowait(None)
        except queue.Full:
            pass
        self._sock.close()
        for t in self._threads:
            if t.is_alive():
                t.join(timeout=2)
