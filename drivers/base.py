"""Typed driver interfaces (laser, HV supply, delay-line detector) and the driver errors.

Every driver shares :class:`Instrument`: a name and resource for messages, one
``threading.RLock`` (scripts and the run engine may share a driver), an injectable
:class:`Clock` (wall time for real instruments, instrument time for the simulator, a fake
clock in tests) and the context-manager lifecycle. Leaving a ``with`` block, by any exception
or KeyboardInterrupt, calls ``safe_off()`` (HV output off, laser emission off) and then
``close()``.

The safety rules of the HV supply (limit, ramp rate, output on at 0 V) and of the laser
(energy ceiling, no emission while the HV supply reports a trip) live here, in the shared
base classes, so every backend (sim, SCPI, serial, plug-in) gets them; a backend only
implements the primitive ``_send_*`` / ``_read_*`` operations.
"""

from __future__ import annotations

import abc
import math
import threading
import time
from typing import Any, Protocol

import numpy as np

# --------------------------------------------------------------------------- errors


class DriverError(Exception):
    """A driver failure naming the instrument (kind and resource), the command and the reply.

    ``str(e)`` reads e.g. ``HV supply TCPIP::127.0.0.1::5025::SOCKET: 'SOUR:VOLT 7000'
    refused: above limit_v 6000``.
    """

    def __init__(self, instrument: str, command: str | None, detail: str,
                 reply: str | None = None):
        self.instrument = instrument
        self.command = command
        self.detail = detail
        self.reply = reply
        text = f"{instrument}: "
        if command is not None:
            text += f"{command!r} "
        text += detail
        if reply is not None:
            text += f" (reply {reply!r})"
        super().__init__(text)


class DriverTimeout(DriverError):
    """No (complete) reply within ``timeout_s``."""


class BadReply(DriverError):
    """A reply that does not parse as what the command returns."""


class InstrumentError(DriverError):
    """The instrument reported an error (SCPI error queue, ``ERR n msg`` line). ``code``."""

    def __init__(self, instrument: str, command: str | None, detail: str,
                 reply: str | None = None, code: int = 0):
        self.code = code
        super().__init__(instrument, command, detail, reply)


class ConnectionLost(DriverError):
    """The link to the instrument failed (closed socket, unplugged cable, gave up reconnecting)."""


class SafetyError(DriverError):
    """A setting the driver refused before sending it (limit, ramp rate, interlock, trip)."""


# --------------------------------------------------------------------------- clocks


class Clock(Protocol):
    """Where a driver reads time and waits. Injectable so tests and the simulator need no sleep."""

    def monotonic(self) -> float: ...

    def sleep(self, dt_s: float) -> None: ...


class WallClock:
    """Real time: ``time.monotonic`` and ``time.sleep``."""

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, dt_s: float) -> None:
        if dt_s > 0:
            time.sleep(dt_s)


class FakeClock:
    """A clock that only moves when something sleeps: for tests (and reproducible scripts)."""

    def __init__(self, start_s: float = 0.0):
        self.now_s = float(start_s)

    def monotonic(self) -> float:
        return self.now_s

    def sleep(self, dt_s: float) -> None:
        if dt_s > 0:
            self.now_s += dt_s


# --------------------------------------------------------------------------- instrument base


class Instrument(abc.ABC):
    """What every driver shares: naming, lock, clock, lifecycle."""

    kind = "instrument"

    def __init__(self, resource: str, *, clock: Clock | None = None):
        self.resource = resource
        self.clock: Clock = clock or WallClock()
        self.lock = threading.RLock()
        self.connected = False

    @property
    def name(self) -> str:
        """``<kind> <resource>``: how errors name this instrument."""
        return f"{self.kind} {self.resource}"

    def error(self, cls: type[DriverError], command: str | None, detail: str,
              reply: str | None = None) -> DriverError:
        return cls(self.name, command, detail, reply)

    def not_connected(self, command: str | None) -> DriverError:
        return self.error(ConnectionLost, command, "not connected (call connect() or open_*())")

    # lifecycle ---------------------------------------------------------------
    @abc.abstractmethod
    def connect(self) -> None:
        """Open the link and read the instrument's state."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the link (no state change at the instrument)."""

    def safe_off(self) -> None:  # noqa: B027  (a detector has nothing to switch off)
        """Put the instrument in its safe state. The DLD has none."""

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            self.safe_off()
        finally:
            self.close()
        return False

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


