"""HV supply backends over a link: SCPI (pyvisa) and the terse serial line protocol.

Both are the same driver reading a different command table, PyMeasure style: the table is
the manual. The safety rules are inherited from :class:`apt_daq.drivers.base.HighVoltageSupply`.

On connect (and on every reconnect) the driver sends, in order (SCPI form)::

    *CLS                      clear the error queue (SCPI only)
    *IDN?                     identity, kept in .idn
    SOUR:VOLT:LIM <limit_v>   the instrument enforces the limit too; then SYST:ERR?
    [SOUR:VOLT:SLEW <V/s>]    with hardware_ramp; then SYST:ERR?
    [SYST:COMM:WATC <s>]      with watchdog_s > 0: the link watchdog; then SYST:ERR?
    SOUR:VOLT?                the setpoint in force
    OUTP?                     the output state in force
    [MEAS:VOLT?]              on the first connect, with the output found on: the setpoint
                              read-back must agree with it before it is adopted

Read-backs are held to what the supply measures (:class:`LinkedHv`): with the output on, a
measured voltage off the setpoints of the last ``settle_s`` (and, every ``settle_s``, a setpoint
read-back off the commanded one) is a fault: output off, read back, a :class:`BadReply`; so is
a measured voltage above ``limit_v`` by more than a meter's error (:meth:`LinkedHv.over_limit_v`).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, fields
from typing import Any

from apt_daq.drivers.clock import Clock
from apt_daq.drivers.errors import BadReply, SafetyError
from apt_daq.drivers.hv_base import HighVoltageSupply
from apt_daq.drivers.instrument import _finite, _fmt_v
from apt_daq.drivers.link import SessionLifecycle
from apt_daq.drivers.scpi import ScpiSession
from apt_daq.drivers.serial_line import LineSession
from apt_daq.drivers.transports import Transport

from apt_daq.wire.hv_line import LINE
from apt_daq.wire.scpi_commands import HV, fmt_number, parse_bool, parse_float, parse_str


@dataclass(frozen=True)
class HvCommands:
    """One HV supply command set. ``{}`` is a number formatted by ``fmt_number`` (V)."""

    idn: str
    clear_status: str | None
    set_limit: str
    get_limit: str
    set_voltage: str
    get_voltage: str
    output_on: str
    output_off: str
    get_output: str
    measure_voltage: str
    measure_current: str
    get_trip: str
    clear_trip: str
    reset: str
    set_slew: str | None = None  # the supply's own ramp, V/s (hardware_ramp)
    get_slew: str | None = None
    set_watchdog: str | None = None  # the link watchdog, s (watchdog_s)
    get_watchdog: str | None = None


def _commands(table: Any, **special: Any) -> HvCommands:
    """An :class:`HvCommands` of ``table``'s commands of the same names, ``special`` given."""
    names = [f.name for f in fields(HvCommands) if f.name not in special]
    return HvCommands(**{n: getattr(table, n).text for n in names}, **special)


SCPI_HV = _commands(HV, output_on=HV.set_output.format(True),
                    output_off=HV.set_output.format(False))
"""The standard SCPI subset (LF terminated, over a TCP socket or any VISA resource), as
:data:`apt_daq.wire.scpi_commands.HV` declares it."""

LINE_HV = _commands(LINE, clear_status=None, output_on=LINE.set_output.text.format(1),
                    output_off=LINE.set_output.text.format(0))
"""The terse serial line protocol (CR LF terminated), as :data:`apt_daq.wire.hv_line.LINE`
declares it; see ``drivers/serial_line.py``."""


