"""Where a live view's snapshot comes from: a run in this process (the engine's ``on_block``)
or a run file being written by another process (followed by polling the store's reader)."""

from __future__ import annotations

import logging
import math
import threading
import time
from pathlib import Path
from typing import Any

from apt_daq.errors import DataFileError
from apt_daq.web.snapshot import LiveSnapshot

log = logging.getLogger(__name__)

#: rows of /hits and /derived binned per poll of a file: a long run's history comes in a few
#: polls and the page shows up at once
FILE_ROWS_PER_POLL = 2_000_000
FILE_POLL_S = 1.0
#: polls in a row that fail before the view says the file is unreadable (one may land
#: mid-write)
FAILED_POLLS = 3
_ACQUIRING = 3  # apt_daq.run.State.ACQUIRING, as /log stores it


# ------------------------------------------------------------------------------ a live session
def attach_session(session: Any) -> tuple[LiveSnapshot, Any]:
    """Make a snapshot for ``session`` and chain its ``on_block`` so that each readout block
    adds the block's m/n and positions, a trace row and the counters. Returns the snapshot and
    a ``poll()`` that copies the session's state and transitions (cheap attribute reads) for
    the server thread to call before each refresh."""
    cfg = session.cfg
    snap = LiveSnapshot(
        title=cfg.run.name, detector_radius_mm=cfg.instrument.detector_diameter_mm / 2,
        ranges=_ranges_of(cfg), target_rate=cfg.run.target_detection_rate,
        suspenders=[s.name for s in session.suspenders],
        # the engine's on_block reports the setpoint, the measured V and the instrument time
        has_v_dc=True)
    previous = session.on_block

    def on_block(s: Any, info: dict[str, Any]) -> None:
        # engine thread: a few bincounts and one locked row; nothing waits for a browser
        snap.add_hits(info.get("mass_da"), info.get("det_x_mm"), info.get("det_y_mm"))
        t = info.get("time_s")
        snap.add_trace(time_s=snap.wall_s() if t is None else t, v_dc=info.get("v_dc", math.nan),
                       v_setpoint=info["v_set"], rate=info["rate"],
                       laser_pj=info.get("laser_pj", math.nan))
        snap.update_status(ions=int(info["ions"]), pulses=int(info["pulses"]),
                           rate=float(info["rate"]), v_setpoint=float(info["v_set"]),
                           v_dc=float(info.get("v_dc", math.nan)),
                           laser_pj=float(info.get("laser_pj", math.nan)),
                           step=int(info["step"]), blocks=snap.status.blocks + 1)
        if previous is not None:
            previous(s, info)

    session.on_block = on_block

    def poll() -> None:
        transitions = list(session.transitions)  # a list the engine only appends to
        state = session.state.name.lower()
        end = transitions[-1][2] if transitions and state in ("done", "failed",
                                                              "aborted") else ""
        snap.update_status(state=state, transitions=transitions[-20:], end_reason=end)

    return snap, poll


def _ranges_of(cfg: Any) -> Any:
    try:
        path = cfg.resolve(cfg.analysis.ranges)
        if path is None:
            return None
        from apt_daq.io.ranges import read_ranges

        return read_ranges(path)
    except Exception as e:  # the run reports a bad range file itself; the view goes without
        log.warning("live view: no ranges (%s)", e)
        return None


