"""How the HIL emulator's faults act (:class:`FaultFiring`, mixed into
:class:`apt_daq.sim.hil_emulator.Emulator`): the wire handlers wrapped with stalls, delays,
garbage and reboots, faults fired now or when due, and cleared. The fault model itself
(kinds, parsing, wire state) is :mod:`apt_daq.sim.faults`."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from typing import Any

from apt_daq.sim.devices import History
from apt_daq.sim.dld_server import DldStreamServer
from apt_daq.sim.faults import (
    MAX_PENDING_FAULTS,
    WIRE_TARGETS,
    Fault,
    WireState,
    garbage_line,
)
from apt_daq.sim.instrument import VirtualLeap
from apt_daq.sim.scpi_server import LineInterface, ScpiInterface


class FaultFiring:
    """The emulator's fault machinery; the state it uses is the emulator's (declared here)."""

    lock: threading.RLock
    leap: VirtualLeap
    servers: dict[str, Any]
    interfaces: dict[str, LineInterface]
    wire: dict[str, WireState]
    fired: History
    event: Callable[[str], None]
    _rng: random.Random
    _pending: list[Fault]
    _interlock_until: float
    _overflow_until: float
    _overflow_fault: Fault | None
    _reboot_until: float

    # -- wires with faults
    def _wrap(self, target: str, handle: Callable[[str], str | None],
              can_drop: bool = True) -> Callable[[str], str | None]:
        w = self.wire[target]

        def handler(line: str) -> str | None:
            now = time.monotonic()
            if can_drop:
                w.threads.add(threading.current_thread())
            if now < w.down_until:
                if can_drop:
                    raise ConnectionResetError(f"{target} is rebooting")
                return None
            if now < w.stall_until and w.hits_me():
                with self.lock:
                    self.event(f"{target} stalled, lost {line.strip()[:80]!r}")
                return None
            if now < w.slow_until and w.delay_s > 0 and w.hits_me():
                time.sleep(w.delay_s)
            with self.lock:
                reply = handle(line)
            if w.garbage_next > 0 or time.monotonic() < w.garbage_until:
                w.garbage_next = max(0, w.garbage_next - 1)
                return garbage_line(self._rng)
            return reply

        return handler

    # -- faults
    def inject(self, fault: Fault) -> None:
        """Fire ``fault`` now, or schedule it if it has ``at_s`` / ``at_pulse`` (at most
        :data:`MAX_PENDING_FAULTS` waiting: ValueError beyond)."""
        with self.lock:
            if fault.at_s is None and fault.at_pulse is None:
                self._fire(fault)
            elif len(self._pending) >= MAX_PENDING_FAULTS:
                raise ValueError(f"{MAX_PENDING_FAULTS} faults already pending; "
                                 "clear some first")
            else:
                self._pending.append(fault)

    def clear_faults(self) -> None:
        """Cancel pending faults and end the running ones (interlock closes, links recover)."""
        with self.lock:
            self._pending.clear()
            for w in self.wire.values():
                w.clear()
            dld = self.servers.get("dld")
            if dld is not None:
                dld.stall_until = dld.down_until = 0.0
            self._interlock_until = self._overflow_until = self._reboot_until = 0.0
            if self.leap.laser.interlock_open:
                self.leap.laser.close_interlock()
            self.event("faults cleared")

    def _fire(self, f: Fault) -> None:
        now = time.monotonic()
        until = now + float(f.duration_s or 0.0)
        self.fired.append(f.kind)
        self.event(f"fault {f.kind} target={f.target} duration_s={f.duration_s:g}")
        dld: DldStreamServer = self.servers["dld"]
        leap = self.leap
        if f.kind == "drop":
            for t in f.targets():
                if t == "dld":
                    dld.drop("fault: drop")
                elif t in ("hv", "laser"):
                    self.servers[t].drop_clients()
        elif f.kind == "stall":
            for t in f.targets():
                self.wire[t].stall_until = until
                self._scope(t)
                if t == "dld":
                    dld.stall_until = until
        elif f.kind == "garbage":
            for t in f.targets():
                if t == "dld":
                    dld.send_raw(bytes(self._rng.randrange(256) for _ in range(64)))
                else:
                    self.wire[t].garbage_next = 1
                    self.wire[t].garbage_until = until
        elif f.kind == "slow":
            for t in f.targets():
                self.wire[t].delay_s = f.delay_s
                self.wire[t].slow_until = until
                self._scope(t)
        elif f.kind == "hv_trip":
            leap.hv.current_a = leap.hv.trip_current_a * 1.5  # the spike that tripped it
            leap.hv.trip()
        elif f.kind == "interlock":
            leap.laser.open_interlock()
            self._interlock_until = until
        elif f.kind == "overflow":
            self._overflow_until = until
            self._overflow_fault = f
        elif f.kind == "reboot":
            self._reboot_until = until
            for t in WIRE_TARGETS:
                self.wire[t].down_until = until
            dld.down_until = until
            dld.drop("fault: reboot")
            for t in ("hv", "laser"):
                self.servers[t].drop_clients()
            leap.hv.reset()
            if leap.hv.tripped:
                leap.hv.clear_trip()
            leap.laser.reset()
            if leap.laser.interlock_open:
                leap.laser.close_interlock()
            for iface in self.interfaces.values():
                if isinstance(iface, ScpiInterface):  # a power cycle empties the error queue
                    iface.errors.clear()

    def _scope(self, target: str) -> None:
        """A stall or slow fault hits the TCP links open now (the pty: all its traffic)."""
        w = self.wire[target]
        w.threads = {t for t in w.threads if t.is_alive()}
        w.hit = None if target == "hv_serial" else set(w.threads)

    def _due_faults(self) -> None:
        now_s, pulses = self.leap.now_s, self.leap.pulses
        due = [f for f in self._pending
               if (f.at_s is not None and now_s >= f.at_s)
               or (f.at_pulse is not None and pulses >= f.at_pulse)]
        for f in due:
            self._pending.remove(f)
            self._fire(f)
        wall = time.monotonic()
        if self._interlock_until and wall >= self._interlock_until:
            self._interlock_until = 0.0
            self.leap.laser.close_interlock()
            self.event("interlock closed")
        if self._reboot_until and wall >= self._reboot_until:
            self._reboot_until = 0.0
            self.event("reboot finished")
