"""A misbehaving SCPI laser on a loopback socket, written for the tests from the laser's
command table in docs/protocols.md (not from the emulator): the serving and the fault modes
of :class:`fake_hv.FakeHv` (``silent``, ``late``, ``garbage``, ``nan``, ``lies_off``,
``drop_on_off``), with the laser's commands. ``nan`` answers the energy and rate queries
with ``nan``; ``lies_off`` answers ``OUTP?`` with ``0`` while emitting.

``on`` is whether the laser emits; ``energies()`` every pulse energy it received.
"""

from __future__ import annotations

import math
import socket

from fake_hv import FakeHv


class FakeLaser(FakeHv):
    def __init__(self, mode: str, clock, **kw):
        super().__init__(mode, clock, **kw)
        self.energy_pj = 0.0
        self.rate_hz = 250e3

    #: set by lie_about_energy(): what SOUR:PULS:ENER? answers, whatever the energy is
    energy_lie_pj: float | None = None

    def lie_about_energy(self, pj: float) -> None:
        """From now on answer ``SOUR:PULS:ENER?`` with ``pj`` (3 decimals, as documented),
        whatever energy was set; everything else is served as before."""
        self.energy_lie_pj = float(pj)
        self.bad_since = len(self.received)

    def reboot(self) -> None:
        """A power cycle: emission off, energy and rate back to their defaults, every open
        connection dropped (the server keeps listening). What follows in ``received`` is
        after the fault (``bad_since``)."""
        self.on = False
        self.energy_pj = 0.0
        self.rate_hz = 250e3
        self.bad_since = len(self.received)
        self.drop_links()

    def drop_links(self) -> None:
        """Drop every open connection (a cable pulled), the state kept."""
        for conn in list(self._conns):
            try:
                conn.shutdown(socket.SHUT_RDWR)
                conn.close()
            except OSError:
                pass

    def energies(self) -> list[float]:
        return [float(line.split()[1]) for _, line, _ in self.received
                if line.upper().startswith("SOUR:PULS:ENER ")]

    def _handle(self, line: str) -> str | None:
        u = line.upper()
        parts = u.split()
        nan = self.bad and self.mode == "nan"
        if u == "*CLS":
            self.errors.clear()
            return None
        if u == "*IDN?":
            return "FAKE,LASER-TEST,1,0.1"
        if u == "SYST:ERR?":
            return self.errors.pop(0) if self.errors else '0,"No error"'
        if u == "SOUR:PULS:ENER?" and self.energy_lie_pj is not None:
            return f"{self.energy_lie_pj:.3f}"
        if u == "SOUR:PULS:ENER?":
            return "nan" if nan else f"{self.energy_pj:.4f}"
        if u == "SOUR:PULS:FREQ?":
            return "nan" if nan else f"{self.rate_hz:.1f}"
        if u == "OUTP?":
            if self.bad and self.mode == "lies_off":
                return "0"
            return "1" if self.on else "0"
        if u == "SYST:INTL?":
            return "0"
        if len(parts) == 2 and parts[0] in ("SOUR:PULS:ENER", "SOUR:PULS:FREQ"):
            try:
                v = float(parts[1])
            except ValueError:
                self.errors.append('-104,"Data type error"')
                return None
            if not math.isfinite(v) or v < 0:
                self.errors.append('-222,"Data out of range"')
            elif parts[0] == "SOUR:PULS:ENER":
                self.energy_pj = v
            else:
                self.rate_hz = v
            return None
        if len(parts) == 2 and parts[0] == "OUTP" and parts[1] in ("ON", "OFF", "1", "0"):
            self.on = parts[1] in ("ON", "1")
            return None
        self.errors.append('-113,"Undefined header"')
        return None
