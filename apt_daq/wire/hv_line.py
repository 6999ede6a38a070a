"""The terse HV line protocol, shared by the serial driver (:mod:`apt_daq.drivers.serial_line`,
:data:`apt_daq.drivers.hv.LINE_HV`) and the emulator's line interface
(:mod:`apt_daq.sim.serial_server`): its terminator, command table and error codes.

ASCII lines terminated by CR LF both ways; every command gets exactly one reply line: a
setting answers ``OK``, a query its value, a refused command ``ERR <code> <message>``.
Error codes: 1 unknown command, 2 bad argument, 3 out of range, 4 tripped, 5 other.
"""

from __future__ import annotations

from dataclasses import dataclass

EOL = "\r\n"
ERR_UNKNOWN, ERR_ARGUMENT, ERR_RANGE, ERR_TRIPPED, ERR_OTHER = 1, 2, 3, 4, 5
OK = "OK"


@dataclass(frozen=True)
class LineCommand:
    """One command: its head (``V``, ``V?``), whether it takes a number, its meaning."""

    head: str
    takes_number: bool = False
    doc: str = ""

    @property
    def text(self) -> str:
        """The command with ``{}`` for its number: ``V {}``, ``V?``."""
        return self.head + (" {}" if self.takes_number else "")


L = LineCommand


class LineHvCommands:
    """The HV supply's line protocol (replies: numbers fixed 3 decimals, current %.6e, 1/0)."""

    idn = L("ID?", doc="identity")
    set_voltage = L("V", True, "setpoint, V")
    get_voltage = L("V?", doc="setpoint, V")
    set_limit = L("L", True, "limit, V (the supply refuses V above it)")
    get_limit = L("L?", doc="limit, V")
    set_output = L("O", True, "output relay, 1 or 0")
    get_output = L("O?", doc="output relay, 1 or 0")
    measure_voltage = L("M?", doc="measured voltage, V")
    measure_current = L("I?", doc="measured current, A")
    get_trip = L("T?", doc="over-current trip latched, 1 or 0")
    clear_trip = L("C", doc="clear the trip (output stays off)")
    reset = L("R", doc="reset: output off, setpoint 0, limit = maximum")
    set_slew = L("S", True, "the supply's own slew rate, V/s")
    get_slew = L("S?", doc="the supply's own slew rate, V/s")
    get_error = L("E?", doc="last error (0 No error | <code> <msg>), then cleared")
    set_watchdog = L("W", True, "link watchdog, s: no command for this long turns the output "
                                "off; 0 disarms")
    get_watchdog = L("W?", doc="link watchdog, s (0: disarmed)")


LINE = LineHvCommands()


def line_commands() -> dict[str, LineCommand]:
    """Every command of :data:`LINE` by its name."""
    return {k: v for k, v in vars(LineHvCommands).items() if isinstance(v, LineCommand)}
