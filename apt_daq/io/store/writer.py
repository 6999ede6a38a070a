"""The run writer: appends chunks, flushed after each; replaces an old file only by a run
worth keeping; turns a full disk into one :class:`~apt_daq.errors.DiskFull` (see the
package docstring for what it promises)."""

from __future__ import annotations

import contextlib
import errno
import glob
import logging
import math
import os
import re
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np

try:
    import resource
except ImportError:
    resource = None  # type: ignore[assignment]

from apt_daq.errors import DataFileError, DiskFull
from apt_daq.hits import units_of
from apt_daq.io.store.layout import _CHUNK_ROWS, _LOG_CHUNK_ROWS, DATASETS, _name
from apt_daq.io.store.lock import TEMP_SUFFIX, _WriterLock
from apt_daq.io.store.meta import now_iso, versions, write_meta

_STATE_BYTES = 96  # /meta state is a fixed-size string: it can be rewritten in place, no allocation
_RESERVE = 1 << 20  # bytes kept free for the end of a run (last /log rows, end state, ended)
_END_MARGIN = 64 << 10  # what a /log row after a disk-full must leave free
_META_BYTES = 64 << 10  # an append's metadata (chunk index, object headers), generously
_DISK_FULL = {errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)}
log = logging.getLogger("apt_daq.store")


def _errno_of(e: BaseException) -> int | None:
    code = getattr(e, "errno", None)
    if isinstance(code, int):
        return code
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
        #: the file this run was to replace is left as it was (the run recorded nothing, or
        #: ended badly: then it is kept beside, in ``kept_as``)
        self.kept_previous = False
        self.kept_as: Path | None = None
        self._result = False  # finish(result=True): a "failed" end that is a result
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
        self._json_keys: set[str] = set()  # /meta's json_keys, kept here (write_meta)
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
        if self.path.is_dir():  # before "exists": --overwrite cannot make it a run file
            raise DataFileError(f"{self.path}: is a folder; give the run file's name")
        exists = os.path.lexists(self.path)
        if exists and not overwrite:
            raise DataFileError(f"{self.path}: exists (use --overwrite or another -o)")
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
            d.attrs["fields"] = list(dtype.names or ())
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
        assert self._meta is not None  # open: _ensure_open said so
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
                write_meta(self._meta, key, value, self._json_keys)

    def flush(self) -> None:
        """Write what is buffered (after a state change a reader of the file should see)."""
        if not self._ensure_open():
            return
        assert self._f is not None
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
            assert self._f is not None
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

    def finish(self, state: str, *, result: bool = False) -> None:
        """Record the end state and time. After a disk full the state is ``failed: disk full``
        whatever ``state`` says. ``result``: a ``failed`` end that is a measurement's result
        (a fracture), so with ``overwrite`` the run replaces the old file as a ``done`` one
        does. If this very write fails, the file is closed (as ``close``) and one
        :class:`DataFileError` raised."""
        self._state = state if self._broken is None else f"failed: {self._broken}"
        self._result = result and self._broken is None
        if not self._ensure_open():
            return
        try:
            with self._io():
                self._set_state(str(self._state))
                assert self._f is not None and self._meta is not None
                write_meta(self._meta, "ended", now_iso(), self._json_keys)
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
        if recorded and _unfinished(self._state) and not self._result:
            self._set_aside(tmp)
        elif recorded or not _unfinished(self._state):
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
            self.kept_previous = True
            log.warning("%s: left as it was (the run that was to replace it recorded nothing:"
                        " %s)", self.path, self._state)

    def _set_aside(self, tmp: Path) -> None:
        """A run that recorded data and ended badly (an error, disk full, an abort) with an
        old file to replace: the old file stays as it was, and the run (the specimen it
        consumed) is kept beside it as ``NAME.<state>-<time>.h5`` (a rename: no space needed
        on a full disk)."""
        word = re.sub(r"[^a-z]+", "-", str(self._state).split(":")[0].lower()).strip("-")
        stamp = time.strftime("%Y%m%dT%H%M%S")
        aside = self.path.with_name(f"{self.path.stem}.{word or 'unfinished'}-{stamp}"
                                    f"{self.path.suffix}")
        n = 1
        while aside.exists():
            n += 1
            aside = aside.with_name(f"{self.path.stem}.{word}-{stamp}-{n}{self.path.suffix}")
        _fsync(tmp)
        try:
            os.replace(tmp, aside)
        except OSError as e:
            raise DataFileError(f"{self.path}: left as it was; the run that was to replace it "
                                f"({self._state}) is in {tmp} ({e.strerror or e})") from None
        self._file = self.kept_as = aside
        self.kept_previous = True
        log.warning("%s: left as it was; the run that was to replace it ended %s and is kept "
                    "in %s", self.path, self._state, aside)

    def __enter__(self) -> RunWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

