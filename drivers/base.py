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
import logging
import math
import threading
import time
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

log = logging.getLogger(__name__)

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

    def __exit__(self, exc_type, exc, tb) -> Literal[False]:
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

    Rules (checked before anything is sent; judged against what the instrument receives):

    - a setpoint outside ``0 <= V <= limit_v`` raises :class:`SafetyError`;
    - while the output is on (as commanded OR as last reported: a supply that claims to be off
      is not believed), every setpoint change is at most ``max_step_v`` (default
      ``ramp_v_per_s x ramp_step_s``) AND at most ``ramp_v_per_s`` x the time since the last
      setpoint; idle time earns no credit beyond one step, so over any window the setpoint
      moves at most ``ramp_v_per_s`` x the elapsed time. A larger step raises
      :class:`SafetyError` naming the step and the rule (``ramp_to`` goes far);
    - steps are taken from the higher of the setpoint the driver commanded and the one the
      instrument last reported (on connect, reconnect and at every ``ramp_to``);
    - with the output off, setpoints move freely: nothing reaches the specimen;
    - ``output(True)`` always starts at 0 V: with a setpoint above 0 it sends 0, turns the
      output on, then ramps back up to the setpoint (blocking);
    - ``safe_off()`` (also on leaving ``with`` by any exception or Ctrl-C) sends output-off
      FIRST (on a fresh connection if the link is broken, with no handshake before it), then
      verifies the output reads off, then sets the setpoint to 0.
    - every numeric reply must be finite (``nan`` is a :class:`BadReply`, never a value).
    """

    kind = "HV supply"
    #: float tolerance of the ramp check, V (the setpoints are quantized to 1 mV).
    ramp_tolerance_v = 1e-6

    def __init__(self, resource: str, *, limit_v: float, ramp_v_per_s: float,
                 ramp_step_s: float = 0.5, max_step_v: float | None = None,
                 hardware_ramp: bool = False, clock: Clock | None = None):
        super().__init__(resource, clock=clock)
        #: also set the supply's own slew rate to ramp_v_per_s on connect (if it has one)
        self.hardware_ramp = bool(hardware_ramp)
        if max_step_v is None:
            max_step_v = ramp_v_per_s * ramp_step_s
        if not (limit_v > 0 and ramp_v_per_s > 0 and ramp_step_s > 0 and max_step_v > 0):
            raise ValueError("limit_v, ramp_v_per_s, ramp_step_s and max_step_v must be > 0")
        self._limit_v = float(limit_v)
        self._ramp_v_per_s = float(ramp_v_per_s)
        self.ramp_step_s = float(ramp_step_s)
        self._max_step_v = float(max_step_v)
        self._setpoint_v = 0.0  # last setpoint commanded (or read back on connect)
        self._readback_v = 0.0  # last setpoint the instrument reported
        self._t_last_s = 0.0  # clock time of the last setpoint (or output on)
        self._on = False  # output on as commanded
        self._on_reported = False  # output on as last reported by the instrument

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
    def max_step_v(self) -> float:
        """Largest single setpoint change with the output on, V."""
        return self._max_step_v

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

    def _send_off_now(self) -> None:
        """Output off as the first thing on the link (backends with a link override)."""
        self._send_output(False)

    def _read_output_now(self) -> bool:
        """The output state, read without any handshake first (backends with a link override)."""
        return self._read_output()

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

    def _sync(self, first: bool) -> None:
        """Read setpoint and output state from the instrument (on connect and reconnect).

        On the first connect the instrument's setpoint becomes the driver's; on a reconnect
        the driver keeps what it commanded and steps from the higher of the two.
        """
        readback = _finite(self, "setpoint read-back", self._read_setpoint())
        self._readback_v = readback
        if first:
            self._setpoint_v = readback
        self._on_reported = bool(self._read_output())
        if first:
            self._on = self._on_reported
        self._t_last_s = self.clock.monotonic()

    def _ramp_applies(self) -> bool:
        return self._on or self._on_reported

    def _base_v(self) -> float:
        """Where the next step is measured from: the higher of commanded and read back."""
        return max(self._setpoint_v, self._readback_v)

    # public API -------------------------------------------------------------
    def output_on(self) -> bool:
        """The output relay state as the instrument reports it."""
        with self.lock:
            self._ensure()
            self._on_reported = bool(self._read_output())
            return self._on_reported

    def allowed_step_v(self) -> float:
        """The largest setpoint change the ramp rule allows now, V (inf with the output off)."""
        with self.lock:
            if not self._ramp_applies():
                return math.inf
            dt = max(0.0, self.clock.monotonic() - self._t_last_s)
            return min(self._max_step_v, self._ramp_v_per_s * dt)

    def within_ramp(self, volts: float) -> float:
        """``volts`` moved into what :meth:`set_voltage` accepts now (limit and ramp rule),
        on the 1 mV grid of the wire: for feedback loops that step every block."""
        with self.lock:
            v = min(max(float(volts), 0.0), self._limit_v)
            step = self.allowed_step_v()
            if math.isfinite(step):
                base = self._base_v()
                v = min(max(v, base - step), base + step)
            v = quantize_mv(v)
            if self._ramp_applies() and abs(v - self._base_v()) > step + self.ramp_tolerance_v:
                v = quantize_mv(self._base_v() + math.copysign(
                    math.floor(step * 1000.0) / 1000.0, v - self._base_v()))
            return min(max(v, 0.0), self._limit_v)

    def set_voltage(self, volts: float) -> None:
        """Send one setpoint, V. Refused (SafetyError, nothing sent) above ``limit_v``, below 0,
        or, with the output on, a step above ``max_step_v`` or faster than ``ramp_v_per_s``
        since the last setpoint."""
        v = quantize_mv(volts)
        with self.lock:
            cmd = self._cmd_setpoint(v)
            if not math.isfinite(v) or v < 0:
                raise self.error(SafetyError, cmd, "refused: setpoint must be >= 0 V")
            if v > self._limit_v:
                raise self.error(SafetyError, cmd, f"refused: above limit_v {_fmt_v(self._limit_v)}")
            self._ensure()
            now = self.clock.monotonic()
            if self._ramp_applies():
                dt = max(0.0, now - self._t_last_s)
                step = abs(v - self._base_v())
                allowed = min(self._max_step_v, self._ramp_v_per_s * dt)
                if step > allowed + self.ramp_tolerance_v:
                    raise self.error(
                        SafetyError, cmd,
                        f"refused: step {_fmt_v(step)} V in {dt:.3g} s exceeds the ramp rule "
                        f"(max_step_v {_fmt_v(self._max_step_v)} V per setpoint, ramp_v_per_s "
                        f"{_fmt_v(self._ramp_v_per_s)} V/s; use ramp_to)")
            self._send_setpoint(v)
            self._setpoint_v = self._readback_v = v
            self._t_last_s = now

    def ramp_to(self, volts: float) -> None:
        """Step the setpoint to ``volts`` within the ramp rule; blocks (on the driver's clock)
        until the last setpoint is sent. Steps of at most ``max_step_v`` every ``ramp_step_s``."""
        target = quantize_mv(volts)
        with self.lock:
            if not (0 <= target <= self._limit_v):
                self.set_voltage(target)  # raises the SafetyError with the standard message
            self._ensure()
            self._on_reported = bool(self._read_output())
            if not self._ramp_applies():
                self.set_voltage(target)
                return
            self._readback_v = _finite(self, "setpoint read-back", self._read_setpoint())
            while True:
                now = self.clock.monotonic()
                elapsed = max(0.0, now - self._t_last_s)
                room = min(self._max_step_v, self._ramp_v_per_s * elapsed)
                base = self._base_v()
                gap = target - base
                if abs(gap) <= room + self.ramp_tolerance_v:
                    self.set_voltage(target)
                    return
                step = math.floor(room * 1000.0) / 1000.0
                if step > 0 and elapsed >= self.ramp_step_s * (1 - 1e-9):
                    self.set_voltage(base + math.copysign(step, gap))
                    continue
                self.clock.sleep(max(self.ramp_step_s - elapsed, self.ramp_step_s * 1e-3))

    def output(self, on: bool) -> None:
        """Switch the output. On always starts at 0 V and ramps back to the setpoint."""
        with self.lock:
            self._ensure()
            if not on:
                self._send_output(False)
                self._on = self._on_reported = False
                return
            if self.output_on():
                self._on = True
                return
            self._on = False  # the instrument says off: a setpoint to 0 reaches nothing
            resume_v = self._base_v()
            if resume_v > 0:
                self.set_voltage(0.0)
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

    def send_off(self) -> None:
        """Output off, sent before anything else (no identification or error-queue handshake
        first; a fresh connection if the link is broken). Raises a DriverError if it could not
        be sent."""
        with self.lock:
            if not self.connected:
                return
            self._send_off_now()
            self._on = self._on_reported = False

    def verify_off(self) -> None:
        """Read the output state back: a DriverError unless the instrument reports it off.
        Then the setpoint goes to 0 V (best effort: the output is off)."""
        with self.lock:
            if not self.connected:
                return
            if _read_back_off(self, self._read_output_now, self._send_off_now):
                self._on_reported = True
                raise self.error(DriverError, self._cmd_output(False),
                                 "the output still reads ON after output off")
            try:
                self.set_voltage(0.0)
            except DriverError as e:
                log.warning("%s: output off, but setting 0 V failed: %s", self.name, e)

    def safe_off(self) -> None:
        """Output off first, then verified off, then setpoint 0 V."""
        with self.lock:
            if not self.connected:
                return
            try:
                self.send_off()
            except DriverError as e:
                raise self.error(ConnectionLost, self._cmd_output(False),
                                 f"could not turn the output off: {e.detail}") from e
            self.verify_off()

    def _mark_broken(self) -> None:
        """Backends with a link mark it for reconnection."""


def _read_back_off(inst: Any, read: Any, send_off: Any) -> bool:
    """Read an off state back. A link that fails the read (the off command may have gone into
    a dead connection) is reopened, the off command sent again and the state read once more."""
    try:
        return bool(read())
    except DriverError as e:
        log.warning("%s: reading back after off failed (%s): sending off again", inst.name, e)
    inst._mark_broken()
    send_off()
    return bool(read())


def _finite(inst: Instrument, what: str, value: float) -> float:
    """A read-back the safety rules rely on: finite, or a BadReply naming the instrument."""
    value = float(value)
    if not math.isfinite(value):
        raise inst.error(BadReply, None, f"{what} is not a finite number", repr(value))
    return value


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

    def _send_off_now(self) -> None:
        """Emission off as the first thing on the link (backends with a link override)."""
        self._send_emission(False)

    def send_off(self) -> None:
        """Emission off, sent before anything else (a fresh connection if the link is broken,
        no handshake first). Raises a DriverError if it could not be sent."""
        with self.lock:
            if self.connected:
                self._send_off_now()

    def verify_off(self) -> None:
        """A DriverError unless the laser reports emission off."""
        with self.lock:
            if self.connected and _read_back_off(self, self._read_emission_now,
                                                 self._send_off_now):
                raise self.error(DriverError, self._cmd_emission(False),
                                 "emission still reads ON after emission off")

    def _read_emission_now(self) -> bool:
        return self.emission_on()

    def safe_off(self) -> None:
        """Emission off first, then verified off."""
        with self.lock:
            if not self.connected:
                return
            try:
                self.send_off()
            except DriverError as e:
                raise self.error(ConnectionLost, self._cmd_emission(False),
                                 f"could not turn emission off: {e.detail}") from e
            self.verify_off()

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

    def overflow(self) -> bool:
        """True while the front end reports that it is dropping records. A front end that
        cannot tell says False (its drops, if it counts any, are in ``counters["dropped"]``)."""
        return False

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


@runtime_checkable
class SimulatedDetector(Protocol):
    """What a simulated detector offers beyond a real one (``sim_backends.SimDld``): the truth
    behind each chunk and the specimen's ion table. The run engine asks
    ``isinstance(dld, SimulatedDetector)`` and stores both; a real front end has neither."""

    @property
    def ion_table(self) -> list[tuple[str, float, int]]:
        """(name, main m/n Da, charge) of every ion species; the truth's species index it."""
        ...

    def read_truth(self) -> tuple[np.ndarray, np.ndarray]:
        """(truth aligned row for row with the last chunk, ions lost in it), TRUTH_DTYPE."""
        ...


def describe(obj: Any) -> str:
    """Short name of a driver for logs."""
    return getattr(obj, "name", type(obj).__name__)
