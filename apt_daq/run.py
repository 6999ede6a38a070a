"""The acquisition engine: one engine for real and simulated runs.

States: idle -> connecting -> ramping -> acquiring <-> paused -> stopping -> safe -> done, or
failed / aborted. The engine knows only the driver interfaces (``drivers.open_instruments``);
the run file's ``drivers`` section picks sim, emulator or real backends.

Per readout block (one tick of the detection-rate feedback):

    raw = dld.read_chunk()  ->  pipeline.decode_chunk  ->  /log row
    rate = ions / pulses    ->  RateController  ->  hv.set_voltage (within limit and ramp)
    dld.arm()               ->  Decoded.records  ->  store.append  (while the next chunk fires)

Only the rows' assembly and the store overlap the next chunk: the decision that chunk is fired
with is already taken, so a run is byte-identical with or without the overlap.

Every way out, normal or not, ends in ``_make_safe``: laser emission off, HV output off, a last
/log row showing both off, the end state in /meta, the file closed.
"""

from __future__ import annotations

import enum
import logging
import math
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from apt_daq.config import FeedbackConfig, RunFile, load_run
from apt_daq.hits import DERIVED_DTYPE, HIT_DTYPE, empty
from apt_daq.io.store import LOG_DTYPE, RunWriter
from apt_daq.rangetable import table_to_meta

if TYPE_CHECKING:
    from apt_daq.drivers import Instruments

log = logging.getLogger(__name__)


class State(enum.IntEnum):
    IDLE = 0
    CONNECTING = 1
    RAMPING = 2
    ACQUIRING = 3
    PAUSED = 4
    STOPPING = 5
    SAFE = 6
    DONE = 7
    FAILED = 8
    ABORTED = 9


# ------------------------------------------------------------------------------ feedback
@dataclass
class RateController:
    """Integral control of V_dc on ln(target / rate), gain-scheduled by the measured
    d ln(rate) / d ln(V) (see :class:`apt_daq.config.FeedbackConfig`); output clamped to the
    HV limit, the ramp rate and the step size."""

    target: float
    cfg: FeedbackConfig
    limit_v: float
    ramp_v_per_s: float
    hv_max_step_v: float = math.inf  # the HV driver's largest single step
    sensitivity: float = 0.0
    _prev: tuple[float, float] | None = None  # (ln V, ln rate) of the previous block

    def __post_init__(self) -> None:
        self.sensitivity = self.cfg.sensitivity_initial

    def error(self, rate: float) -> float:
        """ln(target / rate), clipped: slowly up (no ions: +ln max_error_ratio), fast down
        (a burst of evaporation is what breaks specimens)."""
        up = math.log(self.cfg.max_error_ratio)
        if rate <= 0:
            return up
        return max(-4 * up, min(up, math.log(self.target / rate)))

    def _learn(self, v_now: float, rate: float) -> None:
        """Update the sensitivity from this block and the previous one (a smoothed secant),
        only in the evaporation regime and when the voltage moved enough to see it."""
        if rate < 0.1 * self.target or v_now <= 0:
            self._prev = None
            return
        here = (math.log(v_now), math.log(rate))
        if self._prev is not None:
            dlnv = here[0] - self._prev[0]
            if abs(dlnv) > 0.004:
                s = (here[1] - self._prev[1]) / dlnv
                if s > 0:
                    s = min(300.0, max(5.0, s))
                    self.sensitivity = math.exp(0.7 * math.log(self.sensitivity)
                                                + 0.3 * math.log(s))
        self._prev = here

    def update(self, rate: float, dt_s: float, v_now: float) -> float:
        """The next setpoint, V, given the last block's rate (ions/pulse) at ``v_now``;
        ``dt_s`` is the time since the last setpoint was sent (it bounds the ramp)."""
        self._learn(v_now, rate)
        dlnv = self.cfg.gain * self.error(rate) / self.sensitivity
        dv = max(v_now, 100.0) * math.expm1(dlnv)
        step = min(self.cfg.max_step_v, self.hv_max_step_v, self.ramp_v_per_s * dt_s)
        dv = max(-step, min(step, dv))
        return max(0.0, min(self.limit_v, v_now + dv))

    def reset(self) -> None:
        """Forget the previous block (after a laser step or a pause the plant has changed)."""
        self._prev = None


