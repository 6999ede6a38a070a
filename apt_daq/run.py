"""The acquisition engine: one engine for real and simulated runs.

States: idle -> connecting -> ramping -> acquiring <-> paused -> stopping -> safe -> done, or
failed / aborted. The engine knows only the driver interfaces (``drivers.open_instruments``);
the run file's ``drivers`` section picks sim, emulator or real backends.

Per readout block (one tick of the detection-rate feedback):

    raw = dld.read_chunk()  ->  pipeline.decode_chunk  ->  /log row
    rate = ions / pulses    ->  RateController  ->  hv.set_voltage (within limit and ramp)
                            ->  BlockSizer      ->  the next block's pulses (engine.blocks)
    dld.arm()               ->  Decoded.records  ->  store.append  (while the next chunk fires)

Only the rows' assembly and the store overlap the next chunk: the decision that chunk is fired
with (its voltage and its size) is already taken, so a run is byte-identical with or without
the overlap. Rows reach the store in whole HDF5 chunks (engine.rowbuffer); with
``summary=True`` the end-of-run summary is counted from them as they go (engine.tally).

Every way out, normal or not, ends in ``_make_safe``: laser emission off, HV output off, a last
/log row showing both off, the end state in /meta, the file closed.
"""

from __future__ import annotations

import logging
import math
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from apt_daq.config import RunFile, load_run
from apt_daq.engine.blocks import BlockSizer, PacedDetector
from apt_daq.engine.feedback import RateController
from apt_daq.engine.loop import Acquisition, Block, load_ranges, run_meta
from apt_daq.engine.progress import Progress as _Progress
from apt_daq.engine.progress import clock_text as _clock_text
from apt_daq.engine.record import UNKNOWN_FLAG, RunRecord
from apt_daq.engine.rowbuffer import RowBuffer
from apt_daq.engine.signals import END_SIGNALS, _detach_terminal, install_sigint, install_signals
from apt_daq.engine.states import RunAborted, RunResult, State
from apt_daq.engine.suspenders import Suspender, default_suspenders
from apt_daq.engine.tally import RunTally
from apt_daq.hits import DERIVED_DTYPE, HIT_DTYPE, empty
from apt_daq.io.store import RunWriter

if TYPE_CHECKING:
    from apt_daq.drivers import Instruments
    from apt_daq.pipeline import Decoded

__all__ = ["END_SIGNALS", "UNKNOWN_FLAG", "RateController", "RunAborted", "RunResult", "Session",
           "State", "Suspender", "default_suspenders", "install_sigint", "install_signals"]
