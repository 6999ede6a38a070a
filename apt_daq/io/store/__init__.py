"""The HDF5 run store: one file per run, chunked and appendable, flushed after every chunk.

Layout (datasets of the compound dtypes in :mod:`apt_daq.hits`, chunked and resizable)::

    /raw         RAW_DTYPE      raw delay-line records as the detector gave them
    /hits        HIT_DTYPE      decoded hits, evaporation order
    /derived     DERIVED_DTYPE  mass, range index, reconstructed position (row-aligned with /hits)
    /truth       TRUTH_DTYPE    simulation only, row-aligned with /hits
    /truth_lost  TRUTH_DTYPE    simulation only: evaporated ions that left no hit
    /log         LOG_DTYPE      instrument state at a fixed cadence
    /meta        group; JSON string attributes: config, instrument, ion_table, versions, seed,
                 started, ended, state, counters, ...

Every ``append`` resizes, writes and flushes. The file uses HDF5's default format without SWMR
(the latest format leaves a consistency flag that stops a killed file from opening), so a
process killed at any moment (SIGKILL) leaves a file that opens and holds every chunk but at
most the one being written.

What a writer promises (docs/formats.md, "The HDF5 run store"):

* **One writer per file.** Before anything is created or truncated, the writer takes an
  exclusive ``flock`` on a sidecar ``.NAME.lock`` beside the target (it holds the writer's pid;
  the kernel drops the lock when the process dies, however it dies). A second writer on the
  same path fails at once with a :class:`DataFileError` naming the pid. ``writer_of`` asks
  whether a live writer holds a file (``apt-daq info`` reports a dead ``running`` file as
  ``interrupted``).
* **An old file is replaced only by a run worth keeping.** With ``overwrite`` and an
  existing (non-empty) target, the run is written to ``.NAME.XXXXXXXX.unfinished`` beside it
  and ``close`` renames it onto the target when the run ended well (``done``, ``imported``,
  or a ``failed`` end that is a result: a fracture, ``finish(..., result=True)``). A run that
  ended badly (``failed...`` by an error or a full disk, ``aborted...``, ``running``) leaves
  the old file byte-identical: if it recorded data (any row in /hits or /raw: an atom-probe
  run consumes its specimen, so what it measured is never thrown away) it is renamed beside
  it as ``NAME.<state>-<time>.h5`` (``kept_as``), else its temporary file is deleted. Without an old file the run is
  written in place (and kept, with its end state and reason, whatever happens).
* **Disk full is one error.** Before each append the writer checks the free space and the
  file size limit (``ulimit -f``) and keeps 1 MiB in reserve: when a chunk would not fit it
  raises :class:`DiskFull` (``runs/a.h5: disk full after N hits ...``) without writing, and the
  reserve takes the end of the run (its last /log rows, ``state = "failed: disk full"``). If
  the disk fills anyway (another process), the failed write leaves HDF5's in-memory metadata
  out of step with the file: the writer then closes the file without writing anything more
  (a flush would record chunks that never reached the disk), so it stays as of the last
  flush, writes only the state, in place, and puts the file in the target's place at once.
  After either, every method is a quiet no-op or best effort: ``set_meta``, ``log``,
  ``finish`` and ``close`` never raise a second error.
"""

from __future__ import annotations

from apt_daq.io.store.layout import _CHUNK_ROWS, _LOG_CHUNK_ROWS, DATASETS, LOG_DTYPE
from apt_daq.io.store.lock import TEMP_SUFFIX, lock_holder, lock_path, writer_of
from apt_daq.io.store.meta import JSON_KEYS, now_iso, read_meta, versions, write_meta
from apt_daq.io.store.reader import RunReader
from apt_daq.io.store.writer import RunWriter

__all__ = [
    "DATASETS", "JSON_KEYS", "LOG_DTYPE", "TEMP_SUFFIX", "_CHUNK_ROWS", "_LOG_CHUNK_ROWS",
    "RunReader", "RunWriter", "lock_holder", "lock_path", "now_iso", "read_meta", "versions",
    "write_meta", "writer_of",
]