class LinkedHv(SessionLifecycle, HighVoltageSupply):
    """An HV supply behind a text link (SCPI session or line session) and a command table.

    Besides the rules of :class:`HighVoltageSupply`, its read-backs are held to what it
    measures (audit 2, S3 and S5), with the output on:

    - found on at the first connect, its setpoint read-back is adopted only if the measured
      voltage agrees with it (:meth:`agreement_v`); otherwise the read-back cannot be the
      base of the ramp rule (a supply on at 5000 V answering ``SOUR:VOLT? 0.000`` got a 4900
      V step): output off, read back, a :class:`BadReply` naming both values, the connect
      fails;
    - ``voltage()`` (read by the run engine every block): once the output has been on for
      ``settle_s``, a measured voltage outside the band of the setpoints in force over the
      last ``settle_s`` (widened by :meth:`agreement_v`) is a fault, unless the output reads
      off because of a trip (then the trip is what the caller sees); and every ``settle_s``
      the setpoint read-back is checked as ``ramp_to`` checks it. A supply lagging its
      setpoint by up to ``settle_s`` (a ramp, a feedback loop stepping every block) measures
      inside the band.
    """

    commands: HvCommands = SCPI_HV
    session: ScpiSession | LineSession
    #: how far a measured voltage may be from a settled setpoint: ``agreement_floor_v`` +
    #: ``agreement_fraction`` x the voltage (:meth:`agreement_v`)
    agreement_floor_v = 50.0
    agreement_fraction = 0.05
    #: the supply has settled after ``settle_steps`` x ``ramp_step_s``, and at least
    #: ``settle_min_s`` (its output's own rise time)
    settle_steps = 4
    settle_min_s = 1.0

    def __init__(self, session: ScpiSession | LineSession, resource: str, *, limit_v: float,
                 ramp_v_per_s: float, ramp_step_s: float = 0.5, max_step_v: float | None = None,
                 hardware_ramp: bool = False, watchdog_s: float = 0.0,
                 clock: Clock | None = None):
        super().__init__(resource, limit_v=limit_v, ramp_v_per_s=ramp_v_per_s,
                         ramp_step_s=ramp_step_s, max_step_v=max_step_v,
                         hardware_ramp=hardware_ramp, clock=clock)
        self.watchdog_s = float(watchdog_s)
        self.session = session
        session.name = self.name
        session.clock = self.clock
        session.on_reconnect = self._handshake
        self.idn = ""
        #: (clock time sent, V) of the setpoints of the last ``settle_s`` (and the one in
        #: force before them)
        self._sent: deque[tuple[float, float]] = deque()
        self._t_switched_s = 0.0  # when the output was last switched (or found on)
        self._t_sp_read_s = 0.0  # when the setpoint was last read back

    @property
    def settle_s(self) -> float:
        """How far behind its setpoint a supply's measured voltage may lag, s."""
        return max(self.settle_steps * self.ramp_step_s, self.settle_min_s)

    def agreement_v(self, volts: float) -> float:
        """The largest difference, V, between a measured voltage and a setpoint of about
        ``volts`` the supply has settled to: 50 V + 5 % of it. A supply's meter is good to
        0.01 ... 0.1 % of its full scale (at most 30 V at 30 kV) plus ripple, and a settled
        output within its load regulation; 5 % of the reading leaves room for a slow tail.
        A reading outside it is not a measurement of this output (0 V at 545 V on)."""
        return self.agreement_floor_v + self.agreement_fraction * abs(volts)

    def over_limit_v(self) -> float:
        """How far above ``limit_v`` a measured voltage may read before it is a fault, V:
        10 V + 0.5 % of the limit (a meter good to 0.1 % of its full scale, plus ripple). The
        agreement band alone would let a supply near its limit deliver 5 % above it."""
        return 10.0 + 0.005 * self.limit_v

    # lifecycle --------------------------------------------------------------
    def _handshake(self) -> None:
        c = self.commands
        if c.clear_status:
            self.session.send(c.clear_status)  # type: ignore[union-attr]
        self.idn = self.session.ask(c.idn, parse_str)
        # what the supply is doing before anything is set: a limit sent to a live output
        # above it would make the supply clamp, a step of any size
        first = not self.connected
        self._sync(first=first)
        if first and self._on_reported:
            self._check_found_on()
        self._refuse_live_above_limit()
        self.session.write(c.set_limit.format(fmt_number(self.limit_v)))
        if self.hardware_ramp:
            if not c.set_slew:
                raise self.error(SafetyError, None, "hardware_ramp: this command set has no "
                                 "slew command")
            self.session.write(c.set_slew.format(fmt_number(self.ramp_v_per_s)))
        self._arm_watchdog()

    def _check_found_on(self) -> None:
        """First connect, output found on: the setpoint read-back becomes the driver's only
        if the measured voltage agrees with it, at once or, as a supply still following a
        setpoint just given would, within ``settle_s`` (measured every ``ramp_step_s``;
        nothing is sent meanwhile). Else output off (read back) and a BadReply naming both
        (the connect fails)."""
        c = self.commands
        readback = self._readback_v
        deadline = self.clock.monotonic() + self.settle_s
        while True:
            try:
                measured = self._measured_v(self._read_voltage())
            except BadReply as e:
                raise self._fault_off(c.measure_voltage, f"found on: {e.detail}",
                                      e.reply) from e
            tol = self.agreement_v(max(abs(measured), readback))
            left = deadline - self.clock.monotonic()
            if abs(measured - readback) <= tol or left <= 0:
                break
            self.clock.sleep(min(self.ramp_step_s, left))
        if abs(measured - readback) > tol:
            raise self._fault_off(
                c.get_voltage,
                f"found on with a setpoint read-back of {_fmt_v(readback)} V but a measured "
                f"{_fmt_v(measured)} V (more than {_fmt_v(tol)} V apart after "
                f"{self.settle_s:g} s): the read-back cannot be the base of the ramp rule",
                _fmt_v(readback))
        self._sent = deque([(self.clock.monotonic(), readback)])
        self._t_switched_s = self.clock.monotonic()

    def _watchdog_commands(self) -> tuple[str, str] | None:
        c = self.commands
        return None if not (c.set_watchdog and c.get_watchdog) else (c.set_watchdog,
                                                                     c.get_watchdog)

    def _ensure(self) -> None:
        self.session.ensure()

    # primitives -------------------------------------------------------------
    def _cmd_setpoint(self, volts: float) -> str:
        return self.commands.set_voltage.format(fmt_number(volts))

    def _cmd_output(self, on: bool) -> str:
        return self.commands.output_on if on else self.commands.output_off

    def _cmd_text(self, name: str) -> str:
        return getattr(self.commands, name)

    def _send_setpoint(self, volts: float) -> None:
        self.session.write(self._cmd_setpoint(volts))
        now = self.clock.monotonic()
        self._sent.append((now, volts))
        self._prune_sent(now)

    def _send_output(self, on: bool) -> None:
        self.session.write(self._cmd_output(on))
        self._t_switched_s = self.clock.monotonic()

    def _read_setpoint(self) -> float:
        value = self.session.ask(self.commands.get_voltage, parse_float)
        self._t_sp_read_s = self.clock.monotonic()
        return value

    def _read_output(self) -> bool:
        return self.session.ask(self.commands.get_output, parse_bool)

    def _send_clear_trip(self) -> None:
        self.session.write(self.commands.clear_trip)

    def _send_off_now(self) -> None:
        # the line protocol answers every command (OK): read it so the link stays in step
        self.session.send_now(self.commands.output_off,
                              reply=isinstance(self.session, LineSession))

    def _read_output_now(self) -> bool:
        return self.session.ask_now(self.commands.get_output, parse_bool)

    # queries ----------------------------------------------------------------
    def _read_voltage(self) -> float:
        return self._query(self.commands.measure_voltage, parse_float)

    def voltage(self) -> float:
        """Measured output voltage, V: a :class:`BadReply` unless finite and physical, and,
        with the output on, unless it agrees with a setpoint of the last ``settle_s`` (then
        the output is switched off first); every ``settle_s`` the setpoint read-back is checked
        too (:meth:`HighVoltageSupply._check_readback`)."""
        with self.lock:
            measured = self._measured_v(self._read_voltage())
            if measured > self.limit_v + self.over_limit_v():
                raise self._fault_off(
                    self.commands.measure_voltage,
                    f"measured voltage {_fmt_v(measured)} V is above limit_v "
                    f"{_fmt_v(self.limit_v)} V (by more than its meter's "
                    f"{_fmt_v(self.over_limit_v())} V)", _fmt_v(measured))
            if self._on:
                self._judge_measured(measured)
            if self._on and self.clock.monotonic() - self._t_sp_read_s >= self.settle_s:
                self._check_readback(_finite(self, "setpoint read-back",
                                             self._read_setpoint()))
            return measured

    def _prune_sent(self, now: float) -> None:
        """Keep the setpoints of the last ``settle_s`` and the one in force before them."""
        cut = now - self.settle_s
        while len(self._sent) > 1 and self._sent[1][0] <= cut:
            self._sent.popleft()

    def _setpoint_band(self) -> tuple[float, float] | None:
        """(lowest, highest) setpoint in force over the last ``settle_s``, once the output has
        been on that long; None while the supply may still be following a switch on. A
        supply lagging its setpoint by up to ``settle_s`` measures inside this band; a
        feedback loop moving the setpoint every block is judged too."""
        now = self.clock.monotonic()
        if now - self._t_switched_s < self.settle_s:
            return None
        self._prune_sent(now)
        if self._sent and self._sent[0][0] > now - self.settle_s:
            return None  # every setpoint kept is recent: the one in force before is unknown
        values = [v for _, v in self._sent] + [self._setpoint_v]
        return min(values), max(values)

    def _judge_measured(self, measured: float) -> None:
        """A measured voltage far from every setpoint of the last ``settle_s``, output on: a trip (the output
        reads off, ``tripped()``) is left to the caller; anything else is a fault, output
        off first (``output_on()`` raises its own fault if the output reads off untripped)."""
        band = self._setpoint_band()
        if band is None:
            return
        low, high = band
        tol = self.agreement_v(max(high, abs(measured)))
        if low - tol <= measured <= high + tol or not self.output_on():
            return
        raise self._fault_off(
            self.commands.measure_voltage,
            f"measured voltage {_fmt_v(measured)} V with the output on and setpoints of "
            f"{_fmt_v(low)}-{_fmt_v(high)} V over the last {self.settle_s:g} s (more than "
            f"{_fmt_v(tol)} V apart: the supply does not deliver its setpoint, or its "
            "read-back is wrong)",
            _fmt_v(measured))

    def _read_current(self) -> float:
        return self._query(self.commands.measure_current, parse_float)

    def tripped(self) -> bool:
        with self.lock:
            t = self.session.ask(self.commands.get_trip, parse_bool)
            if t:
                self._on = False  # a trip latches the output off
            return t

    def instrument_limit_v(self) -> float:
        """The limit the instrument itself enforces, V."""
        return self._query(self.commands.get_limit, parse_float)

    def reset(self) -> None:
        """Instrument reset (output off, setpoint 0), then the connect handshake again."""
        with self.lock:
            self.session.write(self.commands.reset)
            self._setpoint_v, self._on = 0.0, False  # what a reset leaves
            self._handshake()


class _TransportHv(LinkedHv):
    """A LinkedHv that builds its session (``session_class``) on a transport."""

    session_class: type[ScpiSession] | type[LineSession]

    def __init__(self, transport: Transport, resource: str, *, limit_v: float,
                 ramp_v_per_s: float, ramp_step_s: float = 0.5, max_step_v: float | None = None,
                 retries: int = 2, reconnect_deadline_s: float = 10.0,
                 hardware_ramp: bool = False, watchdog_s: float = 0.0,
                 clock: Clock | None = None):
        super().__init__(self.session_class(transport, resource, retries=retries,
                                            reconnect_deadline_s=reconnect_deadline_s),
                         resource, limit_v=limit_v, ramp_v_per_s=ramp_v_per_s,
                         ramp_step_s=ramp_step_s, max_step_v=max_step_v,
                         hardware_ramp=hardware_ramp, watchdog_s=watchdog_s, clock=clock)


class ScpiHv(_TransportHv):
    """HV supply speaking the SCPI subset of ``docs/protocols.md``."""

    commands = SCPI_HV
    session_class = ScpiSession


class SerialHv(_TransportHv):
    """HV supply speaking the terse line protocol of ``drivers/serial_line.py``."""

    commands = LINE_HV
    session_class = LineSession
