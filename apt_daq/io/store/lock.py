"""One writer per file: the exclusive ``flock`` on the sidecar ``.NAME.lock`` a writer holds
for its life, and :func:`writer_of`, which asks whether a live writer holds a run file."""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # not POSIX: no cross-process lock
    fcntl = None  # type: ignore[assignment]

from apt_daq.errors import DataFileError
from apt_daq.io.store.meta import now_iso

_LOCK_WAIT_S = 1.0  # a probe (apt-daq info) holds a lock for microseconds: retry that long
TEMP_SUFFIX = ".unfinished"


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

    def __init__(self, target: Path, busy: str = "another run is writing it",
                 shown: Path | None = None):
        self.target = target
        self.path = lock_path(target)
        self.fd: int | None = None
        self.busy = busy  # what a second acquirer is told, before the holder's pid ...
        self.shown = shown or target  # ... about this path

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
                        f"{self.shown}: {self.busy}{_holder_text(holder)}; wait "
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


@contextlib.contextmanager
def held(target: str | Path, busy: str, shown: str | Path | None = None) -> Iterator[None]:
    """``target``'s writer lock held for the block (a folder's work: ``OUT/campaign``); a
    live holder elsewhere is a :class:`DataFileError` ``SHOWN: BUSY (pid N); wait ...``
    (``shown``: the path to name, default ``target``)."""
    lock = _WriterLock(Path(target), busy, Path(shown) if shown is not None else None)
    lock.acquire()
    lock.note(Path(target))
    try:
        yield
    finally:
        lock.release()


def _live_holder(lock: Path) -> dict[str, Any] | None:
    """The record in the writer lock file ``lock`` if a live process holds it, else None."""
    try:
        fd = os.open(lock, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_holder(fd)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def lock_holder(target: str | Path) -> dict[str, Any] | None:
    """The record (pid, host, ``file``: the target's name, or the temporary file a run
    replacing it writes) of the live process holding ``target``'s writer lock, else None."""
    if fcntl is None:
        return None
    return _live_holder(lock_path(Path(target)))


def writer_of(path: str | Path) -> dict[str, Any] | None:
    """Who writes the run file ``path`` now: the lock holder's record (pid, host; possibly
    empty) if a live process holds its writer lock, else None (nobody: a ``running`` file is
    then one whose writer died)."""
    if fcntl is None:
        return None
    path = Path(path)
    for lock in dict.fromkeys((lock_path(path), lock_path(_target_of(path)))):
        holder = _live_holder(lock)
        # the target's lock may be held by a run replacing it (writing a temporary file):
        # that run is not this file's writer
        if holder is not None and holder.get("file") in (None, path.name):
            return holder
    return None
