"""The live view's file follower opening a run file caught mid-flush (HDF5: "truncated file",
the superblock's end ahead of the bytes on disk), judged from outside: a real run file cut in
half on disk, so h5py itself raises its truncated-file error, and "the writer's flush" that
completes the file on disk once a given number of opens have failed on it.

- a file a live writer holds: the follower waits for the flush and then shows the run's hits;
- a file no writer holds (none, or a lock file a dead writer left): the open fails at once
  with the reader's error, even though the flush would land right after that first failure;
- a held file whose flush never lands: the open still ends, with the same error.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import h5py
import pytest

import apt_daq.io.store.reader as reader_module
from apt_daq.errors import DataFileError
from apt_daq.io.store.lock import _WriterLock, lock_path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "io"))
from synthetic_runs import make_run

HITS = 3000
TRUNCATED = r"not a readable HDF5 run file \(.*truncated file"


class MidFlush:
    """``path`` holds the first half of a finished run file; once ``lands_after`` opens of it
    have failed (None: never), the rest of its bytes are written, as a writer's flush would."""

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lands_after: int | None):
        whole = make_run(tmp_path / "whole.h5", n=HITS).read_bytes()
        self.path = tmp_path / "run.h5"
        self.path.write_bytes(whole[: len(whole) // 2])
        self.failed: list[str] = []  # h5py's error of each failed open of the file
        real_open = h5py.File

        def open_file(name, *args, **kwargs):
            try:
                return real_open(name, *args, **kwargs)
            except OSError as e:
                if Path(name) == self.path:
                    self.failed.append(str(e))
                    if len(self.failed) == lands_after:
                        with self.path.open("ab") as f:
                            f.write(whole[len(whole) // 2:])
                raise

        # the store's reader opens run files through this name; nothing else is changed
        monkeypatch.setattr(reader_module, "h5py", SimpleNamespace(File=open_file))


@pytest.fixture
def live_writer(tmp_path: Path):
    """A live writer's lock on tmp_path/run.h5, held (by this process) while the test runs."""
    lock = _WriterLock(tmp_path / "run.h5")
    lock.acquire()
    lock.note(tmp_path / "run.h5")
    try:
        yield lock
    finally:
        lock.release()


def test_a_held_file_caught_mid_flush_is_followed_once_the_flush_lands(
        tmp_path, monkeypatch, live_writer):
    from apt_daq.web.sources import FileFollower

    run = MidFlush(tmp_path, monkeypatch, lands_after=3)
    follower = FileFollower(run.path)
    # the first opens really met h5py's truncated-file error, and the follower rode them out
    assert len(run.failed) == 3 and all("truncated file" in e for e in run.failed), run.failed
    assert run.path.name in follower.snap.title
    follower.poll_once()
    assert follower.error == ""
    _, spectrum, hitmap = follower.snap.histograms()
    assert spectrum.sum() == hitmap.sum() == HITS  # every hit of the run, binned once


@pytest.mark.parametrize("leftover_lock", [False, True], ids=["no lock", "dead writer's lock"])
def test_a_truncated_file_no_writer_holds_fails_at_once(tmp_path, monkeypatch, leftover_lock):
    from apt_daq.web.sources import FileFollower

    run = MidFlush(tmp_path, monkeypatch, lands_after=1)  # a second open would succeed
    if leftover_lock:  # a writer killed with its lock file still there: no one holds it
        lock_path(run.path).write_text(json.dumps({"pid": 999999, "file": run.path.name}))
    with pytest.raises(DataFileError, match=TRUNCATED) as err:
        FileFollower(run.path)
    assert str(run.path) in str(err.value)
    assert len(run.failed) == 1, run.failed  # one open, not a second after the flush


def test_a_held_file_whose_flush_never_lands_still_fails(tmp_path, monkeypatch, live_writer):
    from apt_daq.web.sources import FileFollower

    run = MidFlush(tmp_path, monkeypatch, lands_after=None)
    t0 = time.monotonic()
    with pytest.raises(DataFileError, match=TRUNCATED):
        FileFollower(run.path)
    assert len(run.failed) > 1, run.failed  # it did wait for the writer ...
    assert time.monotonic() - t0 < 30  # ... for a bounded time


def test_the_view_follows_a_run_replacing_the_file_and_notices_a_swapped_file(tmp_path):
    """An outside audit viewed a finished run, then started ``apt-daq run -o it --overwrite``:
    for 18 s the page said ``done``, HV off, while the new run wrote its temporary file (the
    view asked ``writer_of``, which rightly says that run is not the old file's writer). Now
    the view shows the replacing run from its first poll. And a file swapped for another (a
    rename over it) is started over, not mixed with the old one's counts; one that cannot be
    read for three polls says so on the page."""
    import numpy as np

    from apt_daq.hits import HIT_DTYPE
    from apt_daq.io.store import RunWriter
    from apt_daq.web.sources import FAILED_POLLS, FileFollower

    path = make_run(tmp_path / "run.h5", n=HITS)
    follower = FileFollower(path)
    follower.poll_once()
    assert follower.snap.histograms()[1].sum() == HITS
    with RunWriter(path, {"seed": 1}, overwrite=True) as w:
        w.append(hits=np.zeros(10, HIT_DTYPE))
        w.set_meta("state", "running")
        follower.poll_once()
        assert follower._file is not None and follower._file != path  # the temporary file
        assert follower.snap.histograms()[1].sum() == 0  # the old run's hits are gone
        w.finish("done")
    other = make_run(tmp_path / "other.h5", n=HITS // 2, seed=3)
    other.replace(path)  # another file put in its place
    follower.poll_once()
    assert follower.error == "" and follower.snap.histograms()[1].sum() == HITS // 2
    path.write_text("not a run file")
    for _ in range(FAILED_POLLS):
        follower.poll_once()
    assert "not a readable HDF5 run file" in follower.error
    assert follower.snap.status.state.startswith("unreadable: ")
