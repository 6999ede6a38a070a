"""The specimen HV supply's driver interface, with the safety rules every backend inherits
(limit, ramp rate, output on at 0 V, safe off). A backend implements the ``_send_*`` /
``_read_*`` primitives only."""

from __future__ import annotations

import abc
import logging
import math

from apt_daq.drivers.clock import Clock
from apt_daq.drivers.errors import DriverError, SafetyError
from apt_daq.drivers.instrument import (
    SwitchedInstrument,
    _finite,
    _fmt_v,
    _read_back_off,
    quantize_wire,
)

from apt_daq.wire.scpi_commands import HV

log = logging.getLogger("apt_daq.drivers.base")


class HighVoltageSupply(SwitchedInstrument):
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
    - a step's time is taken when its setpoint has been sent (the send returned), so a stall
      between deciding a step and sending it cannot shorten the gap the instrument sees;
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

    @property
    def commanded_v(self) -> float:
        """The output as commanded (no I/O): the setpoint while the output is switched on,
        else 0 V. What a simulated specimen on this supply sees (``SimDld.follow``)."""
        return self._setpoint_v if self._on else 0.0

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
        return HV.set_voltage.format(volts)

    def _cmd_output(self, on: bool) -> str:
        return HV.set_output.format(on)

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
            v = quantize_wire(v)
            if self._ramp_applies() and abs(v - self._base_v()) > step + self.ramp_tolerance_v:
                v = quantize_wire(self._base_v() + math.copysign(
                    math.floor(step * 1000.0) / 1000.0, v - self._base_v()))
            return min(max(v, 0.0), self._limit_v)

    def set_voltage(self, volts: float) -> None:
        """Send one setpoint, V. Refused (SafetyError, nothing sent) above ``limit_v``, below 0,
        or, with the output on, a step above ``max_step_v`` or faster than ``ramp_v_per_s``
        since the last setpoint."""
        v = quantize_wire(volts)
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
            # the step's time is when it has been sent: a stall between the check above and
            # the bytes leaving must not shorten the gap before the next step
            self._t_last_s = self.clock.monotonic()

    def ramp_to(self, volts: float) -> None:
        """Step the setpoint to ``volts`` within the ramp rule; blocks (on the driver's clock)
        until the last setpoint is sent. Steps of at most ``max_step_v`` every ``ramp_step_s``."""
        target = quantize_wire(volts)
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

    def _cmd_off(self) -> str:
        return self._cmd_output(False)

    # safe_off (SwitchedInstrument): output off first, then verified off, then setpoint 0 V
