"""The SCPI command sets of the HV supply and the laser: the one place that says what each
command is called, what argument it takes, what it answers and which error codes exist.

Both sides read it: the drivers (:mod:`apt_daq.drivers.hv`, :mod:`apt_daq.drivers.laser`, the
messages of :mod:`apt_daq.drivers.hv_base` / :mod:`apt_daq.drivers.laser_base` and the labels of
:mod:`apt_daq.drivers.sim_backends`) build the text they send with :meth:`ScpiCommand.format`
and parse replies with :meth:`ScpiCommand.parse`; the emulator's SCPI server
(:mod:`apt_daq.sim.scpi_server`) builds its parser from :meth:`ScpiCommand.pattern` and its
replies with :meth:`ScpiCommand.reply`. The table is documented for users in
``docs/protocols.md``; ``configs/pyvisa-sim/*.yaml`` answers every query of it (tested).

A command is written as in an instrument manual: ``SOURce:VOLTage:LIMit`` (the capitals are
the short form a driver sends, the whole word the long form a server also accepts, either in
any case), ``[:STATe]`` an optional node, ``INTL|INTERLOCK`` two spellings of one node, a
trailing ``?`` a query.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal

# --------------------------------------------------------------------------- formats

#: a number as a server accepts it (SCPI <NRf>)
NUMBER_RE = r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)"
#: a boolean as a server accepts it
BOOL_RE = r"(ON|OFF|1|0)"

Arg = Literal["number", "bool"]
Reply = Literal["fixed", "sci", "bool", "text"]


def fmt_number(x: float) -> str:
    """A number as the drivers send it: fixed point, at most 3 decimals, no trailing zeros."""
    return f"{float(x):.3f}".rstrip("0").rstrip(".")


def parse_float(reply: str) -> float:
    """A finite number. ``nan``/``inf`` (which ``float`` accepts) are refused: a read-back the
    safety rules rely on must be a real value."""
    if "_" in reply:  # float() takes "1_000": no instrument writes a number so
        raise ValueError(f"not a number: {reply.strip()!r}")
    value = float(reply.strip())
    if not math.isfinite(value):
        raise ValueError(f"not a finite number: {reply.strip()!r}")
    return value


def parse_bool(reply: str) -> bool:
    """``1``/``0`` (also ``ON``/``OFF``, as some instruments answer ``OUTP?``)."""
    r = reply.strip().upper()
    if r in ("1", "ON"):
        return True
    if r in ("0", "OFF"):
        return False
    raise ValueError(f"not 1/0/ON/OFF: {reply!r}")


def parse_str(reply: str) -> str:
    return reply.strip()


def arg_is_on(text: str) -> bool:
    """A boolean argument as a server reads it (``ON``/``1``, any case)."""
    return text.upper() in ("ON", "1")


# --------------------------------------------------------------------------- error codes

NO_ERROR = 0
DATA_TYPE_ERROR = -104  # a number that does not parse
PARAMETER_NOT_ALLOWED = -108  # an argument after a command that takes none
UNDEFINED_HEADER = -113  # unknown command
DATA_OUT_OF_RANGE = -222  # setpoint above the limit, energy or rate out of range
TOO_MUCH_DATA = -223  # a command line over the server's limit
DEVICE_SPECIFIC = -300  # output on while tripped; emission while the interlock is open
QUEUE_OVERFLOW = -350  # the error queue was full

#: SCPI-99's message of each code the instruments use (``SYST:ERR?`` answers ``code,"msg"``)
ERROR_MESSAGES: dict[int, str] = {
    NO_ERROR: "No error", -100: "Command error", DATA_TYPE_ERROR: "Data type error",
    PARAMETER_NOT_ALLOWED: "Parameter not allowed", UNDEFINED_HEADER: "Undefined header",
    DATA_OUT_OF_RANGE: "Data out of range", TOO_MUCH_DATA: "Too much data",
    DEVICE_SPECIFIC: "Device-specific error", QUEUE_OVERFLOW: "Queue overflow",
}

_ERR = re.compile(r'^\s*([+-]?\d+)\s*,\s*"?(.*?)"?\s*$')


def format_error(code: int, message: str) -> str:
    """A ``SYST:ERR?`` reply: ``code,"message"`` (a quote in the message doubled)."""
    return '{},"{}"'.format(code, message.replace('"', '""'))


def parse_error(reply: str) -> tuple[int, str]:
    """``SYST:ERR?`` reply ``code,"message"`` -> (code, message); ``0,"No error"`` is (0, ...)."""
    m = _ERR.match(reply)
    # the message may come unquoted, but it is words: "5,000" is a number (a reply out of step)
    if not m or not re.search(r"[A-Za-z]", m.group(2)):
        raise ValueError(f'not code,"message": {reply!r}')
    return int(m.group(1)), m.group(2)


# --------------------------------------------------------------------------- commands


def _node_short(node: str) -> str:
    return node.split("|")[0] if "|" in node else "".join(c for c in node if not c.islower())


def _node_pattern(node: str) -> str:
    if "|" in node:
        return "(?:" + "|".join(re.escape(s.upper()) for s in node.split("|")) + ")"
    short = _node_short(node)
    rest = node[len(short):].upper()
    assert node.upper().startswith(short), f"{node}: the short form must be a prefix"
    return re.escape(short) + (f"(?:{re.escape(rest)})?" if rest else "")


@dataclass(frozen=True)
class ScpiCommand:
    """One command or query: its manual syntax, argument, reply format, unit and meaning."""

    syntax: str
    arg: Arg | None = None
    reply_format: Reply | None = None
    unit: str = ""
    doc: str = ""

    @property
    def is_query(self) -> bool:
        return self.syntax.endswith("?")

    def _nodes(self) -> list[tuple[str, bool]]:
        """(node, optional) of the header, without the ``?``."""
        body = self.syntax.rstrip("?")
        out = []
        for part in re.findall(r"\[:[^\]]+\]|:?[^:\[]+", body):
            optional = part.startswith("[")
            out.append((part.strip("[]:"), optional))
        return out

    @property
    def header(self) -> str:
        """The short form a driver sends (optional nodes left out): ``SOUR:VOLT:LIM``."""
        return ":".join(_node_short(n) for n, opt in self._nodes() if not opt) + (
            "?" if self.is_query else "")

    @property
    def text(self) -> str:
        """The short form with ``{}`` for the argument: ``SOUR:VOLT {}``, ``OUTP?``."""
        return self.header + (" {}" if self.arg else "")

    def format(self, value: float | bool | None = None) -> str:
        """The line a driver sends: numbers by :func:`fmt_number`, booleans ``ON``/``OFF``."""
        if self.arg is None:
            return self.header
        if self.arg == "bool":
            return f"{self.header} {'ON' if value else 'OFF'}"
        assert value is not None, f"{self.syntax} takes a number"
        return f"{self.header} {fmt_number(float(value))}"

    def pattern(self) -> str:
        """The regex a server matches a whole line against (case-insensitively): short or long
        form, optional nodes, the argument captured as a group."""
        out = ""
        for i, (node, optional) in enumerate(self._nodes()):
            sep = "" if i == 0 else ":"
            piece = sep + _node_pattern(node)
            out += f"(?:{piece})?" if optional else piece
        if self.is_query:
            out += r"\?"
        if self.arg == "number":
            out += r"\s+" + NUMBER_RE
        elif self.arg == "bool":
            out += r"\s+" + BOOL_RE
        return out

    def reply(self, value: float | bool | str) -> str:
        """The reply line a server sends for ``value``."""
        if self.reply_format == "fixed":
            return f"{float(value):.3f}"
        if self.reply_format == "sci":
            return f"{float(value):.6e}"
        if self.reply_format == "bool":
            return "1" if value else "0"
        return str(value)

    def parse(self, reply: str) -> float | bool | str:
        """A reply as a driver reads it (ValueError if it is not what the command returns)."""
        if self.reply_format in ("fixed", "sci"):
            return parse_float(reply)
        if self.reply_format == "bool":
            return parse_bool(reply)
        return parse_str(reply)


C = ScpiCommand


class CommonCommands:
    """IEEE 488.2 common commands and the error queue, which both instruments have."""

    idn = C("*IDN?", reply_format="text", doc="identity: maker,model,serial,firmware")
    reset = C("*RST", doc="reset: output/emission off, setpoint 0, limit to the maximum")
    clear_status = C("*CLS", doc="clear the error queue")
    operation_complete = C("*OPC?", reply_format="text", doc="operations complete: 1")
    error = C("SYSTem:ERRor[:NEXT]?", reply_format="text",
              doc='oldest queued error: code,"message" (0,"No error")')
    set_watchdog = C("SYSTem:COMMunicate:WATChdog", "number", unit="s",
                     doc="link watchdog: no command line for this long turns the output "
                         "(emission) off; 0 disarms")
    get_watchdog = C("SYSTem:COMMunicate:WATChdog?", reply_format="fixed", unit="s",
                     doc="link watchdog timeout (0: disarmed)")


class HvScpiCommands(CommonCommands):
    """The HV supply's SCPI subset."""

    set_limit = C("SOURce:VOLTage:LIMit", "number", unit="V",
                  doc="instrument-side limit; a higher setpoint is clamped to it")
    get_limit = C("SOURce:VOLTage:LIMit?", reply_format="fixed", unit="V")
    set_slew = C("SOURce:VOLTage:SLEW", "number", unit="V/s",
                 doc="the supply's own ramp: the output follows a setpoint this fast")
    get_slew = C("SOURce:VOLTage:SLEW?", reply_format="fixed", unit="V/s")
    set_voltage = C("SOURce:VOLTage", "number", unit="V", doc="setpoint")
    get_voltage = C("SOURce:VOLTage?", reply_format="fixed", unit="V", doc="setpoint")
    get_trip = C("OUTPut:PROTection:TRIP?", reply_format="bool",
                 doc="over-current trip latched (the output is then off)")
    clear_trip = C("OUTPut:PROTection:CLEar", doc="clear the trip; the output stays off")
    set_output = C("OUTPut", "bool", doc="output relay")
    get_output = C("OUTPut[:STATe]?", reply_format="bool", doc="output relay")
    measure_voltage = C("MEASure:VOLTage?", reply_format="fixed", unit="V",
                        doc="measured output (0 with the output off)")
    measure_current = C("MEASure:CURRent?", reply_format="sci", unit="A",
                        doc="measured output current")