# ------------------------------------------------------------------------------ a run file
class FileFollower:
    """Follows a run file another process may be writing: every ``FILE_POLL_S`` it opens the
    file with :class:`RunReader` (which reads a file being written), bins the hits added since
    the last poll, appends the new /log rows to the traces and copies state and transitions.

    While a run replaces an existing file (``--overwrite``) it writes a temporary file beside
    it; the follower reads that one (its name is in the writer's lock record)."""

    def __init__(self, path: str | Path):
        from apt_daq.io.store import RunReader

        self.path = Path(path)
        with self._open_live(RunReader) as r:
            rf = _run_file(r)
            inst = r.instrument
            from apt_daq.io.ranges import run_range_table

            table, _ = run_range_table(r)
        radius = (inst.detector_diameter_mm if inst else 80.0) / 2
        self.snap = LiveSnapshot(
            title=f"{rf.run.name if rf else self.path.stem} ({self.path.name})",
            detector_radius_mm=radius, ranges=table,
            target_rate=rf.run.target_detection_rate if rf else math.nan)
        self._file: Path | None = None
        self._ident: tuple[int, int] | None = None
        self._failures = 0
        self._hits = self._log = 0
        self._rate = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="apt-daq-view-file",
                                        daemon=True)
        self.error = ""

    def start(self) -> None:
        self.poll_once()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _open_live(self, reader: Any, tries: int = 20, wait_s: float = 0.1) -> Any:
        """The run file opened, as :meth:`poll_once` tolerates it: while a live writer holds
        it, an open that lands mid-flush (HDF5: "truncated file", the superblock's end ahead
        of the bytes on disk) is tried again, up to ``tries`` x ``wait_s``; a file no writer
        holds fails at once."""
        from apt_daq.io.store import writer_of

        for _ in range(tries - 1):
            try:
                return reader(self._current())
            except DataFileError:
                if writer_of(self.path) is None:
                    raise
                time.sleep(wait_s)
        return reader(self._current())

    def _current(self) -> Path:
        """The file to show: the temporary file of a run replacing ``path`` while one does
        (``lock_holder``: ``writer_of`` says, rightly, that such a run is not ``path``'s own
        writer, and the view went on showing the old run, HV off, while the new one ran)."""
        from apt_daq.io.store import lock_holder

        holder = lock_holder(self.path) or {}
        name = holder.get("file")
        if name and name != self.path.name and (self.path.parent / name).exists():
            return self.path.parent / name
        return self.path

    def _loop(self) -> None:
        while not self._stop.wait(FILE_POLL_S):
            self.poll_once()

    def poll_once(self) -> None:
        """Read what the file gained since the last poll (errors are kept, not raised: the
        file may be mid-write; the next poll tries again)."""
        from apt_daq.io.store import RunReader, writer_of

        try:
            current = self._current()
            ident = _identity(current)
            if current != self._file or ident != self._ident:
                # a new file (a replacement began or ended, or the file was swapped): start over
                if self._file is not None:
                    self.snap.reset()
                self._file, self._hits, self._log, self._rate = current, 0, 0, 0.0
                self._ident = ident
            with RunReader(current) as r:
                n = min(r.count("hits"), r.count("derived"))
                stop = min(n, self._hits + FILE_ROWS_PER_POLL)
                if stop > self._hits:
                    hits = r.read("hits", self._hits, stop)
                    derived = r.read("derived", self._hits, stop)
                    self.snap.add_hits(derived["mass"], hits["det_x"], hits["det_y"])
                    self._hits = stop
                logs = r.read("log", self._log)
                self._log += len(logs)
                meta = r.meta
            for row in logs:
                self.snap.add_trace(time_s=row["time_s"], v_dc=row["v_dc"],
                                    v_setpoint=row["v_setpoint"], rate=row["rate"],
                                    laser_pj=row["laser_pj"])
            transitions = [tuple(t) for t in meta.get("transitions") or []]
            state = str(meta.get("state") or "")
            if state == "running" and not meta.get("ended"):
                state = transitions[-1][1] if transitions else "running"
                if writer_of(self.path) is None and writer_of(current) is None:
                    state = "interrupted"  # says running, but no live writer holds it
            values: dict[str, Any] = {
                "state": state, "transitions": transitions[-20:],
                "end_reason": str(meta.get("end_reason") or ""),
                "safe_off_error": str(meta.get("safe_off_error") or "")}
            if len(logs):
                last = logs[-1]
                # the rate of the last block acquired (the safe-off row's is 0 by definition)
                acq = logs[logs["state"] == _ACQUIRING]
                if len(acq):
                    self._rate = float(acq["rate"][-1])
                values.update(ions=int(last["ions"]), pulses=int(last["pulses"]),
                              rate=self._rate, v_setpoint=float(last["v_setpoint"]),
                              v_dc=float(last["v_dc"]), laser_pj=float(last["laser_pj"]),
                              step=int(last["step"]), hv_on=int(last["hv_on"]),
                              laser_on=int(last["laser_on"]))
            self.snap.update_status(**values)
            self.error, self._failures = "", 0
        except Exception as e:  # mid-write, replaced, or gone for a moment
            self.error = str(e) if isinstance(e, DataFileError) else f"{type(e).__name__}: {e}"
            self._failures += 1
            log.debug("view: poll of %s failed: %s", self.path, self.error)
            if self._failures == FAILED_POLLS:  # not a moment mid-write: say so, once
                log.warning("view: %s", self.error)
                self.snap.update_status(state=f"unreadable: {self.error}")


