"""Laser backend over SCPI (pyvisa). The command table is the manual.

On connect: ``*CLS`` then ``*IDN?``. Every setting is followed by ``SYST:ERR?``.
"""

from __future__ import annotations

from dataclasses import dataclass

from apt_daq.drivers.base import Clock, HighVoltageSupply, Laser
from apt_daq.drivers.scpi import (
    ScpiSession,
    SessionLifecycle,
    Transport,
    fmt_number,
    parse_bool,
    parse_float,
    parse_str,
)


@dataclass(frozen=True)
class LaserCommands:
    idn: str = "*IDN?"
    clear_status: str = "*CLS"
    reset: str = "*RST"
    set_energy: str = "SOUR:PULS:ENER {}"  # pJ
    get_energy: str = "SOUR:PULS:ENER?"
    set_rate: str = "SOUR:PULS:FREQ {}"  # Hz
    get_rate: str = "SOUR:PULS:FREQ?"
    emission_on: str = "OUTP ON"
    emission_off: str = "OUTP OFF"
    get_emission: str = "OUTP?"
    get_interlock: str = "SYST:INTL?"  # 1 open, 0 closed


SCPI_LASER = LaserCommands()


class ScpiLaser(SessionLifecycle, Laser):
    """A pulsed laser speaking the SCPI set of ``docs/protocols.md``."""

    commands = SCPI_LASER
    session: ScpiSession

    def __init__(self, transport: Transport, resource: str, *, max_energy_pj: float = 100.0,
                 hv: HighVoltageSupply | None = None, retries: int = 2,
                 reconnect_deadline_s: float = 10.0, clock: Clock | None = None):
        super().__init__(resource, max_energy_pj=max_energy_pj, hv=hv, clock=clock)
        self.session = ScpiSession(transport, self.name, retries=retries, clock=self.clock,
                                   reconnect_deadline_s=reconnect_deadline_s,
                                   on_reconnect=self._handshake)
        self.idn = ""

    def _handshake(self) -> None:
        self.session.send(self.commands.clear_status)
        self.idn = self.session.ask(self.commands.idn, parse_str)

    def _cmd_emission(self, on: bool) -> str:
        return self.commands.emission_on if on else self.commands.emission_off

    def _send_energy(self, pj: float) -> None:
        self.session.write(self.commands.set_energy.format(fmt_number(pj)))

    def _send_pulse_rate(self, hz: float) -> None:
        self.session.write(self.commands.set_rate.format(fmt_number(hz)))

    def _send_emission(self, on: bool) -> None:
        self.session.write(self._cmd_emission(on))

    def _send_off_now(self) -> None:
        self.session.send_now(self.commands.emission_off)

    def _read_emission_now(self) -> bool:
        return self.session.ask_now(self.commands.get_emission, parse_bool)

    def energy(self) -> float:
        with self.lock:
            return self.session.ask(self.commands.get_energy, parse_float)

    def pulse_rate(self) -> float:
        with self.lock:
            return self.session.ask(self.commands.get_rate, parse_float)

    def emission_on(self) -> bool:
        with self.lock:
            return self.session.ask(self.commands.get_emission, parse_bool)

    def interlock_open(self) -> bool:
        with self.lock:
            return self.session.ask(self.commands.get_interlock, parse_bool)
