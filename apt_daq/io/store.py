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
  and ``close`` renames it onto the target when the run recorded data (any row in /hits or
  /raw: an atom-probe run consumes its specimen, so what it measured is never thrown away) or
  ended well (``done``, ``imported``...). A run that ends without either (``running``,
  ``failed...``, ``aborted...``: a failed connect, an abort during the ramp) deletes its
  temporary file and leaves the old file byte-identical. Without an old file the run is
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

import contextlib
import errno
import glob
import json
import logging
import math
import os
import re
import socket
import stat
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import h5py
import numpy as np

try:
    import fcntl
except ImportError:  # not POSIX: no cross-process lock
    fcntl = None  # type: ignore[assignment]
try:
    import resource
except ImportError:
    resource = None  # type: ignore[assignment]

from apt_daq.config import InstrumentConfig, RunFile
from apt_daq.errors import DataFileError, DiskFull
from apt_daq.hits import DERIVED_DTYPE, HIT_DTYPE, RAW_DTYPE, TRUTH_DTYPE, units_of

LOG_DTYPE = np.dtype(
    [
        ("time_s", "<f8"),  # instrument time since run start, s
        ("v_dc", "<f4"),  # measured specimen voltage, V
        ("v_setpoint", "<f4"),  # HV setpoint, V
        ("current_a", "<f4"),  # HV supply current, A
        ("laser_pj", "<f4"),  # laser pulse energy, pJ
        ("rate", "<f4"),  # detection rate over the last interval, ions per pulse
        ("pulses", "<u8"),  # pulses since run start
        ("ions", "<u8"),  # detected ions since run start
        ("step", "<i2"),  # schedule step index
        ("hv_on", "u1"),  # HV output on
        ("laser_on", "u1"),  # laser emission on
        ("state", "u1"),  # run-engine state code (apt_daq.run.State)
    ]
)

DATASETS: dict[str, np.dtype] = {
    "raw": RAW_DTYPE,
    "hits": HIT_DTYPE,
    "derived": DERIVED_DTYPE,
    "truth": TRUTH_DTYPE,
    "truth_lost": TRUTH_DTYPE,
    "log": LOG_DTYPE,
}
_ALIASES = {"lost": "truth_lost"}
_CHUNK_ROWS = 65536
_LOG_CHUNK_ROWS = 1024  # one /log row per readout block: small chunks, no rewrite of 2.6 MB


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def versions() -> dict[str, str]:
    """Versions of apt-daq and the libraries whose behaviour shapes the data."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("apt-daq", "numpy", "numba", "simpy", "h5py", "pydantic"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "unknown"
    return out


def _name(name: str) -> str:
    name = _ALIASES.get(name, name)
    if name not in DATASETS:
        raise KeyError(f"unknown dataset {name!r}; one of {sorted(DATASETS)}")
    return name


_STATE_BYTES = 96  # /meta state is a fixed-size string: it can be rewritten in place, no allocation
_RESERVE = 1 << 20  # bytes kept free for the end of a run (last /log rows, end state, ended)
_END_MARGIN = 64 << 10  # what a /log row after a disk-full must leave free
_META_BYTES = 64 << 10  # an append's metadata (chunk index, object headers), generously
_LOCK_WAIT_S = 1.0  # a probe (apt-daq info) holds a lock for microseconds: retry that long
TEMP_SUFFIX = ".unfinished"
_DISK_FULL = {errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)}
log = logging.getLogger("apt_daq.store")


def lock_path(target: str | Path) -> Path:
    """The sidecar a writer of ``target`` holds an exclusive flock on: ``.NAME.lock``."""
    target = Path(target)
    return target.parent / f".{target.name}.lock"


def _target_of(path: Path) -> Path:
    """The run file a writer's temporary file ``.NAME.XXXXXXXX.unfinished`` stands for."""
    m = re.fullmatch(r"\.(.+)\.[^.]+" + re.escape(TEMP_SUFFIX), path.name)
    return path.parent / m.group(1) if m else path


def _host() -> str:
    return socket.gethostname()


def _read_holder(fd: int) -> dict[str, Any]:
    try:
        data = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _holder_text(holder: dict[str, Any]) -> str:
    if not holder.get("pid"):
        return ""
    host = f" on {holder['host']}" if holder.get("host") and holder["host"] != _host() else ""
    return f" (pid {holder['pid']}{host})"


