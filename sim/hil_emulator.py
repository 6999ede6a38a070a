"""The HIL emulator (:class:`Emulator`): one virtual LEAP served over the instruments' real wires.

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
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from apt_daq.sim.devices import History
from apt_daq.sim.dld_server import DldStreamServer
from apt_daq.sim.fault_firing import FaultFiring
from apt_daq.sim.faults import (
    FAULT_KINDS,
    MAX_PENDING_FAULTS,
    WIRE_TARGETS,
    Fault,
    WireState,
    parse_fault,
)
from apt_daq.sim.instrument import SimBlock, VirtualLeap, make_environment
from apt_daq.sim.pulse_clock import PulseClock, _warm_up
from apt_daq.sim.scpi_server import (
    MAX_LINE,
    HvScpiInterface,
    LaserScpiInterface,
    LineInterface,
    TcpLineServer,
    check_host,
    printable,
)
from apt_daq.sim.serial_server import HvLineInterface, PtyServer

from apt_daq.config import InstrumentConfig, SpecimenConfig


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


class Emulator(FaultFiring, PulseClock):
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
        self.interfaces: dict[str, LineInterface] = {}
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
