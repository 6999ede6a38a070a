"""The HIL emulator's pulse clock (:class:`PulseClock`, mixed into
:class:`apt_daq.sim.hil_emulator.Emulator`): pieces of pulses fired in real time while the DLD
acquires and the laser emits, readout blocks delivered on the DLD stream, status frames while
the front end overflows; and the kernels' warm-up before serving."""

from __future__ import annotations

import math
import sys
import threading
import time
from collections.abc import Callable, Generator
from typing import Any

import numpy as np
from apt_daq.sim.devices import History
from apt_daq.sim.dld_server import DldStreamServer
from apt_daq.sim.faults import (
    Fault,
)
from apt_daq.sim.instrument import SimBlock, VirtualLeap

from apt_daq.config import InstrumentConfig, SpecimenConfig
from apt_daq.hits import RAW_DTYPE


class PulseClock:
    """The emulator's pulse clock; the state it uses is the emulator's (declared here)."""

    lock: threading.RLock
    leap: VirtualLeap
    servers: dict[str, Any]
    env: Any
    speed: float
    block_pulses: int
    piece_pulses: int
    tick_s: float
    records: int
    blocks: int
    block_log: History
    on_block: Callable[[SimBlock, Any], None] | None
    event: Callable[[str], None]
    status: Callable[[], Any]
    _overflow_until: float
    _stop: threading.Event
    _reset_pieces: bool
    _wall0: float
    _overflow_fault: Fault | None
    _overflow_reported: bool
    _reboot_until: float
    _due_faults: Callable[[], None]
    interfaces: dict[str, Any]  # name -> LineInterface (hv, laser, hv_serial)

    @property
    def overflowing(self) -> bool:
        """True while an overflow fault saturates the DLD front end."""
        return time.monotonic() < self._overflow_until

    def _check_watchdogs(self) -> None:
        """Each wire's link watchdog (wall time): one that ran out has turned its device off."""
        now = time.monotonic()
        for name, iface in self.interfaces.items():
            if iface.check_watchdog(now):
                self.event(f"{name}: watchdog: no command for {iface.watchdog_s:g} s, "
                           "output off")

    # -- the pulse clock
    def _run_clock(self) -> None:
        env = self.env
        env.sync()  # wall time starts now, not at construction
        proc = env.process(self._clock())
        try:
            env.run(until=proc)
        except Exception as e:  # the instrument died: say so on every wire it still has
            self.event(f"pulse clock failed: {type(e).__name__}: {e}")
            print(f"emulator: pulse clock failed: {e}", file=sys.stderr)
            raise

    def _clock(self) -> Generator[Any, Any, None]:
        """The pulse clock: while the DLD acquires and the laser emits, fire pieces of
        ``piece_pulses`` pulses, each paced in real time, and deliver a readout block every
        ``block_pulses``; settings that arrive meanwhile act from the next piece on (as on the
        instrument). Otherwise time passes in idle ticks (the HV supply slews)."""
        dld: DldStreamServer = self.servers["dld"]
        parts: list[SimBlock] = []
        while not self._stop.is_set():
            with self.lock:
                if self._reset_pieces:  # pieces of the instrument before a reset are void
                    parts, self._reset_pieces = [], False
                self._due_faults()
                self._check_watchdogs()
                booting = self._reboot_until > 0
                fire = dld.running and self.leap.laser.emission_on and not booting
                overflow = self.overflowing
                if fire:
                    done = sum(p.pulses for p in parts)
                    piece = min(self.piece_pulses, self.block_pulses - done)
                    parts.append(self.leap.advance(piece))
                    dt = parts[-1].duration_s
                else:
                    dt = self.tick_s
                    self.leap.idle(dt)
            yield env_timeout(self.env, dt)
            if parts and (not fire or sum(p.pulses for p in parts) >= self.block_pulses):
                # a full block, or emission went off mid-block: the block ends here
                blk = _join(parts)
                parts = []
                if blk.pulses and dld.running:
                    self.blocks += 1
                    sent = self._deliver(dld, blk, overflow)
                    self.block_log.append((time.monotonic() - self._wall0, self.leap.now_s,
                                           blk.first_pulse, blk.pulses, sent,
                                           self.leap.hv.measured_v(),
                                           self.leap.laser.energy_pj))
                    if self.on_block is not None:
                        self._notify(blk, sent)
            elif not fire and dld.running and (overflow or self._overflow_reported):
                self._status_frame(dld, overflow, dt)

    def _notify(self, blk: SimBlock, sent: int) -> None:
        """``on_block`` for a delivered block; an observer's failure never stops the clock."""
        if not sent and len(blk.raw):  # dropped by the front end: nothing was measured
            blk = SimBlock(raw=blk.raw[:0], truth=blk.truth[:0], lost=blk.lost,
                           pulses=blk.pulses, first_pulse=blk.first_pulse,
                           duration_s=blk.duration_s)
        try:
            self.on_block(blk, self.status())  # type: ignore[misc]
        except Exception as e:
            self.event(f"on_block failed: {type(e).__name__}: {e}")

    def _burst_share(self, dt_instr_s: float) -> int:
        f = self._overflow_fault
        if f is None or not f.duration_s:
            return 1
        wall = dt_instr_s / self.speed
        return max(1, math.ceil(f.records * wall / f.duration_s))

    def _deliver(self, dld: DldStreamServer, blk: SimBlock, overflow: bool) -> int:
        """Send one block; returns the records sent (0 if dropped)."""
        raw = blk.raw
        if overflow:  # the saturated front end drops every record and says so
            dld.send_block(raw[:0], blk.first_pulse, blk.pulses,
                           dropped=len(raw) + self._burst_share(blk.duration_s))
            self._overflow_reported = True
            return 0
        reported = dld.send_block(raw, blk.first_pulse, blk.pulses)
        self._overflow_reported = reported != 0
        if reported < 0:
            return 0
        self.records += len(raw)
        return len(raw)

    def _status_frame(self, dld: DldStreamServer, overflow: bool, dt: float) -> None:
        """No pulses: a DATA frame of 0 pulses carrying the front end's drop count (status)."""
        if overflow:
            dld.send_block(np.zeros(0, RAW_DTYPE), self.leap.pulses, 0,
                           dropped=self._burst_share(dt))
            self._overflow_reported = True
        else:  # the overflow has ended: a clean status frame
            sent = dld.send_block(np.zeros(0, RAW_DTYPE), self.leap.pulses, 0, dropped=0)
            self._overflow_reported = sent != 0


def _join(parts: list[SimBlock]) -> SimBlock:
    """Consecutive pieces as one block."""
    if len(parts) == 1:
        return parts[0]
    return SimBlock(
        raw=np.concatenate([p.raw for p in parts]),
        truth=np.concatenate([p.truth for p in parts]),
        lost=np.concatenate([p.lost for p in parts]),
        pulses=sum(p.pulses for p in parts), first_pulse=parts[0].first_pulse,
        duration_s=sum(p.duration_s for p in parts))


def env_timeout(env: Any, dt: float) -> Any:
    return env.timeout(max(dt, 0.0))


def _warm_up(instrument: InstrumentConfig, specimen: SpecimenConfig) -> None:
    """Compile (or load from the numba cache) the physics kernels before serving, so the first
    readout block is not late by a compilation."""
    leap = VirtualLeap(instrument, specimen, seed=12345)
    leap.hv.set_output(True)
    leap.hv.set_voltage(min(6000.0, leap.hv.limit_v))
    leap.idle(10.0)
    leap.laser.set_energy(5.0)
    leap.laser.set_emission(True)
    leap.advance(2000)