class _WriterLock:
    """An exclusive flock on ``.NAME.lock``, held for a writer's life; the file says who holds it.

    The holder unlinks the file before it lets go; an acquirer checks that the file it locked
    is still the one at the path (else it locked a file just unlinked, and tries again).
    """

    def __init__(self, target: Path):
        self.target = target
        self.path = lock_path(target)
        self.fd: int | None = None

    def acquire(self) -> None:
        if fcntl is None:
            return
        deadline = time.monotonic() + _LOCK_WAIT_S
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:
                raise DataFileError(f"{self.target}: cannot create its lock file {self.path.name}"
                                    f" ({e.strerror or e})") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                if time.monotonic() >= deadline:
                    raise DataFileError(
                        f"{self.target}: another run is writing it{_holder_text(holder)}; wait "
                        "for it to end or choose another -o") from None
                time.sleep(0.05)
                continue
            try:
                st = os.stat(self.path)
                same = (st.st_ino, st.st_dev) == (os.fstat(fd).st_ino, os.fstat(fd).st_dev)
            except FileNotFoundError:
                same = False
            if same:
                self.fd = fd
                return
            os.close(fd)

    def note(self, data_file: Path) -> None:
        """Record who holds the lock and which file it writes (the target or a temporary)."""
        if self.fd is None:
            return
        text = json.dumps({"pid": os.getpid(), "host": _host(), "file": data_file.name,
                           "started": now_iso()}).encode()
        with contextlib.suppress(OSError):
            os.ftruncate(self.fd, 0)
            os.pwrite(self.fd, text, 0)

    def release(self) -> None:
        if self.fd is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        os.close(self.fd)
        self.fd = None


def writer_of(path: str | Path) -> dict[str, Any] | None:
    """Who writes the run file ``path`` now: the lock holder's record (pid, host; possibly
    empty) if a live process holds its writer lock, else None (nobody: a ``running`` file is
    then one whose writer died)."""
    if fcntl is None:
        return None
    path = Path(path)
    for lock in dict.fromkeys((lock_path(path), lock_path(_target_of(path)))):
        try:
            fd = os.open(lock, os.O_RDONLY)
        except OSError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                # the target's lock may be held by a run replacing it (writing a temporary
                # file): that run is not this file's writer
                if holder.get("file") in (None, path.name):
                    return holder
                continue
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
    return None


def _errno_of(e: BaseException) -> int | None:
    if isinstance(getattr(e, "errno", None), int):
        return e.errno
    m = re.search(r"errno = (\d+)", str(e))
    return int(m.group(1)) if m else None


def _is_disk_full(e: BaseException) -> bool:
    return _errno_of(e) in _DISK_FULL


def _close_without_writing(f: h5py.File, path: Path) -> None:
    """Close an HDF5 file whose in-memory metadata no longer matches the disk (a write failed)
    without writing anything: its descriptor is swapped for a read-only one first, so the flush
    at close fails instead of recording chunks that never reached the disk. Never raises."""
    with contextlib.suppress(Exception):
        fd = f.id.get_vfd_handle()
        ro = os.open(path, os.O_RDONLY)
        try:
            os.dup2(ro, fd)
        finally:
            os.close(ro)
    for close in (f.close, lambda: f.id.close()):  # h5py's close may fail, the id's then works
        try:
            if f.id.valid:
                close()
        except Exception:  # nothing more can be done with this file
            continue


def _write_state_in_place(path: Path, state: str) -> bool:
    """Rewrite /meta state of a closed file in place (its fixed-size string: no allocation, so
    it works on a full disk). Best effort; True if written."""
    try:
        g = h5py.File(path, "r+", locking=False)
    except Exception:
        return False
    try:
        a = h5py.h5a.open(g["meta"].id, b"state")
        data = state.encode()
        if a.dtype.kind != "S" or len(data) > a.dtype.itemsize:
            raise ValueError("no fixed-size state attribute")
        a.write(np.array(data, dtype=a.dtype))
        a.close()
        g.flush()
        g.close()
        return True
    except Exception:
        _close_without_writing(g, path)
        return False


def _unfinished(state: object) -> bool:
    """A state that says the run did not end well (``running`` means it never ended)."""
    state = str(state)
    return state == "running" or state.startswith(("failed", "aborted"))