# ------------------------------------------------------------------------------ suspenders
@dataclass
class Suspender:
    """Pause the run while ``ok(instruments)`` is False; resume when it has been True again
    for ``settle_s`` (bluesky-style). ``ok`` must be cheap: it is polled once per block."""

    name: str
    ok: Callable[[Instruments], bool]
    settle_s: float = 0.0


def default_suspenders() -> list[Suspender]:
    def interlock_closed(ins: Instruments) -> bool:
        return not ins.laser.interlock_open()

    seen_dropped = [0]

    def detector_not_overflowing(ins: Instruments) -> bool:
        """False while the front end reports an overflow, and once after any block in which it
        dropped records (latched: a short overflow between two polls is not missed)."""
        dropped = int(ins.dld.counters.get("dropped", 0))
        grew, seen_dropped[0] = dropped > seen_dropped[0], dropped
        return not (grew or ins.dld.overflow())

    return [Suspender("laser interlock", interlock_closed),
            Suspender("detector overflow", detector_not_overflowing)]


# ------------------------------------------------------------------------------ result
@dataclass
class RunResult:
    state: State
    reason: str
    ions: int
    pulses: int
    path: Path | None
    voltage_range_v: tuple[float, float] = (0.0, 0.0)
    counters: dict[str, int] = field(default_factory=dict)


class RunAborted(Exception):
    pass


#: /log ``hv_on``/``laser_on`` when the state could not be read back after a failed safe-off
UNKNOWN_FLAG = 255


