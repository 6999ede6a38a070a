"""A line device on a pseudo-terminal (the serial port a USB adapter makes) for the serial
driver's tests: each line written to the port is answered by a callback, which may wait first
(a late device) or answer from a fake instrument's protocol table."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import NamedTuple


class PtyDevice(NamedTuple):
    path: str  # the port to open (the pty's slave side)
    master: int  # the device's side; closing both ends is an unplugged adapter
    slave: int
    stop: threading.Event  # set: the device answers no more


def pty_line_device(answer: Callable[[str], bytes]) -> PtyDevice:
    """Serve ``answer(line)`` (the bytes to write back, line end included) for every line
    the driver writes, on a thread, until ``stop`` is set or the pty is closed."""
    master, slave = os.openpty()
    stop = threading.Event()

    def serve() -> None:
        buf = b""
        while not stop.is_set():
            try:
                data = os.read(master, 4096)
            except OSError:
                return
            buf += data
            while b"\n" in buf:
                raw, buf = buf.split(b"\n", 1)
                try:
                    os.write(master, answer(raw.decode().strip()))
                except OSError:
                    return

    threading.Thread(target=serve, daemon=True).start()
    return PtyDevice(os.ttyname(slave), master, slave, stop)