def _fsync(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class RunWriter:
    """Append chunks to a new run file. Use as a context manager; ``finish(state)`` at the end.

    See the module docstring for the lock, the temporary file of ``overwrite`` and disk full.
    """

    def __init__(self, path: str | Path, meta: dict[str, Any] | None = None, overwrite: bool = False):
        self.path = Path(path)
        self._file = self.path  # the file written: the target, or a temporary one beside it
        self._tmp: Path | None = None
        self._created = False  # we created self._file (delete it if __init__ fails)
        self._emptied = False  # we took over an existing empty file (truncate it back)
        self._f: h5py.File | None = None
        self._meta: h5py.Group | None = None
        # dataset handles, their file types and row counts, kept so that an append costs
        # one resize + one low-level write per dataset (no h5py lookups or type inference)
        self._ds: dict[str, tuple[h5py.Dataset, h5py.h5t.TypeID]] = {}
        self._rows: dict[str, int] = dict.fromkeys(DATASETS, 0)
        self._flushed: dict[str, int] = dict.fromkeys(DATASETS, 0)  # rows known on disk
        self._state = "running"
        self._broken: str | None = None  # "disk full" / "write error": no more data stored
        self._frozen = False  # closed without writing after a failed write
        self._closed = False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = _WriterLock(self.path)
        self._lock.acquire()  # before anything is created or truncated
        try:
            self._open(meta, overwrite)
        except BaseException as e:
            self._abandon()
            if isinstance(e, OSError | RuntimeError):
                what = "disk full" if _is_disk_full(e) else "cannot create the run file"
                raise DataFileError(f"{self.path}: {what} ({e})") from None
            raise

    def _open(self, meta: dict[str, Any] | None, overwrite: bool) -> None:
        exists = os.path.lexists(self.path)
        if exists and not overwrite:
            raise DataFileError(f"{self.path}: exists (use --overwrite or another -o)")
        if self.path.is_dir():
            raise DataFileError(f"{self.path}: is a folder")
        for old in sorted(self.path.parent.glob(f".{glob.escape(self.path.name)}.*{TEMP_SUFFIX}")):
            log.warning("%s: left by an interrupted run of %s; it holds that run's data "
                        "(apt-daq info %s): rename it to keep it, else delete it", old,
                        self.path.name, old)
        room = self._room()
        if room < _RESERVE + _META_BYTES:
            raise DiskFull(f"{self.path}: disk full: {max(room, 0):.0f} bytes left, a run "
                           f"needs at least {_RESERVE + _META_BYTES}")
        if exists and os.path.getsize(self.path) > 0:
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=TEMP_SUFFIX,
                                       dir=self.path.parent)
            os.close(fd)
            self._tmp = self._file = Path(tmp)
            self._created = True
            with contextlib.suppress(OSError):  # the replacement keeps the old file's mode
                os.chmod(tmp, stat.S_IMODE(os.stat(self.path).st_mode))
        self._lock.note(self._file)
        # no raw-data chunk cache: a partial chunk written through the cache is rewritten in
        # full (2.6 MB) at every flush; without it each append writes just its rows, and the
        # flush writes only metadata
        self._f = h5py.File(self._file, "w" if exists or self._tmp else "w-", rdcc_nbytes=0)
        self._created = self._created or not exists
        self._emptied = exists and self._tmp is None
        self._meta = self._f.create_group("meta")
        for name, dtype in DATASETS.items():
            rows = _LOG_CHUNK_ROWS if name == "log" else _CHUNK_ROWS
            d = self._f.create_dataset(name, shape=(0,), maxshape=(None,), dtype=dtype,
                                       chunks=(rows,))
            d.attrs["fields"] = list(dtype.names)
            d.attrs["units"] = units_of(dtype)  # aligned with "fields"; "" has no unit
            self._ds[name] = (d, d.id.get_type())
        self.set_meta("started", now_iso())
        self.set_meta("state", "running")
        self.set_meta("versions", versions())
        for k, v in (meta or {}).items():
            self.set_meta(k, v)
        self._f.flush()

    def _abandon(self) -> None:
        """Undo a failed ``__init__``: nothing of it stays on disk."""
        if self._f is not None:
            _close_without_writing(self._f, self._file)
            self._f = None
        with contextlib.suppress(OSError):
            if self._created:
                self._file.unlink()
            elif self._emptied:
                os.truncate(self._file, 0)
        self._closed = True
        self._lock.release()

    # -- disk space
    def _room(self) -> float:
        """Bytes this file may still grow by: free space, and the file size limit."""
        room = math.inf
        with contextlib.suppress(OSError):
            st = os.statvfs(self._file.parent)
            room = st.f_bavail * st.f_frsize
        if resource is not None:
            soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
            if soft != resource.RLIM_INFINITY:
                size = 0
                with contextlib.suppress(OSError):
                    size = os.path.getsize(self._file)
                room = min(room, soft - size)
        return room

    def _growth(self, name: str, n: int) -> int:
        """Bytes appending ``n`` rows to ``name`` may add: every chunk it starts, in full."""
        c = _LOG_CHUNK_ROWS if name == "log" else _CHUNK_ROWS
        n0 = self._rows[name]
        new_chunks = -(-(n0 + n) // c) - -(-n0 // c)
        return new_chunks * c * DATASETS[name].itemsize

    def _what_it_holds(self, detail: str = "") -> str:
        """``after N hits (the file holds every chunk written before[; detail])``, or so."""
        hits = self._flushed["hits"]
        if hits or self._flushed["raw"]:
            what, note = f"after {hits} hits", "the file holds every chunk written before"
        elif self._tmp is not None:
            what, note = "before any hit was stored", "the old file is left as it was"
        else:
            what, note = "before any hit was stored", ""
        note = "; ".join(x for x in (note, detail) if x)
        return f"{what} ({note})" if note else what

    def _full(self, room: float) -> DiskFull:
        """Mark the writer broken (the file is sound: nothing was written) and say so."""
        self._broken = "disk full"
        detail = ""
        if resource is not None:
            soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
            with contextlib.suppress(OSError):
                if soft != resource.RLIM_INFINITY and soft - os.path.getsize(self._file) <= room:
                    detail = f"file size limit {soft} bytes"
        return DiskFull(f"{self.path}: disk full {self._what_it_holds(detail)}")

    @contextlib.contextmanager
    def _io(self) -> Iterator[None]:
        """Around every HDF5 write: a failed write (an OSError: disk full, I/O error) freezes
        the file as of its last flush and raises one DataFileError, the first time only."""
        try:
            yield
        except (OSError, RuntimeError) as e:
            first = self._broken is None
            if first:
                self._broken = "disk full" if _is_disk_full(e) else "write error"
            self._freeze()
            if not first:
                log.debug("%s: after the first failure: %s", self.path, e)
                return
            if self._broken == "disk full":
                raise DiskFull(f"{self.path}: disk full {self._what_it_holds()}") from None
            raise DataFileError(f"{self.path}: write failed {self._what_it_holds()}: {e}"
                                ) from None

    def _freeze(self) -> None:
        f, self._f, self._meta, self._ds = self._f, None, None, {}
        if f is None:
            return
        self._frozen = True
        _close_without_writing(f, self._file)
        self._rows = dict(self._flushed)
        self._state = f"failed: {self._broken}"
        if not _write_state_in_place(self._file, self._state):
            log.warning("%s: could not record the end state (the file says running)", self.path)
        try:  # the file is final now: in its place at once, whether or not close() follows
            self._settle()
        except DataFileError as e:
            log.warning("%s", e)

    # -- writing
    def _ensure_open(self) -> bool:
        """True if the file takes writes; False after a failure (the call is then a no-op)."""
        if self._f is not None:
            return True
        if self._closed and self._broken is None:
            raise ValueError(f"{self.path}: the run file is closed")
        return False

    def _set_state(self, text: str) -> None:
        data = text.encode()
        attrs = self._meta.attrs
        if "state" in attrs:
            a = h5py.h5a.open(self._meta.id, b"state")
            try:
                if a.dtype.kind == "S" and len(data) <= a.dtype.itemsize:
                    a.write(np.array(data, dtype=a.dtype))
                    return
            finally:
                a.close()
        attrs.create("state", np.array(data, dtype=f"S{max(_STATE_BYTES, len(data))}"))

    def set_meta(self, key: str, value: Any) -> None:
        """A /meta attribute, typed (see :func:`write_meta`); ``state`` is a fixed-size string
        rewritten in place."""
        if key == "state":
            self._state = value if self._broken is None else f"failed: {self._broken}"
        if not self._ensure_open():
            return
        with self._io():
            if key == "state":
                self._set_state(str(self._state))
            else:
                write_meta(self._meta, key, value)

    def flush(self) -> None:
        """Write what is buffered (after a state change a reader of the file should see)."""
        if not self._ensure_open():
            return
        with self._io():
            self._f.flush()

    def _extend(self, name: str, rows: np.ndarray) -> None:
        dset, ftype = self._ds[name]
        rows = np.ascontiguousarray(rows)
        n0, n = self._rows[name], len(rows)
        dset.id.set_extent((n0 + n,))
        fspace = dset.id.get_space()
        fspace.select_hyperslab((n0,), (n,))
        # the memory type is the file type (same packed layout): HDF5 copies, no conversion
        dset.id.write(h5py.h5s.create_simple((n,)), fspace, rows, mtype=ftype)
        self._rows[name] = n0 + n

    def _write(self, chunks: list[tuple[str, np.ndarray]], margin: int) -> None:
        for name, rows in chunks:
            want = DATASETS[name]
            if rows.dtype is not want and rows.dtype != want:  # identity first (== is slow)
                raise TypeError(f"/{name}: chunk dtype {rows.dtype} is not {want}")
        need = sum(self._growth(name, len(rows)) for name, rows in chunks) + _META_BYTES
        room = self._room()
        if room < need + margin:
            if self._broken is None:
                raise self._full(room)
            return  # after a disk full: what does not fit the reserve is dropped
        with self._io():
            for name, rows in chunks:
                self._extend(name, rows)
            self._f.flush()
        self._flushed = dict(self._rows)

    def append(self, **chunks: np.ndarray | None) -> None:
        """Append any of raw=, hits=, derived=, truth=, lost= and flush the file.

        Raises :class:`DiskFull` (once) when the chunk would not fit; after that (or any failed
        write) appends are dropped."""
        todo = [(_name(k), v) for k, v in chunks.items() if v is not None and len(v)]
        if not self._ensure_open() or self._broken is not None or not todo:
            return
        self._write(todo, _RESERVE)

    def log(self, rows: np.ndarray) -> None:
        """Append /log rows and flush. After a disk full they still go in while the reserve
        lasts (the run's last rows: HV and laser off), else they are dropped."""
        if not len(rows) or not self._ensure_open():
            return
        self._write([("log", rows)], _RESERVE if self._broken is None else _END_MARGIN)

    def count(self, name: str) -> int:
        return self._rows[_name(name)]

    @property
    def broken(self) -> str | None:
        """None, or why nothing more is stored ("disk full", "write error")."""
        return self._broken

    def finish(self, state: str) -> None:
        """Record the end state and time. After a disk full the state is ``failed: disk full``
        whatever ``state`` says. If this very write fails, the file is closed (as ``close``)
        and one :class:`DataFileError` raised."""
        self._state = state if self._broken is None else f"failed: {self._broken}"
        if not self._ensure_open():
            return
        try:
            with self._io():
                self._set_state(str(self._state))
                write_meta(self._meta, "ended", now_iso())
                self._f.flush()
        except DataFileError:
            self.close()  # the engine does not close after a failed finish
            raise

    def close(self) -> None:
        """Close the file; with ``overwrite``, rename it onto the target or delete it (see the
        module docstring); release the lock. Raises at most once, never after a failure."""
        if self._closed:
            return
        self._closed = True
        err: DataFileError | None = None
        try:
            if self._f is not None:
                try:
                    with self._io():
                        self._f.flush()
                        self._f.close()
                except DataFileError as e:
                    err = e
                self._f = self._meta = None
                self._ds = {}
            try:
                self._settle()
            except DataFileError as e:
                err = err or e
        finally:
            self._lock.release()
        if err is not None:
            raise err

    def _settle(self) -> None:
        """With a temporary file: rename it onto the target or delete it."""
        if self._tmp is None:
            return
        tmp, self._tmp = self._tmp, None
        recorded = self._flushed["hits"] + self._flushed["raw"] > 0
        if recorded or not _unfinished(self._state):
            _fsync(tmp)
            try:
                os.replace(tmp, self.path)
            except OSError as e:
                raise DataFileError(f"{self.path}: could not replace it ({e.strerror or e}); "
                                    f"the run is in {tmp}") from None
            _fsync(self.path.parent)
            self._file = self.path
        else:
            with contextlib.suppress(OSError):
                tmp.unlink()
            log.warning("%s: left as it was (the run that was to replace it recorded nothing:"
                        " %s)", self.path, self._state)

    def __enter__(self) -> RunWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


JSON_KEYS = "json_keys"
"""The /meta attribute listing the keys whose value is JSON text (mappings and lists); every
other attribute is a plain HDF5 string, integer, float or boolean. Files written before it
have every value as JSON text."""


def write_meta(group: h5py.Group, key: str, value: Any) -> None:
    """``value`` as a typed attribute of ``group`` (a run's /meta): a string, number or bool as
    itself, anything else (mapping, list, None) as JSON text listed in ``json_keys``."""
    if isinstance(value, np.generic):
        value = value.item()
    keys = set(_json_keys(group) or ())
    if isinstance(value, str | bool | int | float) and not (
            isinstance(value, float) and not np.isfinite(value)):
        group.attrs[key] = value
        keys.discard(key)
    else:
        group.attrs[key] = json.dumps(value, default=_json_default)
        keys.add(key)
    group.attrs[JSON_KEYS] = sorted(keys)


def _json_keys(group: h5py.Group) -> list[str] | None:
    if JSON_KEYS not in group.attrs:
        return None
    return [k.decode() if isinstance(k, bytes) else str(k) for k in group.attrs[JSON_KEYS]]


def read_meta(group: h5py.Group) -> dict[str, Any]:
    """The attributes of a run's /meta as Python values (typed files and older all-JSON ones)."""
    keys = _json_keys(group)
    out: dict[str, Any] = {}
    for k, v in group.attrs.items():
        if k == JSON_KEYS:
            continue
        if isinstance(v, bytes):  # a fixed-size string (the state)
            v = v.decode("utf-8", "replace")
        elif isinstance(v, np.generic):
            v = v.item()
        if keys is None or k in keys:  # older files: every value is JSON text
            try:
                v = json.loads(v) if isinstance(v, str) else v
            except ValueError:
                pass
        out[k] = v
    return out


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "model_dump"):
        return o.model_dump(mode="json")
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


