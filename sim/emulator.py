"""Hardware-in-the-loop emulator: one virtual LEAP served over the instruments' real wires.

The device models are the simulator's (:class:`apt_daq.sim.instrument.VirtualLeap`); the wire
interfaces are thin (Lewis style) and documented in ``docs/protocols.md``:

- laser: SCPI on a TCP socket (``TCPIP::host::port::SOCKET``, LF terminated);
- HV supply: SCPI on a TCP socket, and its terse line protocol on a pseudo-terminal
  (``/dev/pts/N``, CR LF), both on the same model;
- delay-line detector: raw records in the binary framing of ``drivers/dld_stream.py`` on TCP
  (``tcp://host:port``). After START the front end fires the laser in readout blocks of
  ``block_pulses`` pulses while emission is on, paced in real time, and sends one DATA frame
  per block at the block's end;
- control: a text line protocol on TCP (``status``, ``log``, ``fault KIND key=value ...``,
  ``clear``, ``shutdown``), replies are one JSON line.

Time: a ``simpy.rt.RealtimeEnvironment`` (``make_environment(realtime=True, speed=X)``) paces
the pulse clock, so one second of instrument time takes ``1/speed`` s of wall time; the
virtual LEAP's own clock advances by the same amounts. Settings arriving over any wire act at
the next pulse block (the latency of real hardware). Every accepted setting is in the device
models' ``received`` logs (instrument time), the emulator's own record of what the
instrument got, whatever the drivers believe.

Faults (:class:`~apt_daq.sim.faults.Fault`, from a YAML list, ``--fault`` or the control port)
are documented in ``docs/hil.md`` (:data:`~apt_daq.sim.faults.FAULT_KINDS`); the DLD endpoint
is :class:`~apt_daq.sim.dld_server.DldStreamServer`.

Exposure and limits (``docs/hil.md``): every endpoint listens on loopback unless
``allow_remote=True`` (the CLI's ``--allow-remote``); lines are capped at
:data:`~apt_daq.sim.scpi_server.MAX_LINE` bytes, connections at :data:`~apt_daq.sim.scpi_server.MAX_CLIENTS`
per server, logs at :data:`~apt_daq.sim.devices.HISTORY_MAX` entries, pending faults at
:data:`~apt_daq.sim.faults.MAX_PENDING_FAULTS`; replies are ASCII whatever a client sent.
"""

from __future__ import annotations

import json
import math
import random
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from apt_daq.sim.devices import History
from apt_daq.sim.dld_server import MAX_COMMAND_FRAME, DldStreamServer
from apt_daq.sim.faults import (
    DEFAULT_DURATION_S,
    FAULT_KINDS,
    MAX_PENDING_FAULTS,
    TARGETS,
    WIRE_TARGETS,
    Fault,
    WireState,
    garbage_line,
    load_faults,
    parse_fault,
)
from apt_daq.sim.instrument import SimBlock, VirtualLeap, make_environment
from apt_daq.sim.scpi_server import (
    MAX_LINE,
    HvScpiInterface,
    LaserScpiInterface,
    TcpLineServer,
    check_host,
    printable,
    remote_warning,
)
from apt_daq.sim.serial_server import HvLineInterface, PtyServer

from apt_daq.config import InstrumentConfig, SpecimenConfig
from apt_daq.hits import RAW_DTYPE

# the emulator's public names, and those of the modules split from it (apt_daq.sim.faults,
# apt_daq.sim.dld_server), which callers import from here
__all__ = [
    "DEFAULT_DURATION_S", "FAULT_KINDS", "MAX_COMMAND_FRAME", "MAX_PENDING_FAULTS", "TARGETS",
    "WIRE_TARGETS", "DldStreamServer", "Emulator", "EmulatorStatus", "Fault", "WireState",
    "env_timeout", "garbage_line", "load_faults", "load_target", "parse_fault", "serve",
]


@dataclass
class EmulatorStatus:
    now_s: float
    pulses: int
    records: int
    blocks: int
    hv_output_on: bool
    hv_tripped: bool
    hv_setpoint_v: float
    hv_measured_v: float
    laser_emission_on: bool
    laser_energy_pj: float
    interlock_open: bool
    dld_connected: bool
    dld_running: bool
    overflow: bool
    rebooting: bool
    fractured: bool
    pending_faults: int
    faults_fired: list[str] = field(default_factory=list)