_REEXPORTED = (_Progress, _clock_text, _detach_terminal)  # older private names, still importable

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------ session
class Session(RunRecord):
    """A run from a run file, for scripts and the CLI.

    >>> with Session.from_yaml("configs/runs/nmc811-cr-5pj.yaml", out="a.h5") as s:
    ...     result = s.run()

    ``pause()``, ``resume()`` and ``abort()`` may be called from any thread (or a signal
    handler); they take effect at the next readout block. ``summary=True``: count the
    end-of-run summary (composition in the ROI) from the stream, ``RunResult.tally``.
    """

    def __init__(
        self,
        run_file: RunFile,
        out: str | Path | None = None,
        *,
        overwrite: bool = False,
        progress: bool = False,
        live_png: str | Path | None = None,
        suspenders: list[Suspender] | None = None,
        on_block: Callable[[Session, dict[str, Any]], None] | None = None,
        handle_signals: bool = True,
        sigint_pauses: bool = True,
        summary: bool = False,
    ):
        self.cfg = run_file
        self.out = Path(out) if out else Path("runs") / f"{run_file.run.name}.h5"
        self.overwrite = overwrite
        self.progress = progress
        self.live_png = Path(live_png) if live_png else None
        self.suspenders = default_suspenders() if suspenders is None else suspenders
        self.on_block = on_block
        self.handle_signals = handle_signals
        self.sigint_pauses = sigint_pauses
        self.signal: int | None = None  # the signal that ended the run, if one did
        self.late_signal: int | None = None  # one that came once it had ended
        self.state = State.IDLE
        self.transitions: list[tuple[float, str, str]] = []
        self._pause = threading.Event()
        self._abort = threading.Event()
        self._ramp_pauses = 0  # pauses that stopped a ramp-up (pause() counts them)
        self._writer: RunWriter | None = None
        self._pending: tuple | None = None  # (raw, truth, lost, Decoded) read, not yet stored
        self._counters = {"records": 0, "rejected": 0, "multi_hits": 0}
        self._v_seen = [math.inf, -math.inf]  # range of V_dc of the stored hits
        self._ins: Instruments | None = None
        self._rowbuf = RowBuffer()
        self.summary = summary  # tally the end-of-run summary from the stream (RunResult.tally)
        self._tally: RunTally | None = None
        self._paced: PacedDetector | None = None  # a detector whose blocks the engine sizes
        self._sizer = BlockSizer(run_file.run.chunk_pulses, None, None, 1.0)
        self._fault_logged = False
        self._t0_wall = time.monotonic()

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: dict[str, Any] | None = None,
                  **kw: Any) -> Session:
        return cls(load_run(path, overrides), **kw)

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.state not in (State.DONE, State.FAILED, State.ABORTED, State.IDLE):
            self.abort()

    # -- control (any thread)
    def pause(self) -> None:
        """Pause at the next block (laser off, HV held); while the HV ramps up, at once: the
        ramp stops at its next step and holds there until :meth:`resume`."""
        self._pause.set()
        ins = self._ins
        if ins is not None and self.state == State.RAMPING:
            self._ramp_pauses += 1  # this Interrupted is a pause's, even if resumed at once
            ins.hv.abort_ramp()

    def resume(self) -> None:
        self._pause.clear()

    def abort(self) -> None:
        """End the run safely: at the next block, or at once while the HV ramps (the ramp is
        stopped at its next step)."""
        self._abort.set()
        ins = self._ins
        if ins is not None:
            ins.hv.abort_ramp()

    def _abort_why(self) -> str:
        if self.signal is not None:
            return f"signal {signal.Signals(self.signal).name}"
        return "abort requested"

    # -- the run
    def run(self) -> RunResult:
        """Acquire until a stop condition, a fault, an abort or a signal; always ends with HV
        and laser off. Called on the main thread (and ``handle_signals``), it handles SIGHUP,
        SIGQUIT, SIGTERM and SIGINT for the run's duration (see :func:`install_signals`)."""
        restore = install_signals(self) if self.handle_signals else (lambda: None)
        try:
            return self._run()
        finally:
            restore()
            if self.late_signal is not None:  # after the end: to the handler before the run's
                signal.raise_signal(self.late_signal)

    def _run(self) -> RunResult:
        from apt_daq.pipeline import RangeLookup

        ranges = load_ranges(self.cfg)
        acq = Acquisition(ranges, RangeLookup.build(ranges))
        self._open_writer(ranges)
        self._v_set = 0.0
        self._fault_logged = False
        self._pending = None
        self._rowbuf = RowBuffer()
        self._tally = self._new_tally(ranges)
        counters = self._counters = {"records": 0, "rejected": 0, "multi_hits": 0}
        self._v_seen = [math.inf, -math.inf]
        self._to(State.CONNECTING)
        try:
            end = self._with_instruments(acq)
        except (RunAborted, KeyboardInterrupt) as e:
            acq.reason = f"aborted: {e}" if str(e) else "aborted"
            end = State.ABORTED
            self._safe_after_error(acq.pulses, acq.ions)
        except Exception as e:
            acq.reason = f"failed: {type(e).__name__}: {e}"
            self._safe_after_error(acq.pulses, acq.ions)
            self._finish(State.FAILED, acq.reason, acq.ions, acq.pulses, counters)
            self._raise_fault(e)
        self._finish(end, acq.reason, acq.ions, acq.pulses, counters)
        vr = (self._v_seen[0], self._v_seen[1]) if acq.ions else (0.0, 0.0)
        w = self._writer  # an old file kept: the run is set aside (kept_as), or nowhere
        out = w.kept_as if w is not None and w.kept_previous else self.out
        return RunResult(end, acq.reason, acq.ions, acq.pulses, out, vr,
                         counters, self._finish_tally())

    def _new_tally(self, ranges: Any) -> RunTally | None:
        """The summary's tally, when asked for and the stream can give it (else: read back)."""
        try:
            if not (self.summary and RunTally.applies(self.cfg, ranges)):
                return None
            return RunTally(self.cfg, ranges, run_meta(self.cfg, ranges))
        except Exception as e:  # an ROI the analysis would refuse: the file is read back
            log.warning("no end-of-run summary from the stream: %s", e)
            return None

    def _finish_tally(self) -> RunTally | None:
        tally, self._tally = self._tally, None
        if tally is None:
            return None
        try:
            return tally.finish()
        except Exception as e:
            log.warning("end-of-run summary from the stream dropped (%s)", e)
            return None

    def _open_writer(self, ranges: Any) -> None:
        self._writer = RunWriter(self.out, run_meta(self.cfg, ranges), overwrite=self.overwrite)

    def _with_instruments(self, acq: Acquisition) -> State:
        """Open the instruments, ramp, acquire block by block until a stop reason, end safe;
        the end state. Any exception: HV and laser off first, then it propagates."""
        from apt_daq import drivers  # the engine knows drivers only through this factory

        with drivers.open_instruments(self.cfg) as ins:
            self._ins = ins
            try:
                ctl = self._ramp(ins, acq)
                if self.progress:
                    acq.progress = _Progress(self, self.cfg.run)
                while not acq.reason:
                    self._one_block(ins, ctl, acq)
                return self._wind_down(ins, acq)
            except BaseException:
                if acq.progress:
                    acq.progress.close()
                self._off_after_fault(ins, acq.pulses, acq.ions)
                raise

    def _ramp(self, ins: Instruments, acq: Acquisition) -> RateController:
        """HV on and ramped to the start voltage, the DLD started, the first step's laser
        energy set and emission on; the feedback that takes over from there."""
        from apt_daq.drivers.base import Interrupted, SimulatedDetector

        r = self.cfg.run
        hv, laser, dld = ins.hv, ins.laser, ins.dld
        acq.sim_dld = dld if isinstance(dld, SimulatedDetector) else None
        if acq.sim_dld is not None:
            assert self._writer is not None
            self._writer.set_meta("ion_table", [list(t) for t in acq.sim_dld.ion_table])
        ctl = RateController(r.target_detection_rate, r.feedback, min(hv.limit_v, (
            r.stop.max_voltage_v or math.inf)), hv.ramp_v_per_s, hv.max_step_v)
        self._paced = dld if isinstance(dld, PacedDetector) else None
        buffer = self._paced.max_chunk_records if self._paced is not None else None
        self._sizer = BlockSizer(r.chunk_pulses, r.max_block_pulses, buffer,
                                 r.target_detection_rate)
        self._to(State.RAMPING, f"to {r.start_voltage_v:g} V")
        laser.set_pulse_rate(r.pulse_rate_hz)
        self._hold_ramp("before the HV came on")  # asked before the run: HV still off
        hv.output(True)
        while True:
            pauses = self._ramp_pauses
            try:
                hv.ramp_to(r.start_voltage_v)
                break
            except Interrupted:  # abort() or pause() stopped the ramp (a pause resumed
                if not self._hold_ramp() and pauses == self._ramp_pauses:  # already: ramp on)
                    raise  # an off
        if self._abort.is_set():
            raise RunAborted(f"{self._abort_why()} while ramping")
        self._v_set = r.start_voltage_v
        dld.start()
        steps = r.steps()
        acq.step_t0 = self._now_s()
        laser.set_energy(steps[0].laser_pj)
        if not self._pause.is_set():  # paused meanwhile: the first block pauses, still dark
            laser.emission(True)
        self._to(State.ACQUIRING, f"step 0: {steps[0].laser_pj:g} pJ")
        self._log_row(rate=0.0, pulses=0, ions=0, step=0)
        return ctl

    def _hold_ramp(self, when: str = "while ramping") -> bool:
        """After a ramp-up's :class:`Interrupted` (or before the HV comes on): RunAborted if
        :meth:`abort` was asked; if :meth:`pause` was, wait paused (the HV held where the ramp
        stopped, the laser still dark) until resumed (True); else False."""
        if self._abort.is_set():
            raise RunAborted(f"{self._abort_why()} {when}") from None
        if not self._pause.is_set():
            return False
        self._to(State.PAUSED, f"pause requested {when}")
        while not self._abort.is_set():
            if not self._pause.is_set():
                self._to(State.RAMPING, "resumed")
                return True
            time.sleep(0.05)
        raise RunAborted(f"{self._abort_why()} while paused {when}") from None

    def _one_block(self, ins: Instruments, ctl: RateController, acq: Acquisition) -> None:
        """One tick: abort and pause checks, a readout block, then the first of: a stop
        reason, a schedule step, a feedback step."""
        if self._abort.is_set():
            raise RunAborted(self._abort_why())
        self._check_suspenders_and_pause(ctl)
        blk = self._acquire_block(ins, acq)
        if self._stop_reason(ins, acq, blk):
            return
        if self._schedule_step(ins, ctl, acq, blk.now_s):
            return
        self._feedback_step(ins, ctl, acq, blk)

    def _acquire_block(self, ins: Instruments, acq: Acquisition) -> Block:
        """Read one block (the last one's rows are stored while it fires), decode it, log it
        and tell the watchers (progress, on_block, live PNG)."""
        from apt_daq.pipeline import decode_chunk

        cfg, r, dld = self.cfg, self.cfg.run, ins.dld
        if self._pending is not None:
            # the next chunk fires (a simulator: on its own thread) while the last one's rows
            # are built and stored; nothing touches the instruments
            dld.arm()
            self._store_pending(everything=False)
        pulses_before, dropped_before = dld.counters["pulses"], dld.counters.get("dropped", 0)
        block = self._paced.chunk_pulses if self._paced is not None else r.chunk_pulses
        raw = dld.read_chunk(timeout_s=max(5.0, 3 * block / r.pulse_rate_hz))
        truth = lost = None
        if acq.sim_dld is not None:
            truth, lost = acq.sim_dld.read_truth()
        block_pulses = int(dld.counters["pulses"] - pulses_before)
        dec = decode_chunk(raw, cfg.instrument, acq.ranges, lookup=acq.lookup)
        self._counters["records"] += dec.counters["records"]
        self._counters["rejected"] += dec.counters["rejected"]
        self._pending = (raw, truth, lost, dec)
        n = len(dec)
        acq.ions += n
        acq.step_ions += n
        acq.pulses += block_pulses
        rate = n / block_pulses if block_pulses else 0.0
        row = self._log_row(rate=rate, pulses=acq.pulses, ions=acq.ions, step=acq.step_i)
        self._tell_watchers(ins, acq, rate, row, raw, dec)
        # a rate collapse is a fracture only if the detector saw the pulses: a block with
        # dropped records (overflow) or no pulses says nothing
        blind = block_pulses == 0 or dld.counters.get("dropped", 0) > dropped_before
        return Block(rate, block_pulses, blind, self._now_s(), dec.counters["records"])

    def _tell_watchers(self, ins: Instruments, acq: Acquisition, rate: float, row: np.ndarray,
                       raw: np.ndarray, dec: Decoded) -> None:
        if acq.progress:
            acq.progress.update(acq.ions, rate, self._v_set, ins.laser.energy(), acq.step_i)
        if self.on_block:
            self.on_block(self, {
                "rate": rate, "ions": acq.ions, "pulses": acq.pulses,
                "v_set": self._v_set, "step": acq.step_i,
                "laser_pj": self.cfg.run.steps()[acq.step_i].laser_pj,
                "state": self.state.name, "time_s": float(row["time_s"][0]),
                "v_dc": float(row["v_dc"][0]), "hv_on": bool(row["hv_on"][0]),
                "laser_on": bool(row["laser_on"][0]),
                # the block's online columns (views: copy what you keep)
                "mass_da": dec.mass, "det_x_mm": dec.det_x,
                "det_y_mm": dec.det_y, "ion": dec.ion})
        if self.live_png:
            self.last_rate = rate
            _live(self, *dec.records(raw))

    def _stop_reason(self, ins: Instruments, acq: Acquisition, blk: Block) -> bool:
        """Fracture (HV trip, a collapsed rate) or a stop condition: sets ``acq.reason``."""
        r = self.cfg.run
        if ins.hv.tripped():
            acq.reason = f"fracture: HV supply tripped at {self._v_set:.0f} V"
            self._to(State.FAILED, acq.reason)
            return True
        acq.settled = acq.settled or blk.rate > 0.5 * r.target_detection_rate
        low = acq.settled and blk.rate < r.fracture_rate_fraction * r.target_detection_rate
        acq.low_blocks = 0 if blk.blind else acq.low_blocks + 1 if low else 0
        if r.stop.on_fracture and acq.low_blocks >= r.fracture_blocks:
            acq.reason = f"fracture: detection rate collapsed at {self._v_set:.0f} V"
            self._to(State.FAILED, acq.reason)
        elif r.stop.ions and acq.ions >= r.stop.ions:
            acq.reason = f"ion count {acq.ions} reached"
        elif r.stop.instrument_time_s and blk.now_s >= r.stop.instrument_time_s:
            acq.reason = f"instrument time {blk.now_s:.0f} s reached"
        return bool(acq.reason)

    def _schedule_step(self, ins: Instruments, ctl: RateController, acq: Acquisition,
                       now_s: float) -> bool:
        """The next laser-energy step when this one's ions or duration are done (the voltage
        backed off before an increase); the schedule's end is a stop reason."""
        r = self.cfg.run
        steps = r.steps()
        step = steps[acq.step_i]
        if not ((step.ions and acq.step_ions >= step.ions) or (
                step.duration_s and now_s - acq.step_t0 >= step.duration_s)):
            return False
        if acq.step_i + 1 >= len(steps):
            acq.reason = f"schedule done ({len(steps)} steps)"
            return True
        acq.step_i, acq.step_ions, acq.step_t0 = acq.step_i + 1, 0, now_s
        new = steps[acq.step_i].laser_pj
        if new > ins.laser.energy() and r.feedback.laser_step_backoff:
            self._v_set = self._v_set * (1 - r.feedback.laser_step_backoff)
            ins.hv.ramp_to(self._v_set)
        ins.laser.set_energy(new)
        ctl.reset()
        self._base_block()
        self._to(State.ACQUIRING, f"step {acq.step_i}: {new:g} pJ")
        return True

    def _feedback_step(self, ins: Instruments, ctl: RateController, acq: Acquisition,
                       blk: Block) -> None:
        """The next setpoint (with the drift carried forward over a settled block) and the
        next block's size; the step is bounded by what the HV driver allows now, on ITS clock
        (a real supply's is wall time even beside a sim DLD), and by the feedback's step."""
        hv, r = ins.hv, self.cfg.run
        since_set = hv.allowed_step_v() / hv.ramp_v_per_s
        v_fb = ctl.update(blk.rate, since_set, self._v_set)
        if self._paced is not None:
            self._sizer.record(self._v_set, blk.rate, ctl.sensitivity, blk.pulses)
            self._paced.chunk_pulses = self._next_pulses(acq, ctl, blk)
            step = min(r.feedback.max_step_v, hv.max_step_v)
            v_ff = min(ctl.limit_v, v_fb * math.exp(self._sizer.feed_forward(blk.pulses)))
            v_fb = max(self._v_set - step, min(self._v_set + step, v_ff))
        v_next = hv.within_ramp(v_fb)
        if r.stop.max_voltage_v and v_next >= r.stop.max_voltage_v:
            acq.reason = f"maximum voltage {r.stop.max_voltage_v:g} V reached"
            return
        hv.set_voltage(v_next)
        self._v_set = v_next

    def _next_pulses(self, acq: Acquisition, ctl: RateController, blk: Block) -> int:
        """The next block's pulses (:mod:`apt_daq.engine.blocks`): what is left of the stop
        count, the instrument time and the schedule step bounds it."""
        r = self.cfg.run
        step = r.steps()[acq.step_i]
        ions_left = min(x for x in (r.stop.ions and r.stop.ions - acq.ions, step.ions and
                                    step.ions - acq.step_ions, math.inf) if x)
        s_left = min(x for x in (r.stop.instrument_time_s and r.stop.instrument_time_s -
                                 blk.now_s, step.duration_s and step.duration_s -
                                 (blk.now_s - acq.step_t0), math.inf) if x)
        return self._sizer.next(rate=blk.rate, pulses=blk.pulses, records=blk.records,
                                sensitivity=ctl.sensitivity, ions_left=ions_left,
                                pulses_left=s_left * r.pulse_rate_hz)

    def _base_block(self) -> None:
        """Back to the base block: the plant changed (a laser step, a pause)."""
        self._sizer.reset()
        if self._paced is not None:
            self._paced.chunk_pulses = self._sizer.pulses

    def _wind_down(self, ins: Instruments, acq: Acquisition) -> State:
        """After a stop reason: the last rows stored, the live PNG redrawn, HV and laser off."""
        self._store_pending()
        if self.live_png:
            from apt_daq.live import update_live_png

            update_live_png(self, empty(HIT_DTYPE), empty(DERIVED_DTYPE), force=True)
        fractured = self.state == State.FAILED
        if not fractured:
            self._to(State.STOPPING, acq.reason)
        if acq.progress:
            acq.progress.close()
        self._make_safe(ins, acq.pulses, acq.ions, acq.step_i)
        return State.FAILED if fractured else State.DONE

    def _check_suspenders_and_pause(self, ctl: RateController) -> None:
        ins = self._ins
        assert ins is not None  # called only inside the instruments' block
        failing = [s for s in self.suspenders if not s.ok(ins)]
        if not failing and not self._pause.is_set():
            return
        self._store_pending()  # a pause may be long: what was measured goes to disk now
        why = ", ".join(s.name for s in failing) or "pause requested"
        self._to(State.PAUSED, why)
        if ins.laser.emission_on():
            ins.laser.emission(False)
        poll = 0.5
        while True:
            if self._abort.is_set():
                raise RunAborted(f"{self._abort_why()} while paused ({why})")
            failing = [s for s in self.suspenders if not s.ok(ins)]
            if not failing and not self._pause.is_set():
                settle = max((s.settle_s for s in self.suspenders), default=0.0)
                if settle:
                    self._wait(settle)
                break
            self._wait(poll)
            time.sleep(0.05)  # paused: do not spin, whatever clock the instruments run on
        ins.laser.emission(True)
        ctl.reset()
        self._base_block()
        self._to(State.ACQUIRING, f"resumed after {why}")




def _live(session: Session, hits: np.ndarray, derived: np.ndarray) -> None:
    from apt_daq.live import update_live_png

    update_live_png(session, hits, derived)