class RunReader:
    """Read a run file in bounded memory."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.exists():
            raise DataFileError(f"{self.path}: no such file")
        try:
            # locking=False: a run still being written can be read (info, live analysis)
            self._f = h5py.File(self.path, "r", locking=False)
        except OSError as e:
            raise DataFileError(f"{self.path}: not a readable HDF5 run file ({e})") from None
        if "meta" not in self._f:
            self._f.close()
            raise DataFileError(f"{self.path}: no /meta group: not an apt-daq run file")
        self.meta: dict[str, Any] = read_meta(self._f["meta"])

    @property
    def run_file(self) -> RunFile | None:
        cfg = self.meta.get("config")
        return RunFile.model_validate(cfg) if cfg else None

    @property
    def instrument(self) -> InstrumentConfig | None:
        if self.meta.get("instrument"):
            return InstrumentConfig.model_validate(self.meta["instrument"])
        rf = self.run_file
        return rf.instrument if rf else None

    def has(self, name: str) -> bool:
        name = _ALIASES.get(name, name)
        return name in self._f and self._f[name].shape[0] > 0

    def count(self, name: str) -> int:
        name = _ALIASES.get(name, name)
        return int(self._f[name].shape[0]) if name in self._f else 0

    def read(self, name: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        name = _ALIASES.get(name, name)
        if name not in self._f:
            return np.zeros(0, dtype=DATASETS[_name(name)])
        return self._f[name][start:stop]

    def iter(self, name: str, chunk: int = 1_000_000) -> Iterator[np.ndarray]:
        n = self.count(name)
        for i in range(0, n, chunk):
            yield self.read(name, i, min(i + chunk, n))

    @property
    def log(self) -> np.ndarray:
        return self.read("log")

    def close(self) -> None:
        if self._f.id.valid:
            self._f.close()

    def __enter__(self) -> RunReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
