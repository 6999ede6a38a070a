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
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from apt_daq.drivers.clock import Clock
from apt_daq.drivers.errors import SafetyError
from apt_daq.drivers.hv_base import HighVoltageSupply
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
    """An HV supply behind a text link (SCPI session or line session) and a command table."""

    commands: HvCommands = SCPI_HV
    session: ScpiSession | LineSession

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

    # lifecycle --------------------------------------------------------------
    def _handshake(self) -> None:
        c = self.commands
        if c.clear_status:
            self.session.send(c.clear_status)  # type: ignore[union-attr]
        self.idn = self.session.ask(c.idn, parse_str)
        # what the supply is doing before anything is set: a limit sent to a live output
        # above it would make the supply clamp, a step of any size
        self._sync(first=not self.connected)
        self._refuse_live_above_limit()
        self.session.write(c.set_limit.format(fmt_number(self.limit_v)))
        if self.hardware_ramp:
            if not c.set_slew:
                raise self.error(SafetyError, None, "hardware_ramp: this command set has no "
                                 "slew command")
            self.session.write(c.set_slew.format(fmt_number(self.ramp_v_per_s)))
        self._arm_watchdog()

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

    def _send_output(self, on: bool) -> None:
        self.session.write(self._cmd_output(on))

    def _read_setpoint(self) -> float:
        return self.session.ask(self.commands.get_voltage, parse_float)

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