def _fmt_v(v: float) -> str:
    return f"{v:.3f}".rstrip("0").rstrip(".")


def quantize_mv(volts: float) -> float:
    """Round to the 1 mV resolution of the wire formats, so what is checked is what is sent."""
    return round(float(volts), 3)


class HighVoltageSupply(Instrument):
    """The specimen DC HV supply, with the safety rules every backend inherits.

    Rules (checked before anything is sent):

    - a setpoint outside ``0 <= V <= limit_v`` raises :class:`SafetyError`;
    - while the output is on, a new setpoint differs from the last one sent by at most
      ``ramp_v_per_s`` x the time since it, else :class:`SafetyError` (``ramp_to`` goes far);
      with the output off setpoints may move freely, nothing reaches the specimen;
    - ``output(True)`` always starts at 0 V: with a setpoint above 0 it sends 0, turns the
      output on, then ramps back up to the setpoint (blocking);
    - ``safe_off()`` (also on leaving ``with`` by any exception or Ctrl-C) turns the output off
      and the setpoint to 0.
    """

    kind = "HV supply"
    #: float tolerance of the ramp check, V (the setpoints are quantized to 1 mV).
    ramp_tolerance_v = 1e-6

    def __init__(self, resource: str, *, limit_v: float, ramp_v_per_s: float,
                 ramp_step_s: float = 0.5, clock: Clock | None = None):
        super().__init__(resource, clock=clock)
        if not (limit_v > 0 and ramp_v_per_s > 0 and ramp_step_s > 0):
            raise ValueError("limit_v, ramp_v_per_s and ramp_step_s must be > 0")
        self._limit_v = float(limit_v)
        self._ramp_v_per_s = float(ramp_v_per_s)
        self.ramp_step_s = float(ramp_step_s)
        self._setpoint_v = 0.0  # last setpoint sent (or read back on connect)
        self._t_last_s = 0.0  # clock time of that setpoint
        self._on = False  # output state as the driver last knew it

    # properties -------------------------------------------------------------
    @property
    def limit_v(self) -> float:
        """Highest setpoint this driver will ever send, V."""
        return self._limit_v

    @property
    def ramp_v_per_s(self) -> float:
        """Fastest setpoint change with the output on, V/s."""
        return self._ramp_v_per_s

    @property
    def setpoint_v(self) -> float:
        """The last setpoint sent (the driver's view), V."""
        return self._setpoint_v

    # primitives a backend implements ---------------------------------------
    @abc.abstractmethod
    def _send_setpoint(self, volts: float) -> None: ...

    @abc.abstractmethod
    def _send_output(self, on: bool) -> None: ...

    @abc.abstractmethod
    def _read_setpoint(self) -> float: ...

    @abc.abstractmethod
    def _read_output(self) -> bool: ...

    @abc.abstractmethod
    def _send_clear_trip(self) -> None: ...

    @abc.abstractmethod
    def voltage(self) -> float:
        """Measured output voltage, V."""

    @abc.abstractmethod
    def current(self) -> float:
        """Measured output current, A."""

    @abc.abstractmethod
    def tripped(self) -> bool:
        """True while the over-current protection has latched the output off."""

    def _cmd_setpoint(self, volts: float) -> str:
        """The command text naming a setpoint in messages (backends use their wire form)."""
        return f"SOUR:VOLT {_fmt_v(volts)}"

    def _cmd_output(self, on: bool) -> str:
        return f"OUTP {'ON' if on else 'OFF'}"

    def _ensure(self) -> None:
        """Reconnect (and resync) if the link is known to be broken. Backends override."""

    def _sync(self) -> None:
        """Read setpoint and output state from the instrument (on connect and reconnect)."""
        self._setpoint_v = float(self._read_setpoint())
        self._on = bool(self._read_output())
        self._t_last_s = self.clock.monotonic()

    # public API -------------------------------------------------------------
    def output_on(self) -> bool:
        """The output relay state as the instrument reports it."""
        with self.lock:
            self._ensure()
            self._on = bool(self._read_output())
            return self._on

    def set_voltage(self, volts: float) -> None:
        """Send one setpoint, V. Refused (SafetyError, nothing sent) above ``limit_v``, below 0,
        or, with the output on, faster than ``ramp_v_per_s`` since the last setpoint."""
        v = quantize_mv(volts)
        with self.lock:
            cmd = self._cmd_setpoint(v)
            if not math.isfinite(v) or v < 0:
                raise self.error(SafetyError, cmd, "refused: setpoint must be >= 0 V")
            if v > self._limit_v:
                raise self.error(SafetyError, cmd, f"refused: above limit_v {_fmt_v(self._limit_v)}")
            self._ensure()
            now = self.clock.monotonic()
            if self._on:
                dt = max(0.0, now - self._t_last_s)
                step = abs(v - self._setpoint_v)
                if step > self._ramp_v_per_s * dt + self.ramp_tolerance_v:
                    raise self.error(
                        SafetyError, cmd,
                        f"refused: step {_fmt_v(step)} V in {dt:.3g} s exceeds ramp_v_per_s "
                        f"{_fmt_v(self._ramp_v_per_s)} (use ramp_to)")
            self._send_setpoint(v)
            self._setpoint_v = v
            self._t_last_s = now

    def ramp_to(self, volts: float) -> None:
        """Step the setpoint to ``volts`` so dV/dt never exceeds ``ramp_v_per_s``; blocks (on
        the driver's clock) until the last setpoint is sent. Steps every ``ramp_step_s``."""
        target = quantize_mv(volts)
        with self.lock:
            if not (0 <= target <= self._limit_v):
                self.set_voltage(target)  # raises the SafetyError with the standard message
            if not self.output_on():
                self.set_voltage(target)
                return
            while True:
                now = self.clock.monotonic()
                room = self._ramp_v_per_s * max(0.0, now - self._t_last_s)
                gap = target - self._setpoint_v
                if abs(gap) <= room:
                    self.set_voltage(target)
                    return
                step = math.floor(room * 1000.0) / 1000.0
                elapsed = now - self._t_last_s
                if step > 0 and elapsed >= self.ramp_step_s * (1 - 1e-9):
                    self.set_voltage(self._setpoint_v + math.copysign(step, gap))
                    continue
                self.clock.sleep(max(self.ramp_step_s - elapsed, self.ramp_step_s * 1e-3))

    def output(self, on: bool) -> None:
        """Switch the output. On always starts at 0 V and ramps back to the setpoint."""
        with self.lock:
            self._ensure()
            if not on:
                self._send_output(False)
                self._on = False
                return
            if self.output_on():
                return
            resume_v = self._setpoint_v
            if resume_v > 0:
                self.set_voltage(0.0)  # output off: allowed at once
            self._send_output(True)
            self._on = True
            self._t_last_s = self.clock.monotonic()
            if resume_v > 0:
                self.ramp_to(resume_v)

    def clear_trip(self) -> None:
        """Clear the latched trip. The output stays off until ``output(True)``."""
        with self.lock:
            self._ensure()
            self._send_clear_trip()

    def safe_off(self) -> None:
        """Output off, then setpoint 0 V. The output-off command is retried (idempotent)."""
        with self.lock:
            if not self.connected:
                return
            last: DriverError | None = None
            for _ in range(3):
                try:
                    self._ensure()
                    self._send_output(False)
                    self._on = False
                    last = None
                    break
                except DriverError as e:  # try again on a fresh link
                    last = e
                    self._mark_broken()
            if last is not None:
                raise self.error(ConnectionLost, self._cmd_output(False),
                                 f"could not turn the output off: {last}")
            self.set_voltage(0.0)

    def _mark_broken(self) -> None:
        """Backends with a link mark it for reconnection."""


