"""The pulsed laser's driver interface: energy ceiling, no emission while the attached HV supply
reports a trip, safe off. A backend implements the ``_send_*`` primitives and the queries."""

from __future__ import annotations

import abc
import functools
import math
from collections.abc import Callable
from typing import TypeVar

from apt_daq.drivers.clock import Clock
from apt_daq.drivers.errors import BadReply, DriverError, SafetyError
from apt_daq.drivers.hv_base import HighVoltageSupply
from apt_daq.drivers.instrument import (
    SwitchedInstrument,
    _finite,
    _fmt_v,
    _read_back_off,
    describe,
    log,
    quantize_wire,
)

from apt_daq.wire.scpi_commands import LASER

T = TypeVar("T")

class Laser(SwitchedInstrument):
    """The pulsed UV laser. Emission is refused while the attached HV supply reports a trip.

    A pulse energy read back by ``energy()`` above ``max_energy_pj``, or off the energy
    commanded by more than ``energy_tolerance_pj``, is a fault: emission off (as
    ``safe_off`` sends it, then read back), a :class:`SafetyError` naming both values, and
    emission is refused from then on (:meth:`_check_energy`). Every backend's ``energy()``
    is wrapped in that check when its class is defined, so none can skip it.

    Emission reading OFF after the driver switched it ON, with the interlock reading closed
    (an open one makes emission impossible: the run pauses on it), is a fault too (audit 2,
    S4): the laser's own watchdog, a fault or a wrong report. Emission off (sent first, then
    read back), emission refused from then on, and a :class:`BadReply` naming the laser
    (:meth:`_check_emission`); every backend's ``emission_on()`` is wrapped in it.
    """

    kind = "laser"
    switch_name = "emission"
    #: how far a pulse energy read back may be from the one commanded, pJ: half the wire's
    #: quantum. Energies go out on the 1 fJ grid (3 decimals, ``quantize_wire``) and the
    #: documented reply (``5.000``) is on the same grid, so an honest read-back is the
    #: commanded value exactly; half a quantum admits a reply in another float format that
    #: rounds to it (and float noise), and nothing that differs by a whole 1 fJ step.
    energy_tolerance_pj = 0.0005

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        for name, check in (("energy", Laser._check_energy),
                            ("emission_on", Laser._check_emission)):
            read = cls.__dict__.get(name)
            if read is not None and not getattr(read, "__isabstractmethod__", False):
                setattr(cls, name, _checked(read, check))

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
        #: why emission is refused for good: a pulse energy read back above the ceiling or
        #: off the commanded one (None: no such read-back)
        self.energy_fault: str | None = None
        if hv is not None:
            hv.on_trip(self._off_on_hv_trip)
        #: a pulse energy above ``max_energy_pj`` found on a dark laser at connect: emission
        #: is refused until ``set_energy`` replaces it (None: none found)
        self.found_pj_above_max: float | None = None

    @abc.abstractmethod
    def _send_energy(self, pj: float) -> None: ...

    @abc.abstractmethod
    def _send_pulse_rate(self, hz: float) -> None: ...

    @abc.abstractmethod
    def _send_emission(self, on: bool) -> None: ...

    @abc.abstractmethod
    def energy(self) -> float:
        """Pulse energy setting, pJ (a backend's read-back, checked by :meth:`_check_energy`
        before it is returned)."""

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

    def _cmd_get_energy(self) -> str:
        return LASER.get_energy.text

    def _cmd_get_emission(self) -> str:
        return LASER.get_emission.text

    def _off_on_hv_trip(self) -> None:
        """The attached HV supply read a trip (a specimen fracture, an arc): emission off, as
        ``safe_off`` sends it and reads it back, if it may be on. Before, only a new emission
        on was refused and an emitting laser stayed on until a script's block was left."""
        if self.connected and self.commanded_emission:
            log.warning("%s: %s reports a trip: emission off", self.name, describe(self.hv))
            self.safe_off()

    def _read_state_in_handshake(self) -> tuple[bool, float]:
        """(emitting, pulse energy in pJ) as the laser reports them, unchecked, from inside
        the handshake (backends with a handshake override; :meth:`_sync_state` checks them)."""
        raise NotImplementedError

    def _sync_state(self, first: bool) -> None:
        """Read emission and pulse energy from the laser (from the handshake: on connect and
        on every reconnect), before anything is set.

        First connect: a laser found emitting above ``max_energy_pj`` (an earlier run, another
        program, a config with a lower ceiling) is switched off and the connect fails, naming
        both; one found emitting within it is taken as it is (its energy becomes the
        commanded one, so a later read-back is checked against it); a dark laser set above
        the ceiling is left dark and emission is refused until ``set_energy``.

        Reconnect (a dropped link, or a laser that rebooted): the laser must be as the driver
        left it, emitting or not and at the commanded energy. Anything else is a fault, as
        :meth:`_check_energy` handles one: emission off, ``energy_fault`` set, a SafetyError.
        A laser that came back dark while a run had it emitting is a fault too: the HV
        feedback would otherwise raise the field to make up for the missing pulses.
        """
        emitting, pj = self._read_state_in_handshake()
        pj = _finite(self, "pulse energy read-back", pj)
        tol = self.energy_tolerance_pj
        if first:
            if not emitting:
                above = pj > self.max_energy_pj + tol
                self.found_pj_above_max = pj if above else None
                self.commanded_pj = None if above else pj
                self.commanded_emission = False
                return
            self.commanded_emission = True
            if pj <= self.max_energy_pj + tol:
                self.commanded_pj = pj
                return
            why = (f"found emitting at {_fmt_v(pj)} pJ, above max_energy_pj "
                   f"{_fmt_v(self.max_energy_pj)}")
        else:
            want = self.commanded_pj
            if self.energy_fault is not None:  # a retry of this handshake, or an earlier fault
                why = self.energy_fault
            elif emitting != self.commanded_emission:
                why = (f"after a reconnect emission reads {'ON' if emitting else 'OFF'}, "
                       f"commanded {'ON' if self.commanded_emission else 'OFF'} (the laser "
                       "was reset or another program drives it)")
            elif want is not None and abs(pj - want) > tol:
                why = (f"after a reconnect the pulse energy reads {_fmt_v(pj)} pJ, commanded "
                       f"{_fmt_v(want)} pJ")
            else:
                return
        self.energy_fault = why
        try:
            self._send_off_now()
            self.commanded_emission = False
        except DriverError as e:
            raise self.error(SafetyError, self._cmd_get_energy(),
                             f"{why}; emission off FAILED: {e}") from e
        raise self.error(SafetyError, self._cmd_get_energy(), f"{why}: emission switched off")

    def _check_energy(self, pj: float) -> float:
        """A pulse energy the laser reported, pJ, returned if it is at most ``max_energy_pj``
        and (once one was commanded) within ``energy_tolerance_pj`` of ``commanded_pj``.
        Otherwise emission goes off (sent first, then read back), emission is refused from
        then on (``energy_fault``) and a SafetyError names the read-back and the commanded
        energy."""
        with self.lock:
            pj = _finite(self, "pulse energy read-back", pj)
            tol = self.energy_tolerance_pj
            commanded = ("none commanded" if self.commanded_pj is None
                         else f"commanded {_fmt_v(self.commanded_pj)} pJ")
            if pj > self.max_energy_pj + tol:
                why = f"above max_energy_pj {_fmt_v(self.max_energy_pj)} ({commanded})"
            elif self.commanded_pj is not None and abs(pj - self.commanded_pj) > tol:
                why = (f"not the {commanded} (tolerance {tol:g} pJ; max_energy_pj "
                       f"{_fmt_v(self.max_energy_pj)})")
            else:
                return pj
            detail = f"pulse energy read back {_fmt_v(pj)} pJ, {why}"
            self.energy_fault = detail
            try:
                self.safe_off()
            except DriverError as e:
                raise self.error(SafetyError, self._cmd_get_energy(),
                                 f"{detail}; emission off FAILED: {e}") from e
            raise self.error(SafetyError, self._cmd_get_energy(),
                             f"{detail}: emission switched off")

    def _check_emission(self, on: bool) -> bool:
        """The emission state the laser reported, returned unless it reads OFF while the
        driver commanded it ON and the interlock reads closed: then emission goes off (sent
        first, then read back), emission is refused from then on (``energy_fault``) and a
        BadReply names the laser. Before, a laser answering ``OUTP? 0`` while emitting ran
        a whole run to ``done`` with every /log row saying it was dark."""
        with self.lock:
            if on or not self.commanded_emission or self.interlock_open():
                return bool(on)
            detail = ("emission reads OFF although the driver switched it ON and the "
                      "interlock reads closed (the laser's watchdog, a fault or a wrong report)")
            self.energy_fault = detail
            try:
                self.safe_off()
            except DriverError as e:
                raise self.error(BadReply, self._cmd_get_emission(),
                                 f"{detail}; emission off FAILED: {e}", "0") from e
            raise self.error(BadReply, self._cmd_get_emission(),
                             f"{detail}: emission switched off", "0")

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
            self.found_pj_above_max = None

    def set_pulse_rate(self, hz: float) -> None:
        """Pulse repetition rate, Hz (> 0)."""
        with self.lock:
            if not (math.isfinite(hz) and hz > 0):
                raise self.error(SafetyError, LASER.set_rate.format(hz), "refused: must be > 0 Hz")
            self._send_pulse_rate(float(hz))
            self.commanded_hz = float(hz)

    def emission(self, on: bool) -> None:
        """Emission on/off. On is refused while the attached HV supply reports a trip, and
        after a read-back fault (``energy_fault``: energy, or emission reading off)."""
        with self.lock:
            if on and self.found_pj_above_max is not None:
                raise self.error(SafetyError, self._cmd_emission(True),
                                 f"refused: the laser was found set to "
                                 f"{_fmt_v(self.found_pj_above_max)} pJ, above max_energy_pj "
                                 f"{_fmt_v(self.max_energy_pj)}; set_energy first")
            if on and self.energy_fault is not None:
                raise self.error(SafetyError, self._cmd_emission(True),
                                 f"refused: earlier {self.energy_fault} (a laser that "
                                 "misreported its state stays off for this driver)")
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


def _checked(read: Callable[[Laser], T], check: Callable[[Laser, T], T]
             ) -> Callable[[Laser], T]:
    """A backend's read-back (``energy()``, ``emission_on()``) passed through the Laser's
    check of it (:meth:`Laser._check_energy`, :meth:`Laser._check_emission`)."""

    @functools.wraps(read)
    def checked(self: Laser) -> T:
        with self.lock:
            return check(self, read(self))

    return checked