class LaserScpiCommands(CommonCommands):
    """The pulsed laser's SCPI set."""

    set_energy = C("SOURce:PULSe:ENERgy", "number", unit="pJ", doc="pulse energy")
    get_energy = C("SOURce:PULSe:ENERgy?", reply_format="fixed", unit="pJ")
    set_rate = C("SOURce:PULSe:FREQuency", "number", unit="Hz", doc="repetition rate")
    get_rate = C("SOURce:PULSe:FREQuency?", reply_format="fixed", unit="Hz")
    set_emission = C("OUTPut", "bool", doc="emission")
    get_emission = C("OUTPut[:STATe]?", reply_format="bool", doc="emission")
    get_interlock = C("SYSTem:INTL|INTERLOCK?", reply_format="bool",
                      doc="safety interlock: 1 open (emission impossible), 0 closed")


COMMON = CommonCommands()
HV = HvScpiCommands()
LASER = LaserScpiCommands()


def commands(table: CommonCommands) -> dict[str, ScpiCommand]:
    """Every command of ``table`` by its name, the common ones first."""
    out: dict[str, ScpiCommand] = {}
    for cls in reversed(type(table).__mro__):
        out.update({k: v for k, v in vars(cls).items() if isinstance(v, ScpiCommand)})
    return out