def _identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of ``path``: another file put in its place changes it."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _run_file(reader: Any) -> Any:
    try:
        return reader.run_file
    except Exception:  # an imported run may carry a partial config
        return None


# ------------------------------------------------------------------------------ the emulator
class EmulatorFeed:
    """What ``apt-daq emulate --serve`` shows: the emulated instrument's readout blocks, decoded
    as the real pipeline decodes the DLD records (``apt_daq.pipeline.process.decode_chunk``:
    time sum, detector x/y, m/n from ``apt_daq.tof``'s kernel, uncalibrated), and its model
    state (HV setpoint and output, laser energy, pulses).

    ``on_block`` (the emulator's hook, on its pulse clock thread) only queues the block; a
    worker thread decodes it and fills the snapshot, so the clock never waits for the view. A
    block that finds the queue full is counted in the pulses but not binned."""

    QUEUE_BLOCKS = 8

    def __init__(self, emulator: Any, title: str = "emulator", ranges: Any = None):
        import queue

        self.emu = emulator
        self.snap = LiveSnapshot(title=title,
                                 detector_radius_mm=emulator.instrument.detector_diameter_mm / 2,
                                 ranges=ranges, has_v_dc=True)
        self._queue: queue.Queue[Any] = queue.Queue(self.QUEUE_BLOCKS)
        self._full = queue.Full
        self.ions = self.blocks = self.skipped = 0
        self._thread = threading.Thread(target=self._work, name="apt-daq-emulator-view",
                                         daemon=True)

    def start(self) -> EmulatorFeed:
        self._thread.start()
        self.emu.on_block = self.on_block
        return self

    def stop(self) -> None:
        if getattr(self.emu, "on_block", None) == self.on_block:
            self.emu.on_block = None
        self._queue.put(None)
        self._thread.join(timeout=10)

    def on_block(self, blk: Any, state: Any) -> None:
        try:
            self._queue.put_nowait((blk, state))
        except self._full:
            self.skipped += 1

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            try:
                self._add(*item)
            except Exception as e:  # the view goes without this block; the instrument runs on
                log.warning("live view: emulator block not shown (%s)", e)

    def _add(self, blk: Any, st: Any) -> None:
        from apt_daq.pipeline.process import decode_chunk

        n = 0
        if len(blk.raw):
            dec = decode_chunk(blk.raw, self.emu.instrument, None)
            n = len(dec.keep)
            self.snap.add_hits(dec.mass, dec.det_x, dec.det_y)
        self.ions += n
        self.blocks += 1
        rate = n / blk.pulses if blk.pulses else 0.0
        self.snap.add_trace(time_s=st.now_s, v_dc=st.hv_measured_v, v_setpoint=st.hv_setpoint_v,
                            rate=rate, laser_pj=st.laser_energy_pj)
        self.snap.update_status(ions=self.ions, rate=rate, blocks=self.blocks)
        self._state(st)

    def _state(self, st: Any) -> None:
        if st.fractured:
            state = "fractured"
        elif st.hv_tripped:
            state = "hv tripped"
        elif st.rebooting:
            state = "rebooting"
        elif st.dld_running and st.laser_emission_on:
            state = "acquiring"
        else:
            state = "idle"
        why = ", ".join(st.faults_fired[-3:])
        self.snap.update_status(state=state, pulses=int(st.pulses),
                                v_setpoint=float(st.hv_setpoint_v), v_dc=float(st.hv_measured_v),
                                laser_pj=float(st.laser_energy_pj), hv_on=int(st.hv_output_on),
                                laser_on=int(st.laser_emission_on),
                                end_reason=f"faults fired: {why}" if why else "")

    def poll(self) -> None:
        """The server thread, before each refresh: the model state between blocks too (the HV
        ramping with the laser off)."""
        self._state(self.emu.status())
