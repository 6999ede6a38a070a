"""Laser backend over SCPI (pyvisa). The command table is the manual.

On connect: ``*CLS``, ``*IDN?``, ``OUTP?``, ``SOUR:PULS:ENER?`` (the state before anything is
set: :meth:`Laser._sync_state`), and with ``watchdog_s`` > 0 ``SYST:COMM:WATC <s>`` (the
link watchdog, fed by a keepalive while connected). Every setting is followed by
``SYST:ERR?``.
"""

from __future__ import annotations

from dataclasses import dataclass

from apt_daq.drivers.clock import Clock
from apt_daq.drivers.hv_base import HighVoltageSupply
from apt_daq.drivers.laser_base import Laser
from apt_daq.drivers.link import SessionLifecycle
from apt_daq.drivers.scpi import ScpiSession
from apt_daq.drivers.transports import Transport

from apt_daq.wire.scpi_commands import LASER, fmt_number, parse_bool, parse_float, parse_str


@dataclass(frozen=True)
class LaserCommands:
    """The laser's command texts, as :data:`apt_daq.wire.scpi_commands.LASER` declares them
    (``{}`` is a number formatted by ``fmt_number``)."""

    idn: str = LASER.idn.text
    clear_status: str = LASER.clear_status.text
    reset: str = LASER.reset.text
    set_energy: str = LASER.set_energy.text  # pJ
    get_energy: str = LASER.get_energy.text
    set_rate: str = LASER.set_rate.text  # Hz
    get_rate: str = LASER.get_rate.text
    emission_on: str = LASER.set_emission.format(True)
    emission_off: str = LASER.set_emission.format(False)
    get_emission: str = LASER.get_emission.text
    get_interlock: str = LASER.get_interlock.text  # 1 open, 0 closed
    set_watchdog: str = LASER.set_watchdog.text  # the link watchdog, s
    get_watchdog: str = LASER.get_watchdog.text


SCPI_LASER = LaserCommands()


class ScpiLaser(SessionLifecycle, Laser):
    """A pulsed laser speaking the SCPI set of ``docs/protocols.md``."""

    commands = SCPI_LASER
    session: ScpiSession

    def __init__(self, transport: Transport, resource: str, *, max_energy_pj: float = 100.0,
                 hv: HighVoltageSupply | None = None, retries: int = 2,
                 reconnect_deadline_s: float = 10.0, watchdog_s: float = 0.0,
                 clock: Clock | None = None):
        super().__init__(resource, max_energy_pj=max_energy_pj, hv=hv, clock=clock)
        self.watchdog_s = float(watchdog_s)
        self.session = ScpiSession(transport, self.name, retries=retries, clock=self.clock,
                                   reconnect_deadline_s=reconnect_deadline_s,
                                   on_reconnect=self._handshake)
        self.idn = ""

    def _handshake(self) -> None:
        self.session.send(self.commands.clear_status)
        self.idn = self.session.ask(self.commands.idn, parse_str)
        self._sync_state(first=not self.connected)
        self._arm_watchdog()

    def _watchdog_commands(self) -> tuple[str, str]:
        return self.commands.set_watchdog, self.commands.get_watchdog

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

    def _read_state_in_handshake(self) -> tuple[bool, float]:
        return (self.session.ask(self.commands.get_emission, parse_bool),
                self.session.ask(self.commands.get_energy, parse_float))

    def energy(self) -> float:
        return self._query(self.commands.get_energy, parse_float)

    def pulse_rate(self) -> float:
        return self._query(self.commands.get_rate, parse_float)

    def emission_on(self) -> bool:
        return self._query(self.commands.get_emission, parse_bool)

    def interlock_open(self) -> bool:
        return self._query(self.commands.get_interlock, parse_bool)
