"""Detection and assembly of the virtual LEAP's sub-blocks off the generating thread: one
worker thread shared by every :class:`apt_daq.sim.instrument.VirtualLeap` of the process, and
the block buffer the sub-blocks are assembled into (moved out of ``instrument`` unchanged)."""

from __future__ import annotations

import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from apt_daq.hits import RAW_DTYPE, TRUTH_DTYPE, empty

_ASSEMBLER: ThreadPoolExecutor | None = None
_ASSEMBLER_LOCK = threading.Lock()


def _assembler() -> ThreadPoolExecutor:
    """One worker thread that detects and assembles sub-blocks while the next one's events
    are generated (the kernels release the GIL); FIFO, so each block's sub-blocks land in
    order. Shared by every VirtualLeap of the process."""
    global _ASSEMBLER
    with _ASSEMBLER_LOCK:
        if _ASSEMBLER is None:
            _ASSEMBLER = ThreadPoolExecutor(1, thread_name_prefix="leap-assemble")
        return _ASSEMBLER


def _forget_assembler() -> None:
    """A forked child has no worker thread: it makes its own."""
    global _ASSEMBLER
    _ASSEMBLER = None


os.register_at_fork(after_in_child=_forget_assembler)


def _wait(pending: list[Future]) -> None:
    """Wait for the sub-blocks in flight (re-raising their errors), in order."""
    try:
        for f in pending:
            f.result()
    finally:
        pending.clear()


class _BlockBuffer:
    """The RAW, TRUTH (aligned) and lost-TRUTH rows of one :meth:`VirtualLeap.advance`.

    Sub-blocks are assembled straight into views of it (no concatenation). It is sized on the
    first sub-block's expected rate for the whole block; untouched pages of ``np.empty`` cost
    nothing, and it grows by doubling if a burst outruns the estimate.
    """

    def __init__(self, n_pulses: int, max_records: int | None):
        self.n_pulses = n_pulses
        self.max_records = max_records or 1 << 22  # first-allocation bound; it grows beyond
        self.rows = self.lost_rows = 0
        self.raw = empty(RAW_DTYPE)
        self.truth = empty(TRUTH_DTYPE)
        self.lost = empty(TRUTH_DTYPE)

    def take(self, rows: int, lost_rows: int, per_pulse: tuple[float, float]
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Views for the next sub-block's ``rows`` records and ``lost_rows`` lost ions;
        ``per_pulse``: the expected records and lost ions per pulse, to size the first
        allocation for the whole block."""
        if self.rows + rows > len(self.raw):
            expect = min(1.25 * per_pulse[0] * self.n_pulses, self.max_records + rows)
            cap = max(2 * len(self.raw), self.rows + rows, int(expect) + 1024)
            self.raw = _grown(self.raw, self.rows, cap)
            self.truth = _grown(self.truth, self.rows, cap)
        if self.lost_rows + lost_rows > len(self.lost):
            expect = min(1.25 * per_pulse[1] * self.n_pulses, self.max_records + lost_rows)
            cap = max(2 * len(self.lost), self.lost_rows + lost_rows, int(expect) + 1024)
            self.lost = _grown(self.lost, self.lost_rows, cap)
        a, b = self.rows, self.lost_rows
        self.rows, self.lost_rows = a + rows, b + lost_rows
        return self.raw[a:a + rows], self.truth[a:a + rows], self.lost[b:b + lost_rows]

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.raw[:self.rows], self.truth[:self.rows], self.lost[:self.lost_rows]


def _grown(a: np.ndarray, used: int, cap: int) -> np.ndarray:
    """A new array of ``cap`` rows holding the first ``used`` rows of ``a`` (a byte copy)."""
    out = np.empty(cap, a.dtype)
    if used:
        out[:used].view(np.uint8)[:] = a[:used].view(np.uint8)
    return out
