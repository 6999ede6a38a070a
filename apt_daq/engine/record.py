"""What a session keeps on record: its state changes, the /log rows, the stored rows, and
every way out ending safe (laser emission off, HV output off, a last /log row showing both off,
the end state in /meta, the file closed). :class:`apt_daq.run.Session` is a ``RunRecord``."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import numpy as np

from apt_daq.drivers.errors import SAFE_OFF_RECORD, DriverError
from apt_daq.engine.rowbuffer import RowBuffer
from apt_daq.engine.states import UNKNOWN_FLAG, State
from apt_daq.engine.tally import RunTally
from apt_daq.io.store import LOG_DTYPE, RunWriter

if TYPE_CHECKING:
    from apt_daq.config import RunFile
    from apt_daq.drivers import Instruments

log = logging.getLogger("apt_daq.run")


class NotVerifiedOff(DriverError):
    """A fault after which the safe off could not be confirmed by the instrument (its link
    gone, its reply wrong): check the HV and the laser at the instrument."""

    def __init__(self, off: Exception, fault: Exception) -> None:
        after = "" if str(off) == str(fault) else f"; after: {fault}"  # the off was the fault
        Exception.__init__(self, f"{off} - NOT verified off, check the instrument{after}")
        self.instrument, self.command, self.detail, self.reply = "", None, str(off), None


class RunRecord:
    """The record-keeping half of a session (the acquisition half is ``Session``)."""

    cfg: RunFile
    state: State
    transitions: list[tuple[float, str, str]]
    _writer: RunWriter | None
    _ins: Instruments | None
    _pending: tuple | None  # (raw, truth, lost, Decoded) read, not yet stored
    _counters: dict[str, int]
    _v_seen: list[float]  # range of V_dc of the stored hits
    _v_set: float
    _fault_logged: bool
    _t0_wall: float
    _tally: RunTally | None  # the end-of-run summary's counts, block by block
    _rowbuf: RowBuffer  # rows built, not yet appended (whole HDF5 chunks go out)
    _off_failed: Exception | None = None  # HV/laser off not confirmed after a fault

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


    def _store_pending(self, everything: bool = True) -> None:
        """Build the last block's rows and hand them to the store: whole HDF5 chunks, or
        ``everything`` buffered (:mod:`apt_daq.engine.rowbuffer`); once, even if the append
        fails."""
        pending, self._pending = self._pending, None
        if self._writer is None:
            return
        if pending is not None:
            raw, truth, lost, dec = pending
            hits, derived = dec.records(raw)
            self._counters["multi_hits"] += dec.counters["multi_hits"]
            if len(hits):
                v = hits["v_dc"]
                self._v_seen[:] = min(self._v_seen[0], float(v.min())), max(self._v_seen[1],
                                                                            float(v.max()))
            if self._tally is not None:
                self._tally_add(hits)
            blocks = dict(raw=raw if self.cfg.run.store_raw else None, hits=hits,
                          derived=derived, lost=lost,
                          truth=None if truth is None else np.take(truth, dec.keep))
        else:
            blocks = {}
        rounds: list[dict[str, np.ndarray]] = []  # one append (one flush) per round
        for name, rows in self._rowbuf.put(everything, **blocks):
            free = next((r for r in rounds if name not in r), None)
            if free is None:
                rounds.append(free := {})
            free[name] = rows
        for due in rounds:
            self._writer.append(**due)

    def _tally_add(self, hits: np.ndarray) -> None:
        """The summary's counts of the block; a failure drops the tally, never the run."""
        assert self._tally is not None
        try:
            self._tally.add(hits)
        except Exception as e:
            log.warning("end-of-run summary from the stream dropped (%s): it is read back from "
                        "the file", e)
            self._tally = None

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
            if ins.off_unverified:  # the error the run raises leads with it
                self._off_failed = e
            log.error("safe off after the fault failed: %s", e, extra=SAFE_OFF_RECORD)
            if self._writer is not None:
                self._writer.set_meta("safe_off_error", str(e))
        self._v_set = 0.0
        self._to(State.SAFE, "HV and laser off (after fault)" if verified else
                 "safe off FAILED after fault: see safe_off_error")
        self._fault_logged = True
        if self._writer is None:
            return
        try:
            if not verified:  # its links are gone: each read would wait out their deadlines
                raise RuntimeError("safe off not verified")
            self._log_row(rate=0.0, pulses=pulses, ions=ions, step=-1)
        except Exception:  # a dead link: the off state was read back by safe_off, if verified
            if verified:
                log.warning("could not read back instrument state after the fault")
            row = np.zeros(1, LOG_DTYPE)
            row["time_s"], row["pulses"], row["ions"], row["step"] = (
                self._now_s(), pulses, ions, -1)
            row["hv_on"] = row["laser_on"] = 0 if verified else UNKNOWN_FLAG
            row["state"] = int(self.state)
            self._writer.log(row)

    def _raise_fault(self, fault: Exception) -> None:
        """Raise the run's fault, or when HV and laser could not be verified off after it,
        an error that says so first: the one line a user reads leads with the safety fact,
        not with the detector link that failed before it."""
        off, self._off_failed = self._off_failed, None
        if off is None or off is fault:
            raise fault
        raise NotVerifiedOff(off, fault) from fault

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
            # a fracture is the measurement's end, not an error: it replaces an old file
            self._writer.finish(end.name.lower(), result=end is State.DONE or (
                end is State.FAILED and reason.startswith("fracture")))
            self._writer.close()
