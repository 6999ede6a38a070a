"""Rows on their way to the store, written in whole HDF5 chunks.

The store writes each append straight to its chunks (no chunk cache); an append that covers
part of a chunk costs HDF5 about as much as a whole one, so small readout blocks made the
store the engine's largest cost. The engine therefore hands the store whole chunks
(``CHUNK_ROWS`` rows of a dataset, as the store lays them out): a block's rows fill the
dataset's open chunk (each row copied once), whole chunks inside a block go out as they are,
the rest waits in memory (at most one chunk per dataset). Everything buffered goes out when
the oldest row is ``MAX_AGE_S`` of wall time old (a slow real run is on disk within seconds),
at a pause, and at every end of the run, so the file of a finished, paused, failed or aborted
run holds every block, as before.
"""

from __future__ import annotations

import time

import numpy as np

CHUNK_ROWS = 65536  # rows per HDF5 chunk of the hit datasets (apt_daq.io.store)
MAX_AGE_S = 2.0  # wall time a row may wait in memory


class RowBuffer:
    """Per dataset, the open chunk's rows; :meth:`put` gives what should be appended now."""

    def __init__(self, chunk_rows: int = CHUNK_ROWS, max_age_s: float = MAX_AGE_S):
        self.chunk_rows = int(chunk_rows)
        self.max_age_s = max_age_s
        self._open: dict[str, tuple[np.ndarray, int]] = {}  # name -> (chunk buffer, rows in it)
        self._since: float | None = None  # wall time of the oldest buffered row

    def __len__(self) -> int:
        return sum(n for _, n in self._open.values())

    def put(self, everything: bool = False,
            **rows: np.ndarray | None) -> list[tuple[str, np.ndarray]]:
        """Add a block's rows; the (dataset, rows) to append now, in order: every whole chunk,
        or everything (asked, or the oldest row too old). Append them before the next call."""
        out: list[tuple[str, np.ndarray]] = []
        c = self.chunk_rows
        for name, a in rows.items():
            if a is None or not len(a):
                continue
            a = np.ascontiguousarray(a)
            buf, n = self._open.get(name, (None, 0))
            i = 0
            if n:
                assert buf is not None
                i = min(c - n, len(a))
                _copy(buf, n, a[:i])
                n += i
                if n == c:
                    out.append((name, buf))
                    buf, n = None, 0
            whole = (len(a) - i) // c * c
            if whole:
                out.append((name, a[i:i + whole]))
                i += whole
            if i < len(a):
                if buf is None:
                    buf = np.empty(c, a.dtype)
                _copy(buf, n, a[i:])
                n += len(a) - i
            self._open[name] = (buf, n) if n else (None, 0)  # type: ignore[assignment]
        if len(self) and self._since is None:
            self._since = time.monotonic()
        if everything or (self._since is not None
                          and time.monotonic() - self._since >= self.max_age_s):
            out += [(name, buf[:n]) for name, (buf, n) in self._open.items() if n]
            self._open = {}
        if not len(self):
            self._since = None
        return out


def _copy(buf: np.ndarray, at: int, rows: np.ndarray) -> None:
    """``buf[at:at + len(rows)] = rows``, copied as bytes (numpy copies a packed structured
    dtype field by field, several times slower)."""
    size = buf.dtype.itemsize
    buf.view(np.uint8)[at * size:(at + len(rows)) * size] = rows.view(np.uint8)