# ------------------------------------------------------------------------------ session
class Session:
    """A run from a run file, for scripts and the CLI.

    >>> with Session.from_yaml("configs/runs/nmc811-cr-5pj.yaml", out="a.h5") as s:
    ...     result = s.run()

    ``pause()``, ``resume()`` and ``abort()`` may be called from any thread (or a signal
    handler); they take effect at the next readout block.
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
        self.state = State.IDLE
        self.transitions: list[tuple[float, str, str]] = []
        self._pause = threading.Event()
        self._abort = threading.Event()
        self._writer: RunWriter | None = None
        self._pending: tuple | None = None  # (raw, truth, lost, Decoded) read, not yet stored
        self._counters = {"records": 0, "rejected": 0, "multi_hits": 0}
        self._v_seen = [math.inf, -math.inf]  # range of V_dc of the stored hits
        self._ins: Instruments | None = None
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
        self._pause.set()

    def resume(self) -> None:
        self._pause.clear()

    def abort(self) -> None:
        self._abort.set()

    def _abort_why(self) -> str:
        if self.signal is not None:
            return f"signal {signal.Signals(self.signal).name}"
        return "abort requested"

    # -- internals
    def _now_s(self) -> float:
        virtual = self._ins.virtual if self._ins is not None else None
        return virtual.now_s if virtual is not None else time.monotonic() - self._t0_wall

    def _to(self, state: State, why: str = "") -> None:
        old, self.state = self.state, state
        self.transitions.append((self._now_s() if self._ins else 0.0, state.name.lower(), why))
        log.info("state %s -> %s %s", old.name.lower(), state.name.lower(), why)
        if self._writer is not None:
            self._writer.set_meta("transitions", self.transitions)
            self._writer.flush()  # a viewer of the file sees a pause while it lasts

    def _wait(self, dt_s: float) -> None:
        """Let time pass: instrument time for the simulator, wall time for real hardware."""
        virtual = self._ins.virtual if self._ins is not None else None
        if virtual is not None:
            virtual.idle(dt_s)
        else:
            time.sleep(dt_s)

    def _log_row(self, *, rate: float, pulses: int, ions: int, step: int) -> np.ndarray:
        ins, writer = self._ins, self._writer
        assert ins is not None and writer is not None  # called only with both open
        row = np.zeros(1, LOG_DTYPE)
        row["time_s"] = self._now_s()
        row["v_dc"] = ins.hv.voltage()
        row["v_setpoint"] = self._v_set
        row["current_a"] = ins.hv.current()
        row["laser_pj"] = ins.laser.energy()
        row["rate"] = rate
        row["pulses"] = pulses
        row["ions"] = ions
        row["step"] = step
        row["hv_on"] = ins.hv.output_on()
        row["laser_on"] = ins.laser.emission_on()
        row["state"] = int(self.state)
        writer.log(row)
        return row

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

    def _run(self) -> RunResult:
        from apt_daq import drivers  # the engine knows drivers only through this factory
        from apt_daq.drivers.base import SimulatedDetector
        from apt_daq.pipeline import RangeLookup, decode_chunk

        cfg, r = self.cfg, self.cfg.run
        ranges = _load_ranges(cfg)
        lookup = RangeLookup.build(ranges)
        meta = {
            "config": cfg.model_dump(mode="json"),
            "instrument": cfg.instrument.model_dump(mode="json"),
            "seed": r.seed,
            "source": cfg.source,
            "simulated": any(d.backend == "sim" for d in (cfg.drivers.laser, cfg.drivers.hv,
                                                          cfg.drivers.dld)),
        }
        if ranges is not None:
            meta["ranges"] = table_to_meta(ranges)  # the run carries the ranges it was ranged with
        self._writer = RunWriter(self.out, meta, overwrite=self.overwrite)
        ions = pulses = 0
        self._v_set = 0.0
        self._fault_logged = False
        reason = ""
        self._pending = None
        counters = self._counters = {"records": 0, "rejected": 0, "multi_hits": 0}
        self._v_seen = [math.inf, -math.inf]
        self._to(State.CONNECTING)
        try:
            with drivers.open_instruments(cfg) as ins:
                self._ins = ins
                progress = None
                try:
                    hv, laser, dld = ins.hv, ins.laser, ins.dld
                    sim_dld = dld if isinstance(dld, SimulatedDetector) else None
                    if sim_dld is not None:
                        self._writer.set_meta("ion_table", [list(t) for t in sim_dld.ion_table])
                    ctl = RateController(r.target_detection_rate, r.feedback, min(hv.limit_v, (
                        r.stop.max_voltage_v or math.inf)), hv.ramp_v_per_s, hv.max_step_v)
                    self._to(State.RAMPING, f"to {r.start_voltage_v:g} V")
                    laser.set_pulse_rate(r.pulse_rate_hz)
                    hv.output(True)
                    hv.ramp_to(r.start_voltage_v)
                    self._v_set = r.start_voltage_v
                    dld.start()
                    steps = r.steps()
                    step_i, step_ions, step_t0 = 0, 0, self._now_s()
                    laser.set_energy(steps[0].laser_pj)
                    laser.emission(True)
                    self._to(State.ACQUIRING, f"step 0: {steps[0].laser_pj:g} pJ")
                    self._log_row(rate=0.0, pulses=0, ions=0, step=0)
                    settled, low_blocks = False, 0
                    if self.progress:
                        progress = _Progress(self, r)
                    while True:
                        if self._abort.is_set():
                            raise RunAborted(self._abort_why())
                        self._check_suspenders_and_pause(ctl)
                        if self._pending is not None:
                            # the next chunk fires (a simulator: on its own thread) while the last
                            # one's rows are built and stored; nothing touches the instruments
                            dld.arm()
                            self._store_pending()
                        pulses_before, dropped_before = dld.counters["pulses"], dld.counters.get(
                            "dropped", 0)
                        raw = dld.read_chunk(timeout_s=max(5.0, 3 * r.chunk_pulses / r.pulse_rate_hz))
                        truth = lost = None
                        if sim_dld is not None:
                            truth, lost = sim_dld.read_truth()
                        block_pulses = int(dld.counters["pulses"] - pulses_before)
                        dec = decode_chunk(raw, cfg.instrument, ranges, lookup=lookup)
                        counters["records"] += dec.counters["records"]
                        counters["rejected"] += dec.counters["rejected"]
                        self._pending = (raw, truth, lost, dec)
                        n = len(dec)
                        ions += n
                        step_ions += n
                        pulses += block_pulses
                        now = self._now_s()
                        rate = n / block_pulses if block_pulses else 0.0
                        row = self._log_row(rate=rate, pulses=pulses, ions=ions, step=step_i)
                        if progress:
                            progress.update(ions, rate, self._v_set, laser.energy(), step_i)
                        if self.on_block:
                            self.on_block(self, {
                                "rate": rate, "ions": ions, "pulses": pulses,
                                "v_set": self._v_set, "step": step_i,
                                "laser_pj": steps[step_i].laser_pj, "state": self.state.name,
                                "time_s": float(row["time_s"][0]),
                                "v_dc": float(row["v_dc"][0]),
                                "hv_on": bool(row["hv_on"][0]),
                                "laser_on": bool(row["laser_on"][0]),
                                # the block's online columns (views: copy what you keep)
                                "mass_da": dec.mass, "det_x_mm": dec.det_x,
                                "det_y_mm": dec.det_y, "ion": dec.ion})
                        if self.live_png:
                            self.last_rate = rate
                            _live(self, *dec.records(raw))
                        # -- stop conditions and fracture
                        if hv.tripped():
                            reason = f"fracture: HV supply tripped at {self._v_set:.0f} V"
                            self._to(State.FAILED, reason)
                            break
                        # a rate collapse is a fracture only if the detector saw the pulses: a
                        # block with dropped records (overflow) or no pulses says nothing
                        blind = block_pulses == 0 or dld.counters.get("dropped", 0) > dropped_before
                        settled = settled or rate > 0.5 * r.target_detection_rate
                        low_blocks = 0 if blind else low_blocks + 1 if (
                            settled and rate < r.fracture_rate_fraction * r.target_detection_rate
                        ) else 0
                        if r.stop.on_fracture and low_blocks >= r.fracture_blocks:
                            reason = f"fracture: detection rate collapsed at {self._v_set:.0f} V"
                            self._to(State.FAILED, reason)
                            break
                        if r.stop.ions and ions >= r.stop.ions:
                            reason = f"ion count {ions} reached"
                            break
                        if r.stop.instrument_time_s and now >= r.stop.instrument_time_s:
                            reason = f"instrument time {now:.0f} s reached"
                            break
                        step = steps[step_i]
                        if (step.ions and step_ions >= step.ions) or (
                                step.duration_s and now - step_t0 >= step.duration_s):
                            if step_i + 1 >= len(steps):
                                reason = f"schedule done ({len(steps)} steps)"
                                break
                            step_i, step_ions, step_t0 = step_i + 1, 0, now
                            new = steps[step_i].laser_pj
                            if new > laser.energy() and r.feedback.laser_step_backoff:
                                self._v_set = self._v_set * (1 - r.feedback.laser_step_backoff)
                                hv.ramp_to(self._v_set)
                            laser.set_energy(new)
                            ctl.reset()
                            self._to(State.ACQUIRING, f"step {step_i}: {new:g} pJ")
                            continue
                        # -- feedback; the step is bounded by what the HV driver allows now,
                        # on ITS clock (a real supply's is wall time even beside a sim DLD)
                        since_set = hv.allowed_step_v() / hv.ramp_v_per_s
                        v_next = hv.within_ramp(ctl.update(rate, since_set, self._v_set))
                        if r.stop.max_voltage_v and v_next >= r.stop.max_voltage_v:
                            reason = f"maximum voltage {r.stop.max_voltage_v:g} V reached"
                            break
                        hv.set_voltage(v_next)
                        self._v_set = v_next
                    self._store_pending()
                    if self.live_png:
                        from apt_daq.live import update_live_png

                        update_live_png(self, empty(HIT_DTYPE), empty(DERIVED_DTYPE), force=True)
                    fractured = self.state == State.FAILED
                    if not fractured:
                        self._to(State.STOPPING, reason)
                    if progress:
                        progress.close()
                    self._make_safe(ins, pulses, ions, step_i)
                    end = State.FAILED if fractured else State.DONE
                except BaseException:
                    if progress:
                        progress.close()
                    self._off_after_fault(ins, pulses, ions)
                    raise
        except (RunAborted, KeyboardInterrupt) as e:
            reason = f"aborted: {e}" if str(e) else "aborted"
            end = State.ABORTED
            self._safe_after_error(pulses, ions)
        except Exception as e:
            reason = f"failed: {type(e).__name__}: {e}"
            end = State.FAILED
            self._safe_after_error(pulses, ions)
            self._finish(end, reason, ions, pulses, counters)
            raise
        self._finish(end, reason, ions, pulses, counters)
        vr = (self._v_seen[0], self._v_seen[1]) if ions else (0.0, 0.0)
        return RunResult(end, reason, ions, pulses, self.out, vr, counters)

    def _store_pending(self) -> None:
        """Build the last chunk's rows and append them to the store (once, even if the append
        fails)."""
        pending, self._pending = self._pending, None
        if pending is None or self._writer is None:
            return
        raw, truth, lost, dec = pending
        hits, derived = dec.records(raw)
        self._counters["multi_hits"] += dec.counters["multi_hits"]
        if len(hits):
            v = hits["v_dc"]
            self._v_seen[:] = min(self._v_seen[0], float(v.min())), max(self._v_seen[1],
                                                                        float(v.max()))
        self._writer.append(raw=raw if self.cfg.run.store_raw else None, hits=hits,
                            derived=derived, lost=lost,
                            truth=None if truth is None else np.take(truth, dec.keep))

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
        self._to(State.ACQUIRING, f"resumed after {why}")

    def _make_safe(self, ins: Instruments, pulses: int, ions: int, step: int) -> None:
        ins.laser.safe_off()
        ins.hv.safe_off()
        self._v_set = 0.0
        self._to(State.SAFE, "HV and laser off")
        self._log_row(rate=0.0, pulses=pulses, ions=ions, step=step)

    def _off_after_fault(self, ins: Instruments, pulses: int, ions: int) -> None:
        """Any way out but the normal one (a fault, an abort, a signal): HV and laser off while
        the instruments are still open, then a /log row read back from them. Never raises (the
        fault is the error to report); a safe-off failure is logged and kept in /meta."""
        self._to(State.STOPPING, "fault or abort: HV and laser off")
        verified = True
        try:
            ins.safe_off()
        except Exception as e:
            verified = False
            log.error("safe off after the fault failed: %s", e)
            if self._writer is not None:
                self._writer.set_meta("safe_off_error", str(e))
        self._v_set = 0.0
        self._to(State.SAFE, "HV and laser off (after fault)" if verified else
                 "safe off FAILED after fault: see safe_off_error")
        self._fault_logged = True
        if self._writer is None:
            return
        try:
            self._log_row(rate=0.0, pulses=pulses, ions=ions, step=-1)
        except Exception:  # a dead link: the off state was read back by safe_off, if verified
            log.warning("could not read back instrument state after the fault")
            row = np.zeros(1, LOG_DTYPE)
            row["time_s"], row["pulses"], row["ions"], row["step"] = (
                self._now_s(), pulses, ions, -1)
            row["hv_on"] = row["laser_on"] = 0 if verified else UNKNOWN_FLAG
            row["state"] = int(self.state)
            self._writer.log(row)

    def _safe_after_error(self, pulses: int, ions: int) -> None:
        """The way out after leaving the instruments' block by an exception: if the fault came
        before the instruments were open, only the state is recorded."""
        if not self._fault_logged:
            self._v_set = 0.0
            self._to(State.SAFE, "no instrument was open")

    def _finish(self, end: State, reason: str, ions: int, pulses: int,
                counters: dict[str, int]) -> None:
        if self.state != end:
            self._to(end, reason)
        if self._writer is not None:
            try:
                self._store_pending()  # a fault or an abort between reading and storing
            except Exception:
                log.exception("could not store the last chunk")
            self._writer.set_meta("end_reason", reason)
            self._writer.set_meta("counters", {**counters, "ions": ions, "pulses": pulses})
            self._writer.finish(end.name.lower())
            self._writer.close()


def _load_ranges(cfg: RunFile) -> Any:
    path = cfg.resolve(cfg.analysis.ranges)
    if path is None:
        return None
    from apt_daq.io.ranges import read_ranges

    return read_ranges(path)


def _live(session: Session, hits: np.ndarray, derived: np.ndarray) -> None:
    from apt_daq.live import update_live_png

    update_live_png(session, hits, derived)


class _Progress:
    """The run's progress display: ions of the stop count, rate vs target, V, pJ, step, ETA.

    On a terminal, a rich bar on stderr, cleared when the run ends (the final lines then start
    on a clean line). While the run is paused it shows PAUSED, why, and the keys that resume
    (Enter, when ``session.enter_resumes``) or abort (Ctrl-C); the ETA stops, and it is
    computed from unpaused time only (the ion rate of the last minute of acquisition). Not on
    a terminal (a log file, CI), a plain line every 30 s and one at each pause and resume.
    """

    WINDOW_S = 60.0  # ion rate of the ETA: over this much unpaused time
    LOG_EVERY_S = 30.0  # not on a terminal: a status line this often

    def __init__(self, session: Session, r: Any, *, console: Any = None,
                 clock: Callable[[], float] = time.monotonic,
                 enter_resumes: bool | None = None):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self.session = session
        self.target = r.target_detection_rate
        self.total = r.stop.ions or None
        self.clock = clock
        self.enter_resumes = (bool(getattr(session, "enter_resumes", False))
                              if enter_resumes is None else enter_resumes)
        self.console = console or Console(stderr=True, soft_wrap=True, highlight=False)
        self._samples: list[tuple[float, int]] = []  # (clock, ions) since the last pause
        self._pauses = self._pause_count()
        self._status = ""
        self._last_line = -math.inf
        self._closed = threading.Event()
        self.p = None
        if self.console.is_terminal:
            outer = self

            class _EtaOrPaused(TextColumn):
                def render(self, task: Any) -> Any:
                    from rich.text import Text

                    if outer.marker():
                        return Text(outer.marker(), style="bold yellow")
                    return Text(f"{outer._status}  ETA {_clock_text(outer.eta_s())}")

            self.p = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                              MofNCompleteColumn(), _EtaOrPaused(""), console=self.console,
                              transient=True, refresh_per_second=4)
            self.task = self.p.add_task(r.name, total=self.total)
            self.p.start()
        else:
            threading.Thread(target=self._watch_pauses, daemon=True,
                             name="progress-pauses").start()

    def _pause_count(self) -> int:
        return sum(1 for t in list(self.session.transitions) if t[1] == "paused")

    def marker(self) -> str:
        """``PAUSED ...`` with the keys to resume or abort while the run is paused, else ''."""
        if self.session.state != State.PAUSED:
            return ""
        why = next((t[2] for t in reversed(list(self.session.transitions)) if t[1] == "paused"),
                   "")
        if why == "pause requested":
            keys = "Enter resumes, " if self.enter_resumes else ""
            return f"PAUSED (laser off, HV held): {keys}Ctrl-C again aborts safely"
        return (f"PAUSED ({why}): resumes when it clears (laser off, HV held); "
                "Ctrl-C twice aborts safely")

    def eta_s(self) -> float | None:
        """Seconds to the stop count at the recent unpaused ion rate; None while paused or
        before the rate is known."""
        if self.total is None or self.session.state == State.PAUSED or len(self._samples) < 2:
            return None
        (t0, n0), (t1, n1) = self._samples[0], self._samples[-1]
        if t1 <= t0 or n1 <= n0:
            return None
        return max(0, self.total - n1) / ((n1 - n0) / (t1 - t0))

    def update(self, ions: int, rate: float, v: float, pj: float, step: int) -> None:
        now = self.clock()
        pauses = self._pause_count()
        if pauses != self._pauses:  # paused since the last block: the rate starts afresh
            self._pauses, self._samples = pauses, []
        self._samples.append((now, ions))
        while self._samples[-1][0] - self._samples[0][0] > self.WINDOW_S:
            self._samples.pop(0)
        self._status = (f"rate {100 * rate:.3f}% (target {100 * self.target:.2f}%)  "
                        f"V {v:7.0f}  {pj:5.1f} pJ  step {step}")
        if self.p is not None:
            self.p.update(self.task, completed=ions)
        elif now - self._last_line >= self.LOG_EVERY_S:
            self._last_line = now
            of = f"/{self.total}" if self.total else ""
            self.console.print(f"{ions}{of} ions  {self._status}  "
                               f"ETA {_clock_text(self.eta_s())}")

    def _watch_pauses(self) -> None:
        """Not on a terminal: one line when the run pauses and one when it resumes."""
        shown = ""
        while not self._closed.wait(0.25):
            now = self.marker()
            if now != shown:
                if now or self.session.state == State.ACQUIRING:
                    self.console.print(now or "resumed")
                shown = now

    def close(self) -> None:
        self._closed.set()
        if self.p is not None:
            p, self.p = self.p, None
            p.stop()  # transient: the bar is cleared, the cursor at the start of its line


def _clock_text(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "-:--:--"
    h, rest = divmod(int(seconds), 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}"


#: the signals that end a run, and the exit code of a CLI run each of them ended (128 + n)
END_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGHUP, signal.SIGQUIT, signal.SIGTERM,
                                           signal.SIGINT)


def install_signals(session: Session) -> Callable[[], None]:
    """Handle the signals a lab sends for the run's duration; returns the restorer.

    SIGHUP (the SSH session dropped), SIGQUIT and SIGTERM abort the run; SIGINT pauses it at
    the next block if ``session.sigint_pauses`` (Ctrl-C again aborts), else aborts. An abort
    ends like every other way out: HV output and laser emission off, a last /log row showing
    both off, /meta state ``aborted``. While the run is connecting or ramping (long blocking
    driver calls) the handler raises :class:`RunAborted` at once; while acquiring it takes
    effect at the next readout block. After SIGHUP the terminal is gone: stdout and stderr
    are pointed at /dev/null so a late print cannot fail the safe shutdown.

    Does nothing off the main thread (Python delivers signals there only).
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    presses = [0]

    def on_signal(signum: int, frame: object) -> None:
        if signum == signal.SIGINT and session.sigint_pauses:
            if not session._pause.is_set():
                presses[0] = 0  # resumed since the last Ctrl-C: this one pauses again
            presses[0] += 1
            if presses[0] == 1:
                session.pause()
                log.warning("Ctrl-C: pausing at the next block (Ctrl-C again aborts safely)")
                return
        if signum == signal.SIGHUP:
            _detach_terminal()
        first = session.signal is None
        if first:
            session.signal = signum
        session.abort()
        if first and session.state in (State.CONNECTING, State.RAMPING):
            raise RunAborted(session._abort_why())

    old = {s: signal.signal(s, on_signal) for s in END_SIGNALS}

    def restore() -> None:
        for s, h in old.items():
            signal.signal(s, h)

    return restore


def install_sigint(session: Session) -> Callable[[], None]:
    """Kept for scripts written against the old name: :func:`install_signals`."""
    return install_signals(session)


def _detach_terminal() -> None:
    """Point stdout and stderr at /dev/null if they are a terminal (after SIGHUP it is gone)."""
    import os
    import sys

    try:
        null = os.open(os.devnull, os.O_WRONLY)
    except OSError:
        return
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None and stream.isatty():
                stream.flush()
                os.dup2(null, stream.fileno())
        except (OSError, ValueError):
            pass
    os.close(null)