class Laser(Instrument):
    """The pulsed UV laser. Emission is refused while the attached HV supply reports a trip."""

    kind = "laser"

    def __init__(self, resource: str, *, max_energy_pj: float = 100.0,
                 hv: HighVoltageSupply | None = None, clock: Clock | None = None):
        super().__init__(resource, clock=clock)
        self.max_energy_pj = float(max_energy_pj)
        self.hv = hv

    @abc.abstractmethod
    def _send_energy(self, pj: float) -> None: ...

    @abc.abstractmethod
    def _send_pulse_rate(self, hz: float) -> None: ...

    @abc.abstractmethod
    def _send_emission(self, on: bool) -> None: ...

    @abc.abstractmethod
    def energy(self) -> float:
        """Pulse energy setting, pJ."""

    @abc.abstractmethod
    def pulse_rate(self) -> float:
        """Pulse repetition rate, Hz."""

    @abc.abstractmethod
    def emission_on(self) -> bool:
        """Emission state as the laser reports it."""

    @abc.abstractmethod
    def interlock_open(self) -> bool:
        """True while the safety interlock is open (emission impossible)."""

    def _cmd_energy(self, pj: float) -> str:
        return f"SOUR:PULS:ENER {_fmt_v(pj)}"

    def _cmd_emission(self, on: bool) -> str:
        return f"OUTP {'ON' if on else 'OFF'}"

    def set_energy(self, pj: float) -> None:
        """Pulse energy, pJ; refused outside ``0..max_energy_pj``."""
        pj = quantize_mv(pj)
        with self.lock:
            cmd = self._cmd_energy(pj)
            if not (math.isfinite(pj) and 0 <= pj <= self.max_energy_pj):
                raise self.error(SafetyError, cmd,
                                 f"refused: outside 0..max_energy_pj {_fmt_v(self.max_energy_pj)}")
            self._send_energy(pj)

    def set_pulse_rate(self, hz: float) -> None:
        """Pulse repetition rate, Hz (> 0)."""
        with self.lock:
            if not (math.isfinite(hz) and hz > 0):
                raise self.error(SafetyError, f"SOUR:PULS:FREQ {hz:g}", "refused: must be > 0 Hz")
            self._send_pulse_rate(float(hz))

    def emission(self, on: bool) -> None:
        """Emission on/off. On is refused while the attached HV supply reports a trip."""
        with self.lock:
            if on and self.hv is not None and self.hv.tripped():
                raise self.error(SafetyError, self._cmd_emission(True),
                                 f"refused: {self.hv.name} reports a trip")
            self._send_emission(bool(on))

    def safe_off(self) -> None:
        """Emission off (retried: idempotent)."""
        with self.lock:
            if not self.connected:
                return
            last: DriverError | None = None
            for _ in range(3):
                try:
                    self._send_emission(False)
                    return
                except DriverError as e:
                    last = e
                    self._mark_broken()
            raise self.error(ConnectionLost, self._cmd_emission(False),
                             f"could not turn emission off: {last}")

    def _mark_broken(self) -> None:
        """Backends with a link mark it for reconnection."""


