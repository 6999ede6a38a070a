"""The specimen HV supply's driver interface, with the safety rules every backend inherits
(limit, ramp rate, output on at 0 V, safe off). A backend implements the ``_send_*`` /
``_read_*`` primitives only."""

from __future__ import annotations

import abc
import itertools
import logging
import math
from collections.abc import Callable

from apt_daq.drivers.clock import Clock
from apt_daq.drivers.errors import BadReply, DriverError, Interrupted, SafetyError
from apt_daq.drivers.instrument import (
    SwitchedInstrument,
    _finite,
    _fmt_v,
    _read_back_off,
    _telling,
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
      instrument last reported (on connect, reconnect and at every ``ramp_to``); but while the
      output is on, a read-back must be a setpoint the driver sent (the commanded one, or one
      whose send failed after it may have left), within ``setpoint_resolution_v``; any other
      is a fault (:class:`BadReply` naming both values): the output is switched off and the
      setpoint is never moved towards the read-back (on the FIRST connect the instrument's
      setpoint is adopted: the driver has commanded nothing yet; a linked supply found on,
      only once its measured voltage agrees, and mid-run too: ``drivers/hv.py``);
    - a step's time is taken when its setpoint has been sent (the send returned), so a stall
      between deciding a step and sending it cannot shorten the gap the instrument sees;
    - with the output off, setpoints move freely: nothing reaches the specimen;
    - ``output(True)`` always starts at 0 V: with a setpoint above 0 it sends 0, turns the
      output on, then ramps back up to the setpoint (blocking); on an output the driver
      switched on, a report of OFF is a fault (output off, :class:`BadReply`), never a reason
      to send 0 V to what may be live;
    - ``safe_off()`` (also on leaving ``with`` by any exception or Ctrl-C) sends output-off
      FIRST (on a fresh connection if the link is broken, with no handshake before it), then
      verifies the output reads off (else sends off again; still on: its setpoint is ramped
      to 0 V within the ramp rule, and the off is not verified), then sets the setpoint to 0;
    - every numeric reply must be finite (``nan`` is a :class:`BadReply`, never a value);
      a measured voltage below ``-measure_tolerance_v`` or above ``2 x limit_v``, or a
      measured current beyond ``max_current_a`` in magnitude, is a :class:`BadReply` too.
    """

    kind = "HV supply"
    #: float tolerance of the ramp check, V (the setpoints are quantized to 1 mV).
    ramp_tolerance_v = 1e-6
    #: how far below 0 V a measured voltage may read (offset of the supply's read-back), V
    measure_tolerance_v = 1.0
    #: the largest plausible measured current, A (a specimen supply delivers micro- to
    #: milliamps; more than this is a reply that is not a measurement)
    max_current_a = 1.0
    #: how far a setpoint read-back may differ from the setpoint sent (a supply may report
    #: it rounded to its DAC's resolution: 16 bits over 30 kV is 0.5 V), V
    setpoint_resolution_v = 1.0

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        read = cls.__dict__.get("tripped")
        if read is not None and not getattr(read, "__isabstractmethod__", False):
            cls.tripped = _telling(read, "_trip_listeners")

    def on_trip(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` whenever ``tripped()`` reads a trip, whoever asked (the attached
        laser switches its emission off so); a callback that raises is logged."""
        self._trip_listeners.append(callback)

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
        self._pending_fault: DriverError | None = None  # found while reconnecting
        self._inflight_v: float | None = None  # a setpoint whose send failed (may have left)
        # abort_ramp() counts here (no lock: the ramp holds it); a ramp_to begun before the
        # count moved stops at its next step
        self._aborts = itertools.count(1)
        self._abort_seq = 0
        self._trip_listeners: list[Callable[[], None]] = []

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

    def _send_off_now(self) -> None:  # output off first on the link (backends override)
        self._send_output(False)

    def _read_output_now(self) -> bool:  # the output state, no handshake (backends override)
        return self._read_output()

    def voltage(self) -> float:
        """Measured output voltage, V: a :class:`BadReply` unless finite and physical."""
        return self._measured_v(self._read_voltage())

    def current(self) -> float:
        """Measured output current, A: a :class:`BadReply` unless finite and physical."""
        return self._measured_a(self._read_current())

    def _read_voltage(self) -> float:
        """The measured voltage as the instrument answers it (or a backend's ``voltage``)."""
        raise NotImplementedError

    def _read_current(self) -> float:
        """The measured current as the instrument answers it."""
        raise NotImplementedError

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
        the driver keeps what it commanded, and a read-back it did not send (beyond
        ``setpoint_resolution_v``) with the output on is a fault (:meth:`_check_readback`):
        the output is switched off here and the fault is raised by the call that reconnected
        (a handshake that raised would be retried, and the retry would pass with the output
        off, hiding the fault).
        """
        readback = _finite(self, "setpoint read-back", self._read_setpoint())
        self._on_reported = bool(self._read_output())
        if first:
            self._setpoint_v = self._readback_v = readback
            self._on = self._on_reported
        else:
            try:
                self._check_readback(readback)
            except BadReply as e:
                self._pending_fault = e
        self._t_last_s = self.clock.monotonic()

    def _cmd_text(self, name: str) -> str:
        """The text of the command ``name`` (a field of ``HvCommands``, e.g. "get_voltage"),
        naming it in messages (backends use their wire form)."""
        return getattr(HV, name).text

    def _fault_off(self, command: str | None, detail: str,
                   reply: str | None = None) -> DriverError:
        """A fault while the output may be live: output off first (as safe_off sends it, no
        handshake before it), then read back; the driver's state is off. Returns the
        :class:`BadReply` to raise, naming what was done."""
        try:
            self._send_off_now()
            self._on = self._on_reported = False
            still_on = bool(self._read_output_now())
        except DriverError as e:
            self._mark_broken()
            detail += f"; output off could not be confirmed ({e.detail}): call safe_off()"
        else:
            if still_on:
                self._on_reported = True
                detail += "; output off sent but the output still reads ON"
            else:
                detail += "; output switched off"
        return self.error(BadReply, command, detail, reply)

    def _refuse_live_above_limit(self) -> None:
        """At connect: a supply found on with a setpoint above ``limit_v`` (another program's
        run, a config with a lower limit) is switched off and the connect fails, naming both:
        sending it the limit would make it clamp (a step), and the rule cannot ramp a
        setpoint it may not hold."""
        if self._ramp_applies() and self._readback_v > self._limit_v + self.ramp_tolerance_v:
            e = self._fault_off(self._cmd_text("get_voltage"),
                                f"found on at {_fmt_v(self._readback_v)} V, above limit_v "
                                f"{_fmt_v(self._limit_v)} V", _fmt_v(self._readback_v))
            raise self.error(SafetyError, e.command, e.detail, e.reply)

    def _check_readback(self, readback: float) -> None:
        """A setpoint read-back while the output is on must be a setpoint this driver sent:
        the commanded one, or one whose send failed after it may have left (a timeout before
        its reply; settings are never retried), each within ``setpoint_resolution_v``. Then
        the driver's setpoint is that value (the one it sent, not the reply's rounding), so
        no reply can move the base of the next step anywhere the driver did not put it.
        Anything else is a fault: output off, a :class:`BadReply` naming both values, and
        the setpoint is not moved towards it. With the output off it is only recorded."""
        tol = min(self.setpoint_resolution_v, self._max_step_v)
        inflight, self._inflight_v = self._inflight_v, None
        if not self._ramp_applies():
            self._readback_v = readback
            return
        if inflight is not None and abs(readback - inflight) <= tol + self.ramp_tolerance_v:
            self._setpoint_v = self._readback_v = inflight  # the failed send did arrive
            return
        if abs(readback - self._setpoint_v) <= tol + self.ramp_tolerance_v:
            self._readback_v = self._setpoint_v
            return
        raise self._fault_off(
            self._cmd_text("get_voltage"),
            f"setpoint read-back {_fmt_v(readback)} V disagrees with the commanded "
            f"{_fmt_v(self._setpoint_v)} V while the output is on (the driver sent no such "
            f"setpoint)", _fmt_v(readback))

    def _raise_pending_fault(self) -> None:
        """Raise (once) a fault found while reconnecting."""
        e, self._pending_fault = self._pending_fault, None
        if e is not None:
            raise e

    def _measured(self, what: str, value: float, low: float, high: float,
                  command: str | None) -> float:
        """A measured value: finite and within [low, high], else a BadReply naming it."""
        value = _finite(self, what, value)
        if not (low <= value <= high):
            raise self.error(BadReply, command, f"{what} {value:g} is outside the physical "
                             f"range {low:g} ... {high:g}", repr(value))
        return value

    def _measured_v(self, value: float) -> float:
        return self._measured("measured voltage", value, -self.measure_tolerance_v,
                              2.0 * self._limit_v, self._cmd_text("measure_voltage"))

    def _measured_a(self, value: float) -> float:
        return self._measured("measured current", value, -self.max_current_a,
                              self.max_current_a, self._cmd_text("measure_current"))

    def _ramp_applies(self) -> bool:
        return self._on or self._on_reported

    def _base_v(self) -> float:
        """Where the next step is measured from: the higher of commanded and read back."""
        return max(self._setpoint_v, self._readback_v)

    # public API -------------------------------------------------------------
    def output_on(self) -> bool:
        """The output relay state as the instrument reports it. OFF on an output this driver
        switched on, with no trip reported, is a fault (output off, :class:`BadReply`): a
        watchdog, an interlock or a wrong report (a trip returns False: ``tripped()`` tells)."""
        with self.lock:
            self._ensure()
            self._on_reported = bool(self._read_output())
            if self._on and not self._on_reported and not self.tripped():
                raise self._fault_off(
                    self._cmd_text("get_output"),
                    "the output reads OFF although the driver switched it ON and no trip is "
                    "reported (the supply's watchdog, an interlock or a wrong report)", "0")
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
            self._raise_pending_fault()
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
            self._inflight_v = v  # until the send returns: it may arrive and still fail
            self._send_setpoint(v)
            self._inflight_v = None
            self._setpoint_v = self._readback_v = v
            # the step's time is when it has been sent: a stall between the check above and
            # the bytes leaving must not shorten the gap before the next step
            self._t_last_s = self.clock.monotonic()

    def abort_ramp(self) -> None:
        """Stop every ``ramp_to`` begun before this call at its next step (:class:`Interrupted`;
        the setpoint stays there). Any thread, no lock (the ramp holds it); every off calls it
        first, so an off is never held up behind a ramp."""
        self._abort_seq = next(self._aborts)

    def _interrupt(self) -> None:
        self.abort_ramp()

    def ramp_to(self, volts: float) -> None:
        """Step the setpoint to ``volts`` within the ramp rule; blocks (on the driver's clock)
        until the last setpoint is sent. Steps of at most ``max_step_v`` every ``ramp_step_s``.
        :meth:`abort_ramp` (or an off) from another thread stops it at the next step with
        :class:`Interrupted`."""
        target = quantize_wire(volts)
        begun = self._abort_seq
        with self.lock:
            if not (0 <= target <= self._limit_v):
                self.set_voltage(target)  # raises the SafetyError with the standard message
            self._ensure()
            self._raise_pending_fault()
            self._on_reported = bool(self._read_output())
            self._raise_pending_fault()
            if not self._ramp_applies():
                self.set_voltage(target)
                return
            readback = _finite(self, "setpoint read-back", self._read_setpoint())
            self._raise_pending_fault()
            self._check_readback(readback)
            while True:
                if self._abort_seq != begun:
                    raise self.error(Interrupted, self._cmd_setpoint(target),
                                     f"ramp stopped at {_fmt_v(self._base_v())} V (abort or off "
                                     "asked for)")
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
            reported = self.output_on()
            self._raise_pending_fault()
            if self._on and not reported:
                # switched on by this driver, now reported off: a lie, a trip or a watchdog.
                # Either way not a reason to send 0 V to an output that may be live.
                raise self._fault_off(
                    self._cmd_output(True),
                    "the output reads OFF although the driver switched it ON (a trip, the "
                    "watchdog or a wrong report)")
            if reported:
                self._on = True
                return
            # off as commanded AND as reported: a setpoint to 0 reaches nothing
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
        be sent. A ramp in progress on another thread is stopped first (:meth:`abort_ramp`)."""
        self.abort_ramp()
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
                # stuck on (a relay, a supply ignoring off): the setpoint down within the ramp
                # rule (0 V at once could be a large step on a live output), as far as it goes
                self._on_reported = True
                try:
                    self.ramp_to(0.0)
                    done = "its setpoint ramped down to 0 V within the ramp rule"
                except DriverError as e:
                    done = f"its setpoint ramped to {_fmt_v(self._base_v())} V, then: {e.detail}"
                raise self.error(DriverError, self._cmd_output(False), "the output still reads "
                                 f"ON after output off, sent twice; {done}")
            try:
                self.set_voltage(0.0)
            except DriverError as e:
                log.warning("%s: output off, but setting 0 V failed: %s", self.name, e)

    def _cmd_off(self) -> str:
        return self._cmd_output(False)

    # safe_off (SwitchedInstrument): output off first, then verified off, then setpoint 0 V