class Emulator:
    """The virtual LEAP on sockets and a pty.

    >>> emu = Emulator(instrument, specimen, speed=100, seed=1).start()
    >>> emu.ports   # {"laser": "TCPIP::127.0.0.1::P::SOCKET", "hv": ..., "hv_serial": ...}
    >>> emu.inject(Fault("interlock", duration_s=0.5)); emu.stop()
    """

    def __init__(self, instrument: InstrumentConfig, specimen: SpecimenConfig, *,
                 base_temperature_k: float = 60.0, seed: int = 0, speed: float = 1.0,
                 host: str = "127.0.0.1", block_pulses: int = 200_000,
                 tick_wall_s: float = 0.01, faults: list[Fault] | None = None,
                 serial: bool = True, warm_up: bool = True, allow_remote: bool = False,
                 on_block: Callable[[SimBlock, EmulatorStatus], None] | None = None):
        self.remote = check_host(host, allow_remote)  # refuses a remote host by default
        self.allow_remote = allow_remote
        if faults is not None and len(faults) > MAX_PENDING_FAULTS:
            raise ValueError(f"{len(faults)} faults: at most {MAX_PENDING_FAULTS}")
        if speed <= 0 or not math.isfinite(speed):
            raise ValueError(f"speed must be a positive number, got {speed}")
        if block_pulses <= 0:
            raise ValueError(f"block_pulses must be > 0, got {block_pulses}")
        self.instrument, self.specimen = instrument, specimen
        # called on the pulse clock's thread after each delivered readout block with the block
        # (its records emptied if the front end dropped them) and the model state; None (the
        # default): nothing is done. It must return at once (a live view queues the block).
        self.on_block = on_block
        self.base_temperature_k, self.seed, self.speed = base_temperature_k, seed, speed
        self.host = host
        self.block_pulses = int(block_pulses)
        self.piece_pulses = max(1, min(20_000, self.block_pulses // 10))
        self.tick_s = tick_wall_s * speed  # instrument time of one idle tick
        self.warm_up = warm_up
        self.leap = VirtualLeap(instrument, specimen, base_temperature_k=base_temperature_k,
                                seed=seed)
        self.lock = threading.RLock()  # one lock around the device models
        self.events = History()  # (instrument time, what happened), the last HISTORY_MAX
        self.wire = {t: WireState() for t in WIRE_TARGETS}
        self._rng = random.Random(seed)
        self._pending: list[Fault] = list(faults or [])
        self.fired = History()
        self._interlock_until = 0.0
        self._overflow_until = 0.0
        self._overflow_fault: Fault | None = None
        self._overflow_reported = False
        self._reboot_until = 0.0
        self.records = self.blocks = 0
        # per block: (wall s since start, instrument s, first pulse, pulses, records, V, pJ)
        self.block_log = History()
        self._wall0 = time.monotonic()
        self._reset_pieces = False
        self._serial = serial
        self._stop = threading.Event()  # the pulse clock ends
        self._quit = threading.Event()  # someone asked the emulator to shut down
        self._stopped = False
        self._thread: threading.Thread | None = None
        self.servers: dict[str, Any] = {}
        self.interfaces: dict[str, Any] = {}
        self.env: Any = None  # the realtime simpy Environment while started

    # -- logging
    def event(self, what: str) -> None:
        self.events.append((self.leap.now_s, printable(what, MAX_LINE)))

    # -- lifecycle
    def start(self) -> Emulator:
        if self.warm_up:
            _warm_up(self.instrument, self.specimen)
        remote: dict[str, Any] = {"allow_remote": self.allow_remote, "on_event": self.event}
        self.servers["hv"] = TcpLineServer(lambda line: None, self.host, name="hv",
                                           **remote).start()
        self.servers["laser"] = TcpLineServer(lambda line: None, self.host, name="laser",
                                              **remote).start()
        if self._serial:
            self.servers["hv_serial"] = PtyServer(lambda line: None,
                                                  on_event=self.event).start()
        self._bind()
        self.servers["dld"] = DldStreamServer(self.host, **remote).start()
        self.servers["control"] = TcpLineServer(
            self.control, self.host, name="control",
            on_overlong=lambda: json.dumps({"ok": False, "error": "line too long (over "
                                            f"{MAX_LINE} bytes)"}), **remote).start()
        if self.remote:
            self.event(f"serving on {self.host} (not loopback): allowed by allow_remote")
        self.env = make_environment(realtime=True, speed=self.speed)
        self._thread = threading.Thread(target=self._run_clock, daemon=True, name="pulse-clock")
        self._thread.start()
        self.event(f"emulator started, speed {self.speed:g}, seed {self.seed}")
        return self

    def _bind(self) -> None:
        """Wire interfaces on the current device models, installed in the servers."""
        hv, laser = self.leap.hv, self.leap.laser
        self.interfaces = {"hv": HvScpiInterface(hv), "laser": LaserScpiInterface(laser)}
        if self._serial:
            self.interfaces["hv_serial"] = HvLineInterface(hv)
        for name, iface in self.interfaces.items():
            self.servers[name].handler = self._wrap(name, iface.handle,
                                                    can_drop=name != "hv_serial")
            self.servers[name].on_overlong = self._locked(iface.too_long)

    def _locked(self, fn: Callable[[], str | None]) -> Callable[[], str | None]:
        def call() -> str | None:
            with self.lock:
                return fn()
        return call

    def reset(self, seed: int | None = None) -> None:
        """A fresh specimen in a freshly powered instrument, on the same ports: links
        dropped, faults cleared, logs emptied (a new virtual LEAP from the same configs)."""
        with self.lock:
            self._pending.clear()
            for w in self.wire.values():
                w.clear()
            dld: DldStreamServer = self.servers["dld"]
            dld.stall_until = dld.down_until = 0.0
            dld.drop("reset")
            for t in ("hv", "laser"):
                self.servers[t].drop_clients()
            self._interlock_until = self._overflow_until = self._reboot_until = 0.0
            self._overflow_reported = False
            self.seed = self.seed if seed is None else seed
            self.leap = VirtualLeap(self.instrument, self.specimen,
                                    base_temperature_k=self.base_temperature_k, seed=self.seed)
            self._reset_pieces = True
            self._bind()
            self.events.clear()
            self.block_log.clear()
            self.fired.clear()
            self.records = self.blocks = 0
            self._wall0 = time.monotonic()
            self.event(f"reset, seed {self.seed}")

    @property
    def ports(self) -> dict[str, str]:
        """Resource strings: pyvisa for laser/hv, a pty path for hv_serial, tcp:// URLs."""
        s = self.servers
        out = {"laser": s["laser"].resource, "hv": s["hv"].resource}
        if "hv_serial" in s:
            out["hv_serial"] = s["hv_serial"].path
        out["dld"] = s["dld"].url
        out["control"] = f"tcp://{s['control'].host}:{s['control'].port}"
        return out

    def stop(self) -> None:
        """Stop the pulse clock and close every endpoint (idempotent)."""
        with self.lock:
            if self._stopped:
                return
            self._stopped = True
        self._quit.set()
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        for name in ("control", "dld", "laser", "hv", "hv_serial"):
            srv = self.servers.get(name)
            if srv is not None:
                srv.stop()
        self.event("emulator stopped")

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def request_stop(self) -> None:
        """Ask :meth:`wait` to return (safe from a signal handler)."""
        self._quit.set()

    def wait(self, timeout_s: float | None = None) -> bool:
        """Block until :meth:`request_stop` (a signal, ``shutdown`` on the control port) or
        :meth:`stop`; True if asked to stop."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while not self._quit.wait(0.2):
            if deadline is not None and time.monotonic() >= deadline:
                return False
        return True

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
                if hasattr(iface, "errors"):
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

    @property
    def overflowing(self) -> bool:
        return time.monotonic() < self._overflow_until

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

    def _clock(self):
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

    # -- state and logs
    def status(self) -> EmulatorStatus:
        with self.lock:
            hv, las = self.leap.hv, self.leap.laser
            dld: DldStreamServer = self.servers["dld"]
            return EmulatorStatus(
                now_s=self.leap.now_s, pulses=self.leap.pulses, records=self.records,
                blocks=self.blocks, hv_output_on=hv.output_on, hv_tripped=hv.tripped,
                hv_setpoint_v=hv.setpoint_v, hv_measured_v=hv.measured_v(),
                laser_emission_on=las.emission_on, laser_energy_pj=las.energy_pj,
                interlock_open=las.interlock_open, dld_connected=dld.connected,
                dld_running=dld.running, overflow=self.overflowing,
                rebooting=self._reboot_until > 0, fractured=self.leap.fractured,
                pending_faults=len(self._pending), faults_fired=list(self.fired))

    def device_log(self) -> dict[str, Any]:
        """The devices' ``received`` logs (instrument time, what, value), the commands each
        wire saw, the emulator's events and the final state."""
        with self.lock:
            return {
                "hv": [list(r) for r in self.leap.hv.received],
                "laser": [list(r) for r in self.leap.laser.received],
                "commands": {k: list(v.commands_seen) for k, v in self.interfaces.items()},
                "events": [list(e) for e in self.events],
                "blocks": [list(b) for b in self.block_log],
                "state": asdict(self.status()),
            }

    # -- control port
    def control(self, line: str) -> str | None:
        """One control command -> one JSON reply line."""
        words = line.strip().split(None, 1)
        if not words:
            return None
        cmd, rest = words[0].lower(), (words[1] if len(words) > 1 else "")
        try:
            if cmd == "status":
                return json.dumps(asdict(self.status()))
            if cmd == "log":
                return json.dumps(self.device_log())
            if cmd == "ports":
                return json.dumps(self.ports)
            if cmd == "fault":
                f = parse_fault(rest)
                self.inject(f)
                return json.dumps({"ok": True, "fault": asdict(f)})
            if cmd == "reset":
                seed = int(rest.split("=", 1)[-1]) if rest.strip() else None
                if seed is not None and seed < 0:
                    raise ValueError(f"seed must be >= 0, got {seed}")
                self.reset(seed)
                return json.dumps({"ok": True, "seed": self.seed})
            if cmd == "clear":
                self.clear_faults()
                return json.dumps({"ok": True})
            if cmd == "faults":
                return json.dumps(FAULT_KINDS)
            if cmd == "shutdown":
                self.request_stop()
                return json.dumps({"ok": True})
        except ValueError as e:
            return json.dumps({"ok": False, "error": str(e)})
        return json.dumps({"ok": False, "error": f"unknown command {cmd!r}; expected status, "
                           "log, ports, fault KIND key=value..., clear, reset [seed=S], faults, shutdown"})


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


# ------------------------------------------------------------------------------- entry point
def load_target(path: str | Path, specimen: str | Path | None = None
                ) -> tuple[InstrumentConfig, SpecimenConfig, float, int, int | None]:
    """(instrument, specimen, base temperature K, seed, chunk pulses or None) from a run YAML
    or an instrument YAML (then ``specimen`` names the specimen YAML)."""
    from apt_daq.config import (
        ConfigError,
        RunFile,
        compose_yaml,
        detect_model,
        load_run,
        load_yaml_model,
    )

    data, _ = compose_yaml(Path(path))
    model = detect_model(data if isinstance(data, dict) else {})
    if model is RunFile:
        rf = load_run(path)
        sp = load_yaml_model(specimen, SpecimenConfig) if specimen else rf.specimen
        return rf.instrument, sp, rf.run.base_temperature_k, rf.run.seed, rf.run.chunk_pulses
    if model is not InstrumentConfig:
        raise ConfigError([f"{path}:1: expected an instrument or run YAML"])
    ins = load_yaml_model(path, InstrumentConfig)
    if specimen is None:
        from apt_daq.shipped import configs_dir

        specimen = configs_dir() / "specimens" / "nmc811-cr.yaml"
    return ins, load_yaml_model(specimen, SpecimenConfig), 60.0, 0, None


def serve(target: str | Path, *, host: str = "127.0.0.1", ports_file: str | Path | None = None,
          speed: float = 1.0, seed: int | None = None, faults: list[Fault] | None = None,
          specimen: str | Path | None = None, block_pulses: int | None = None,
          out: Any = None, allow_remote: bool = False, err: Any = None,
          attach: Callable[[Emulator], Callable[[], None]] | None = None) -> int:
    """Build the emulator from ``target``, serve until SIGTERM/SIGINT or ``shutdown`` on the
    control port; writes the resource strings to ``ports_file`` (JSON) and prints them.

    A ``host`` that is not loopback raises :class:`~apt_daq.sim.scpi_server.RemoteHostRefused` (a
    ValueError) unless ``allow_remote``; with it, a one-line warning goes to ``err``
    (default stderr): there is no authentication on any port.

    ``attach``, if given, is called with the emulator once it serves (before the ports are
    announced) and returns what to call when it has stopped (``--serve``: the live view)."""
    out = out or sys.stdout
    if check_host(host, allow_remote):
        print(remote_warning(host), file=err or sys.stderr, flush=True)
    ins, sp, temp_k, run_seed, chunk = load_target(target, specimen)
    emu = Emulator(ins, sp, base_temperature_k=temp_k,
                   seed=run_seed if seed is None else seed, speed=speed, host=host,
                   block_pulses=block_pulses or chunk or 200_000, faults=faults,
                   allow_remote=allow_remote)

    def on_signal(signum: int, frame: object) -> None:
        emu.request_stop()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    detach: Callable[[], None] | None = None
    try:
        emu.start()
        if attach is not None:
            detach = attach(emu)
        ports = emu.ports
        text = json.dumps(ports)
        if ports_file:
            p = Path(ports_file)
            tmp = p.with_name(p.name + ".tmp")
            tmp.write_text(text + "\n")
            tmp.replace(p)  # atomic: a reader never sees half a file
        print(text, file=out, flush=True)
        emu.wait()
    finally:
        emu.stop()
        if detach is not None:
            detach()
        for s, h in old.items():
            signal.signal(s, h)
        if ports_file:
            Path(ports_file).unlink(missing_ok=True)
    return 0


if __name__ == "__main__":  # python -m apt_daq.sim.emulator ... (same as apt-daq emulate)
    from apt_daq.commands.emulate import main

    sys.exit(main())
