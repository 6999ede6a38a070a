"""The pulsed laser's driver interface: energy ceiling, no emission while the attached HV supply
reports a trip, safe off. A backend implements the ``_send_*`` primitives and the queries."""

from __future__ import annotations

import abc
import math

from apt_daq.drivers.clock import Clock
from apt_daq.drivers.errors import DriverError, SafetyError
from apt_daq.drivers.hv_base import HighVoltageSupply
from apt_daq.drivers.instrument import SwitchedInstrument, _fmt_v, _read_back_off, quantize_wire

from apt_daq.wire.scpi_commands import LASER


class Laser(SwitchedInstrument):
    """The pulsed UV laser. Emission is refused while the attached HV supply reports a trip."""

    kind = "laser"
    switch_name = "emission"

    def __init__(self, resource: str, *, max_energy_pj: float = 100.0,
                 hv: HighVoltageSupply | None = None, clock: Clock | None = None):
        super().__init__(resource, clock=clock)
        self.max_energy_pj = float(max_energy_pj)
        self.hv = hv
        #: the settings as last commanded (no I/O; None: never set): what a simulated
        #: specimen under this laser sees (``SimDld.follow``). Emission reads off as soon as
        #: an off is attempted.
        self.commanded_pj: float | None = None
        self.commanded_hz: float | None = None
        self.commanded_emission = False

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
        return LASER.set_energy.format(pj)

    def _cmd_emission(self, on: bool) -> str:
        return LASER.set_emission.format(on)

    def set_energy(self, pj: float) -> None:
        """Pulse energy, pJ; refused outside ``0..max_energy_pj``."""
        pj = quantize_wire(pj)
        with self.lock:
            cmd = self._cmd_energy(pj)
            if not (math.isfinite(pj) and 0 <= pj <= self.max_energy_pj):
                raise self.error(SafetyError, cmd,
                                 f"refused: outside 0..max_energy_pj {_fmt_v(self.max_energy_pj)}")
            self._send_energy(pj)
            self.commanded_pj = pj

    def set_pulse_rate(self, hz: float) -> None:
        """Pulse repetition rate, Hz (> 0)."""
        with self.lock:
            if not (math.isfinite(hz) and hz > 0):
                raise self.error(SafetyError, LASER.set_rate.format(hz), "refused: must be > 0 Hz")
            self._send_pulse_rate(float(hz))
            self.commanded_hz = float(hz)

    def emission(self, on: bool) -> None:
        """Emission on/off. On is refused while the attached HV supply reports a trip."""
        with self.lock:
            if on and self.hv is not None and self.hv.tripped():
                raise self.error(SafetyError, self._cmd_emission(True),
                                 f"refused: {self.hv.name} reports a trip")
            if not on:
                self.commanded_emission = False
            self._send_emission(bool(on))
            self.commanded_emission = bool(on)

    def _send_off_now(self) -> None:
        """Emission off as the first thing on the link (backends with a link override)."""
        self._send_emission(False)

    def send_off(self) -> None:
        """Emission off, sent before anything else (a fresh connection if the link is broken,
        no handshake first). Raises a DriverError if it could not be sent."""
        with self.lock:
            self.commanded_emission = False
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

    def _cmd_off(self) -> str:
        return self._cmd_emission(False)

    # safe_off (SwitchedInstrument): emission off first, then verified off
