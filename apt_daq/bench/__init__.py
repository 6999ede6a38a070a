"""``apt-daq bench``: throughput figures, each beside a baseline measured in the same run.

Each area adds a module ``apt_daq/bench/<area>.py`` with ``run(quick: bool) -> list[Result]``.
"""

from __future__ import annotations

import importlib
import pkgutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import socket


@dataclass
class Result:
    """One figure: ``value`` in ``unit`` beside ``baseline`` (same unit), ``ratio`` value/baseline."""

    name: str
    value: float
    unit: str
    baseline: float
    ratio: float
    note: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def result(name: str, value: float, unit: str, baseline: float, note: str = "") -> Result:
    return Result(name, float(value), unit, float(baseline),
                  float(value / baseline) if baseline else float("inf"), note)


def best_time_s(fn: Callable[[], object], repeat: int = 5,
                setup: Callable[[], object] | None = None) -> float:
    """The fastest of ``repeat`` wall-clock timings of ``fn()`` (noise only ever adds time);
    ``setup()``, if given, runs before each, untimed."""
    best = float("inf")
    for _ in range(repeat):
        if setup is not None:
            setup()
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def areas() -> list[str]:
    import apt_daq.bench as pkg

    return sorted(m.name for m in pkgutil.iter_modules(pkg.__path__))


def run_all(only: list[str] | None = None, quick: bool = False) -> list[Result]:
    out: list[Result] = []
    for area in areas():
        if only and area not in only:
            continue
        module = importlib.import_module(f"apt_daq.bench.{area}")
        out.extend(module.run(quick=quick))
    return out


def median_us(fn: Callable[[], object], n: int) -> float:
    """Median wall time of ``fn()`` in microseconds over ``n`` calls, after a warm-up."""
    import statistics

    for _ in range(min(50, n)):  # warm up
        fn()
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts) * 1e6


def echo_server() -> tuple[socket.socket, int]:
    """A loopback TCP echo server in a daemon thread: the round-trip baseline."""
    import socket
    import threading

    srv = socket.create_server(("127.0.0.1", 0))

    def run() -> None:
        conn, _ = srv.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)

    threading.Thread(target=run, daemon=True).start()
    return srv, srv.getsockname()[1]
