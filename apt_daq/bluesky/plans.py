"""An apt-daq acquisition as a bluesky plan.

:func:`acquire` runs apt-daq's run engine (:class:`apt_daq.run.Session`) on a worker thread
inside bluesky's RunEngine and turns it into event-model documents:

- ``start``: the run's metadata (run name, specimen, laser energy, target rate, seed, ...);
- stream ``primary``: one ``event`` per readout block (the engine's ``on_block``): V setpoint,
  measured V, detection rate, laser energy, ions and pulses (running totals and this block's);
- stream ``hits``: the HDF5 run file's ``/hits`` dataset, announced by one ``stream_resource``
  (mimetype ``application/x-hdf5``) and a ``stream_datum`` per stored block, whose
  ``indices`` are the block's rows of ``/hits`` (one row, one ion, one seq_num);
- ``stop``: ``success`` (the run's stop condition), ``fail`` (a fracture or a fault) or
  ``abort``, with the engine's end reason.

``RE.request_pause()`` (and any bluesky suspender) pauses the engine (laser off, HV held:
``Session.pause()``), ``RE.resume()`` resumes it, ``RE.abort()``/``RE.stop()`` abort it (HV and
laser off); the RunEngine reports itself paused only once the engine is.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import bluesky.plan_stubs as bps
import numpy as np
from bluesky.utils import Msg
from event_model import StreamRange, compose_stream_resource

from apt_daq.bluesky.devices import _run_file

if TYPE_CHECKING:
    from apt_daq.engine.signals import SignalHandOver

log = logging.getLogger(__name__)

__all__ = ["BLOCK_FIELDS", "HITS_MIMETYPE", "RunBlocks", "RunHits", "acquire"]

HITS_MIMETYPE = "application/x-hdf5"

#: the ``primary`` stream's fields: (key, on_block key or None, dtype, units, description)
BLOCK_FIELDS: tuple[tuple[str, str | None, str, str | None, str], ...] = (
    ("time_s", "time_s", "number", "s", "instrument time of the block's /log row"),
    ("v_setpoint", "v_set", "number", "V", "HV setpoint the block was acquired at"),
    ("v_measured", "v_dc", "number", "V", "measured HV output (the block's /log row)"),
    ("rate", "rate", "number", "ions/pulse", "detection rate of the block"),
    ("laser_pj", "laser_pj", "number", "pJ", "laser pulse energy of the schedule step"),
    ("ions", "ions", "integer", None, "ions detected so far (running total)"),
    ("pulses", "pulses", "integer", None, "pulses fired so far (running total)"),
    ("block_ions", None, "integer", None, "ions of this block: its rows of /hits"),
    ("block_pulses", None, "integer", None, "pulses of this block"),
    ("step", "step", "integer", None, "schedule step"),
    ("hv_on", "hv_on", "boolean", None, "HV output on (read back)"),
    ("laser_on", "laser_on", "boolean", None, "laser emission on (read back)"),
)
_NUMPY = {"number": "<f8", "integer": "<i8", "boolean": "|b1"}


# ------------------------------------------------------------------------------ the feed
class _BlockFeed:
    """Blocks handed from the engine's thread (``on_block``) to the RunEngine's loop."""

    def __init__(self) -> None:
        self._items: deque[dict[str, Any]] = deque()
        self._lock = threading.Lock()
        self._waiter: tuple[asyncio.AbstractEventLoop, asyncio.Future] | None = None
        self.done = False

    def on_block(self, session: Any, info: dict[str, Any]) -> None:
        """The engine's ``on_block``: keep the scalars (the arrays are views of its buffers)."""
        item = {k: v for k, v in info.items() if not isinstance(v, np.ndarray)}
        item["wall_time"] = time.time()
        with self._lock:
            self._items.append(item)
            self._wake()

    def finish(self) -> None:
        with self._lock:
            self.done = True
            self._wake()

    def _wake(self) -> None:
        if self._waiter is not None:
            loop, fut = self._waiter
            loop.call_soon_threadsafe(lambda: fut.done() or fut.set_result(None))

    def pop(self) -> dict[str, Any] | None:
        """The oldest block not yet emitted (one at a time: an abort thrown into the plan
        while it emits loses none of the others)."""
        with self._lock:
            return self._items.popleft() if self._items else None

    async def wait(self, timeout_s: float = 1.0) -> None:
        """Until a block arrives or the engine has ended (at most ``timeout_s``)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._items or self.done:
                return
            fut = loop.create_future()
            self._waiter = (loop, fut)
        try:
            await asyncio.wait_for(fut, timeout_s)
        except TimeoutError:
            pass
        finally:
            with self._lock:
                self._waiter = None


# ------------------------------------------------------------------------------ objects
class RunBlocks:
    """The engine's readout blocks as a bluesky ``Readable`` (the ``primary`` stream), and the
    engine's pause, resume and abort as the RunEngine's (``Pausable``, ``Stageable``)."""

    parent = None

    def __init__(self, session: Any, feed: _BlockFeed, name: str = "apt",
                 pause_timeout_s: float | None = None):
        self._name = name
        self.session = session
        self.feed = feed
        self.thread: threading.Thread | None = None
        self.result: Any = None
        self.error: BaseException | None = None
        self._current: dict[str, Any] | None = None
        self.bundling = False  # between the create and the save of a block's event
        self._prev = {"ions": 0, "pulses": 0}
        r = session.cfg.run
        chunk_s = r.chunk_pulses / r.pulse_rate_hz
        #: how long RunEngine's pause waits for the engine to reach its paused state
        self.pause_timeout_s = pause_timeout_s or max(30.0, 3 * chunk_s)
        self.hints = {"fields": ["v_measured", "rate"]}

    @property
    def name(self) -> str:
        return self._name

    # -- the engine's thread
    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name="apt-daq-session", daemon=False)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.result = self.session.run()
        except BaseException as e:  # reported by the plan
            self.error = e
        finally:
            self.feed.finish()

    @property
    def running(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def abort_and_wait(self, timeout_s: float = 60.0) -> None:
        """Abort the engine (its safe path: HV and laser off) and wait for it to end."""
        if self.thread is None:
            return
        self.session.abort()
        self.thread.join(timeout_s)
        if self.thread.is_alive():
            log.error("the apt-daq engine did not end within %.0f s of the abort", timeout_s)

    # -- Readable
    def load(self, item: dict[str, Any]) -> None:
        item = dict(item)
        item["block_ions"] = int(item["ions"]) - self._prev["ions"]
        item["block_pulses"] = int(item["pulses"]) - self._prev["pulses"]
        self._prev = {"ions": int(item["ions"]), "pulses": int(item["pulses"])}
        self._current = item

    def describe(self) -> dict[str, dict[str, Any]]:
        src = f"apt-daq://{self.session.cfg.run.name}"
        keys = {}
        for key, _, dtype, units, _doc in BLOCK_FIELDS:
            dk: dict[str, Any] = {"source": f"{src}/{key}", "dtype": dtype, "shape": [],
                                  "dtype_numpy": _NUMPY[dtype]}
            if units:
                dk["units"] = units
            keys[key] = dk
        return keys

    def read(self) -> dict[str, dict[str, Any]]:
        item = self._current
        if item is None:
            raise RuntimeError("no readout block yet")
        t = item["wall_time"]
        out = {}
        for key, src, dtype, _, _doc in BLOCK_FIELDS:
            v = item[src or key]
            v = float(v) if dtype == "number" else bool(v) if dtype == "boolean" else int(v)
            out[key] = {"value": v, "timestamp": t}
        return out

    # -- Stageable: unstaging (also the RunEngine's cleanup after an abort) ends the engine
    def stage(self) -> list[Any]:
        return [self]

    def unstage(self) -> list[Any]:
        if self.running:
            self.abort_and_wait()
        return [self]

    # -- Pausable: the RunEngine's pause (a request or a suspender) is the engine's pause
    async def pause(self) -> None:
        from apt_daq.run import State

        self.session.pause()
        if not self.running:
            return
        deadline = time.monotonic() + self.pause_timeout_s
        while self.running and self.session.state != State.PAUSED:
            if time.monotonic() > deadline:
                log.warning("the apt-daq engine has not paused within %.0f s; it pauses at its "
                            "next readout block", self.pause_timeout_s)
                return
            await asyncio.sleep(0.02)

    async def resume(self) -> None:
        self.session.resume()


class RunHits:
    """The run file's ``/hits`` dataset as bluesky stream assets (``WritesStreamAssets``): one
    ``stream_resource`` and one ``stream_datum`` per stored block, its ``indices`` the block's
    rows of ``/hits`` (announced once they are in the file)."""

    parent = None

    def __init__(self, path: Path, name: str = "hits"):
        self._name = name
        self.path = Path(path).resolve()
        self.written = 0  # rows of /hits known to be in the file
        self.announced = 0  # rows announced by stream_datum documents
        self._bundle: Any = None

    @property
    def name(self) -> str:
        return self._name

    def describe_collect(self) -> dict[str, dict[str, Any]]:
        from apt_daq.hits import HIT_DTYPE

        return {self._name: {
            "source": f"{self.path.as_uri()}#/hits",
            "dtype": "array",
            "shape": [],
            "dtype_numpy": [list(f) for f in HIT_DTYPE.descr],
            "external": "STREAM:",
        }}

    def get_index(self) -> int:
        return self.written

    def collect_asset_docs(self, index: int | None = None) -> Iterator[tuple[str, Any]]:
        stop = self.written if index is None else min(index, self.written)
        if stop <= self.announced:
            return
        if self._bundle is None:
            params: dict[str, Any] = {"dataset": "/hits", "swmr": False}
            from apt_daq.io import store

            rows = getattr(store, "_CHUNK_ROWS", None)
            if rows:
                params["chunk_shape"] = [int(rows)]
            self._bundle = compose_stream_resource(
                mimetype=HITS_MIMETYPE, uri=self.path.as_uri(), data_key=self._name,
                parameters=params)
            yield "stream_resource", self._bundle.stream_resource_doc
        yield "stream_datum", self._bundle.compose_stream_datum(
            indices=StreamRange(start=self.announced, stop=stop))
        self.announced = stop


# ------------------------------------------------------------------------------ the plan
def _check_arguments(pause_timeout_s: Any, md: Any, suspenders: Any) -> None:
    """``acquire``'s arguments that are not the config's, checked when the plan is made: a
    wrong one was found only at the first block, after the HV had ramped up."""
    import math

    if pause_timeout_s is not None and not (isinstance(pause_timeout_s, int | float)
                                            and math.isfinite(pause_timeout_s)
                                            and pause_timeout_s > 0):
        raise ValueError(f"pause_timeout_s: a time in seconds > 0, got {pause_timeout_s!r}")
    if md is not None and not isinstance(md, dict):
        raise TypeError(f"md: a dict of start-document metadata, got {type(md).__name__}")
    if suspenders is not None and not isinstance(suspenders, list | tuple):
        raise TypeError("suspenders: a list of apt_daq.run.Suspender, got "
                        f"{type(suspenders).__name__}")


def acquire(run: Any, out: str | Path | None = None, *, overwrite: bool = False,
            md: dict[str, Any] | None = None, suspenders: list[Any] | None = None,
            overrides: dict[str, Any] | None = None, name: str = "apt",
            pause_timeout_s: float | None = None,
            **more_overrides: Any) -> Generator[Msg, Any, Any]:
    """A bluesky plan running an apt-daq acquisition; returns the engine's ``RunResult``.

    ``run``: a run file path (or an :class:`apt_daq.config.RunFile`); ``out``: the HDF5 run
    file (default ``runs/<run name>.h5``); ``overrides`` and keyword overrides: dotted paths of
    the run file, a keyword spelling the dots ``__`` (``run__stop__ions=20000``); ``md``: extra
    start-document metadata; ``suspenders``: the engine's own (:class:`apt_daq.run.Suspender`,
    default: laser interlock, detector overflow); bluesky suspenders go on the RunEngine as
    usual (``RE.install_suspender``) and pause the engine the same way.

    The config is read now (its errors are raised here, before the RunEngine starts); the
    instruments are opened by the engine when the plan runs.

    >>> RE(acquire("configs/runs/nmc811-cr-5pj.yaml", "runs/a.h5", run__stop__ions=20000))
    """
    from apt_daq.engine.signals import SignalHandOver
    from apt_daq.run import Session

    _check_arguments(pause_timeout_s, md, suspenders)  # before anything is energised
    ov = {**(overrides or {}), **{k.replace("__", "."): v for k, v in more_overrides.items()}}
    run_file = _run_file(run, ov or None)
    r = run_file.run
    out = Path(out) if out else Path("runs") / f"{r.name}.h5"
    feed = _BlockFeed()
    session = Session(run_file, out, overwrite=overwrite, suspenders=suspenders,
                      on_block=feed.on_block, handle_signals=False)
    blocks = RunBlocks(session, feed, name=name, pause_timeout_s=pause_timeout_s)
    hits = RunHits(out, name="hits")
    start_md = {**_start_metadata(run_file, out), **(md or {})}
    # the RunEngine keeps SIGINT; SIGHUP/SIGQUIT/SIGTERM abort the engine safely, then end
    # the process as they ask (the session's thread gets no signal of its own)
    signals = SignalHandOver(session).install()
    return _handing_over(_acquire(blocks, hits, start_md), signals)


def _handing_over(plan: Generator[Msg, Any, Any],
                  signals: SignalHandOver) -> Generator[Msg, Any, Any]:
    """``plan`` with ``signals`` active while it runs and passed on when it has ended."""
    signals.active = True
    try:
        return (yield from plan)
    finally:
        signals.finish()


def _start_metadata(run_file: Any, out: Path) -> dict[str, Any]:
    r, d = run_file.run, run_file.drivers
    steps = [s.laser_pj for s in r.steps()]
    try:
        from importlib.metadata import version

        ver = version("apt-daq")
    except Exception:
        ver = "unknown"
    return {
        "plan_name": "apt_daq.bluesky.acquire",
        "run_name": r.name,
        "specimen": run_file.specimen.name,
        "instrument": run_file.instrument.name,
        "laser_pj": steps[0],
        "laser_pj_steps": steps,
        "target_detection_rate": r.target_detection_rate,
        "pulse_rate_hz": r.pulse_rate_hz,
        "base_temperature_k": r.base_temperature_k,
        "start_voltage_v": r.start_voltage_v,
        "stop_ions": r.stop.ions,
        "seed": r.seed,
        "run_file": str(out.resolve()),
        "config_source": str(run_file.source) if run_file.source else None,
        "backends": {"laser": d.laser.backend, "hv": d.hv.backend, "dld": d.dld.backend},
        "simulated": "sim" in (d.laser.backend, d.hv.backend, d.dld.backend),
        "apt_daq_version": ver,
    }


def _hits_in_file(path: Path) -> int:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return int(f["hits"].shape[0]) if "hits" in f else 0
    except OSError:
        return 0


def _emit(blocks: RunBlocks, hits: RunHits) -> Generator[Msg, Any, None]:
    """An event per block delivered so far, and a stream datum for the rows in the file."""
    while (item := blocks.feed.pop()) is not None:
        # the previous block's rows are in the file once the engine reads the next one
        hits.written = max(hits.written, blocks._prev["ions"])
        blocks.load(item)
        yield from _event(blocks)
        if hits.written > hits.announced:
            yield from bps.collect(hits, name="hits")


def _event(blocks: RunBlocks) -> Generator[Msg, Any, None]:
    """The loaded block's event. ``blocks.bundling``: the bundle is open once the message the
    plan waits at has run (an exception is thrown in at a yield whose message has run)."""
    blocks.bundling = True
    yield from bps.create("primary")
    yield from bps.read(blocks)
    blocks.bundling = False
    yield from bps.save()


def _finish_hits(blocks: RunBlocks, hits: RunHits) -> Generator[Msg, Any, None]:
    """After the engine has ended (its file closed): announce the rest of /hits."""
    if blocks.thread is not None:
        blocks.thread.join()
    hits.written = _hits_in_file(hits.path)  # what the closed file holds, exactly
    if hits.written > hits.announced:
        yield from bps.collect(hits, name="hits")


def _acquire(blocks: RunBlocks, hits: RunHits, md: dict[str, Any]) -> Generator[Msg, Any, Any]:
    from apt_daq.run import State

    rewindable = yield Msg("rewindable", None, None)
    # the engine cannot replay what it measured: a pause resumes where it stopped
    yield Msg("rewindable", None, False)
    yield from bps.open_run(md)
    try:
        yield from bps.stage(blocks)  # RunEngine sees it: pause/resume/abort reach the engine
        yield from bps.declare_stream(blocks, name="primary")
        yield from bps.declare_stream(hits, name="hits", collect=True)
        blocks.start()
        while True:
            yield from bps.wait_for([blocks.feed.wait])
            ended = blocks.feed.done  # read before draining: every block came before it
            yield from _emit(blocks, hits)
            if ended:
                break
            yield from bps.checkpoint()  # where a deferred pause (one Ctrl-C) takes effect
        yield from _finish_hits(blocks, hits)
        yield from bps.unstage(blocks)
    except GeneratorExit:  # RE.halt(): no more messages; the engine still ends safely
        blocks.session.abort()
        raise
    except BaseException as e:
        # RE.abort()/stop(), a failed message or a bug: the engine's safe path first
        yield from bps.wait_for([lambda: asyncio.to_thread(blocks.abort_and_wait)])
        try:  # the blocks the engine delivered before it ended, and the file's last rows
            if blocks.bundling:  # interrupted between create and save: that event again
                yield from bps.drop()
                yield from _event(blocks)
            yield from _emit(blocks, hits)
            yield from _finish_hits(blocks, hits)
        except Exception:
            log.exception("could not emit the last blocks' documents")
        status = getattr(e, "exit_status", "fail")  # RE.stop() is a success to bluesky
        why = (blocks.result.reason if blocks.result is not None else "") or str(e) or type(
            e).__name__
        yield from bps.close_run(exit_status=status, reason=why)
        yield Msg("rewindable", None, rewindable)
        raise
    result, error = blocks.result, blocks.error
    if error is not None:
        yield from bps.close_run(exit_status="fail",
                                 reason=f"failed: {type(error).__name__}: {error}")
        yield Msg("rewindable", None, rewindable)
        raise error
    status = {State.DONE: "success", State.ABORTED: "abort"}.get(result.state, "fail")
    yield from bps.close_run(exit_status=status, reason=result.reason)
    yield Msg("rewindable", None, rewindable)
    return result