class DelayLineDetector(Instrument):
    """The delay-line detector front end: raw records (``apt_daq.hits.RAW_DTYPE``) in chunks.

    ``counters``: ``pulses`` (pulses covered so far), ``hits`` (records), ``multi_hits``
    (pulses with two or more records), ``dropped`` (records the front end could not deliver).
    """

    kind = "DLD"

    def __init__(self, resource: str, *, clock: Clock | None = None):
        super().__init__(resource, clock=clock)
        self.counters: dict[str, int] = {"pulses": 0, "hits": 0, "multi_hits": 0, "dropped": 0}
        self.running = False

    @abc.abstractmethod
    def start(self) -> None:
        """Start acquiring."""

    @abc.abstractmethod
    def read_chunk(self, timeout_s: float) -> np.ndarray:
        """The next block of raw records (RAW_DTYPE), waiting at most ``timeout_s``."""

    def arm(self) -> None:
        """Hint that the caller will not touch the instruments until the next ``read_chunk``.

        A real front end acquires continuously, so this does nothing; the simulated one starts
        firing the next chunk in the background, overlapping it with the caller's processing.
        """

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop acquiring (idempotent)."""

    def safe_off(self) -> None:
        if self.connected and self.running:
            self.stop()

    def _count(self, raw: np.ndarray, pulses: int, dropped: int = 0) -> None:
        self.counters["pulses"] += int(pulses)
        self.counters["hits"] += len(raw)
        self.counters["dropped"] += int(dropped)
        if len(raw) > 1:
            p = raw["pulse"]
            same = p[1:] == p[:-1]
            if np.all(p[1:] >= p[:-1]):  # pulse order (every front end's): count runs
                self.counters["multi_hits"] += int(np.count_nonzero(same[1:] & ~same[:-1])
                                                   + bool(same[0]))
                return
            _, n = np.unique(p, return_counts=True)
            self.counters["multi_hits"] += int(np.count_nonzero(n > 1))


def describe(obj: Any) -> str:
    """Short name of a driver for logs."""
    return getattr(obj, "name", type(obj).__name__)
