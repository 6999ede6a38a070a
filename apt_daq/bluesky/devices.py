"""ophyd-async devices over apt-daq's drivers: the laser, the HV supply and the detector.

Each signal is a soft signal (:class:`ophyd_async.core.SoftSignalBackend`) whose getter and
setter call the driver, so no EPICS or Tango is involved, and whichever backend the driver
runs (sim, pyvisa-sim, the HIL emulator or the real instrument) is chosen by the apt-daq
config as usual. Driver calls run on a worker thread (they block on I/O and on ramps).

The drivers' safety rules hold for every set: a set of ``hv.setpoint`` (or ``hv`` itself, a
``Movable``) goes through ``HighVoltageSupply.ramp_to`` (steps within the ramp rule, never a
jump), ``hv.output`` switches on at 0 V and ramps back, ``laser.energy`` is refused above the
laser's maximum and ``laser.emission`` while the HV supply reports a trip: a refused set
fails its status with the driver's :class:`apt_daq.drivers.SafetyError`. A ramp stops at its
next step when the plan ends early (``hv.stop()``, which the RunEngine calls on pause, abort,
stop or halt for a device the plan moved) and when the devices are closed (every off stops a
ramp first); it then fails its status with :class:`apt_daq.drivers.Interrupted`.

>>> with open_devices("configs/runs/nmc811-cr-5pj.yaml") as devs:
...     RE(ensure_connected(devs.hv, devs.laser, devs.detector))
...     RE(bps.mv(devs.hv.output, True, devs.hv.setpoint, 3000))
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bluesky.protocols import Movable
from ophyd_async.core import (
    AsyncStatus,
    SignalR,
    SignalRW,
    SoftSignalBackend,
    StandardReadable,
)
from ophyd_async.core import StandardReadableFormat as Format

__all__ = ["AptDetector", "AptDevices", "AptHvSupply", "AptLaser", "drivers_module",
           "open_devices"]


def drivers_module() -> Any:
    """apt-daq's driver package, wherever it is installed (``apt_daq.drivers`` or ``drivers``)."""
    try:
        from apt_daq import drivers  # type: ignore[attr-defined]
    except ImportError:
        from apt_daq import drivers
    return drivers


def _threaded(fn: Callable[..., Any]) -> Callable[..., Any]:
    """An async wrapper running the blocking driver call ``fn`` on a worker thread."""

    async def call(*args: Any) -> Any:
        return await asyncio.to_thread(fn, *args)

    return call


def _r(datatype: type, getter: Callable[[], Any], units: str | None = None,
       precision: int | None = None) -> SignalR:
    return SignalR(SoftSignalBackend(datatype, units=units, precision=precision,
                                     getter=_threaded(getter)))


def _rw(datatype: type, getter: Callable[[], Any], setter: Callable[[Any], Any],
        units: str | None = None, precision: int | None = None,
        timeout: float | None = None) -> SignalRW:
    """A read/write soft signal over a driver: ``set`` calls ``setter`` (then reads back with
    ``getter``). ``timeout=None``: a ramp takes as long as the ramp rule says."""
    return SignalRW(SoftSignalBackend(datatype, units=units, precision=precision,
                                      getter=_threaded(getter), setter=_threaded(setter)),
                    timeout=timeout)


def _const(datatype: type, value: Any, units: str | None = None) -> SignalR:
    return SignalR(SoftSignalBackend(datatype, value, units=units))


class AptHvSupply(StandardReadable, Movable[float]):
    """The specimen HV supply. ``set(v)`` (``bps.mv(hv, v)``) ramps the setpoint to ``v``.

    Read: ``setpoint`` (V, hinted), ``voltage`` (measured, V, hinted), ``current`` (A),
    ``output`` (bool), ``tripped`` (bool). Configuration: ``limit_v``, ``ramp_v_per_s``,
    ``max_step_v``.
    """

    def __init__(self, hv: Any, name: str = ""):
        self.driver = hv
        with self.add_children_as_readables(Format.HINTED_UNCACHED_SIGNAL):
            #: set: ``hv.ramp_to(v)`` (steps within the ramp rule, blocking until there)
            self.setpoint = _rw(float, lambda: hv.setpoint_v, lambda v: hv.ramp_to(float(v)),
                                units="V", precision=1)
            self.voltage = _r(float, hv.voltage, units="V", precision=1)
        with self.add_children_as_readables(Format.UNCACHED_SIGNAL):
            self.current = _r(float, hv.current, units="A")
            #: set True: switches on at 0 V and ramps back to the setpoint; False: off
            self.output = _rw(bool, hv.output_on, lambda on: hv.output(bool(on)))
            self.tripped = _r(bool, hv.tripped)
        with self.add_children_as_readables(Format.CONFIG_SIGNAL):
            self.limit_v = _const(float, hv.limit_v, units="V")
            self.ramp_v_per_s = _const(float, hv.ramp_v_per_s, units="V/s")
            self.max_step_v = _const(float, hv.max_step_v, units="V")
        super().__init__(name=name)

    @AsyncStatus.wrap
    async def set(self, value: float) -> None:
        """Ramp the setpoint to ``value`` V (the driver's ``ramp_to``)."""
        await self.setpoint.set(value, timeout=None)

    def stop(self, success: bool = True) -> None:
        """Stop a ramp in progress at its next step (``HighVoltageSupply.abort_ramp``); the
        setpoint stays where it got to. The RunEngine calls this for a device a plan moved
        when the plan pauses, aborts, stops, halts or fails: a ramp does not run on after
        the plan has ended."""
        self.driver.abort_ramp()


class AptLaser(StandardReadable):
    """The pulsed laser: ``energy`` (pJ, hinted), ``pulse_rate`` (Hz), ``emission`` (bool),
    ``interlock_open`` (bool). Configuration: ``max_energy_pj``."""

    def __init__(self, laser: Any, name: str = ""):
        self.driver = laser
        with self.add_children_as_readables(Format.HINTED_UNCACHED_SIGNAL):
            #: set: ``laser.set_energy`` (refused above max_energy_pj)
            self.energy = _rw(float, laser.energy, lambda pj: laser.set_energy(float(pj)),
                              units="pJ", precision=3, timeout=30.0)
        with self.add_children_as_readables(Format.UNCACHED_SIGNAL):
            self.pulse_rate = _rw(float, laser.pulse_rate,
                                  lambda hz: laser.set_pulse_rate(float(hz)), units="Hz",
                                  timeout=30.0)
            #: set True: ``laser.emission(True)``, refused while the HV supply reports a trip
            self.emission = _rw(bool, laser.emission_on, lambda on: laser.emission(bool(on)),
                                timeout=30.0)
            self.interlock_open = _r(bool, laser.interlock_open)
        with self.add_children_as_readables(Format.CONFIG_SIGNAL):
            self.max_energy_pj = _const(float, laser.max_energy_pj, units="pJ")
        super().__init__(name=name)


class AptDetector(StandardReadable):
    """The delay-line detector's counters: ``pulses``, ``hits`` (records, hinted),
    ``multi_hits`` (pulses with two or more records), ``dropped`` (records the front end could
    not deliver) and ``running``."""

    def __init__(self, dld: Any, name: str = ""):
        self.driver = dld

        def counter(key: str) -> Callable[[], int]:
            return lambda: int(dld.counters.get(key, 0))

        with self.add_children_as_readables(Format.HINTED_UNCACHED_SIGNAL):
            self.hits = _r(int, counter("hits"))
        with self.add_children_as_readables(Format.UNCACHED_SIGNAL):
            self.pulses = _r(int, counter("pulses"))
            self.multi_hits = _r(int, counter("multi_hits"))
            self.dropped = _r(int, counter("dropped"))
            self.running = _r(bool, lambda: bool(dld.running))
        super().__init__(name=name)


@dataclass
class AptDevices:
    """The three devices of a run file, over one set of open drivers (``instruments``).

    A context manager: leaving it ends like every driver block does, HV output and laser
    emission off (sent first), then the links closed.
    """

    hv: AptHvSupply
    laser: AptLaser
    detector: AptDetector
    instruments: Any

    def __iter__(self):
        return iter((self.hv, self.laser, self.detector))

    def close(self) -> None:
        self.instruments.__exit__(None, None, None)

    def __enter__(self) -> AptDevices:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        return bool(self.instruments.__exit__(exc_type, exc, tb))

    @classmethod
    def from_instruments(cls, instruments: Any, prefix: str = "") -> AptDevices:
        """Devices over drivers already open (``drivers.open_instruments(run_file)``)."""
        return cls(hv=AptHvSupply(instruments.hv, name=f"{prefix}hv"),
                   laser=AptLaser(instruments.laser, name=f"{prefix}laser"),
                   detector=AptDetector(instruments.dld, name=f"{prefix}detector"),
                   instruments=instruments)


def open_devices(run: Any, overrides: dict[str, Any] | None = None,
                 prefix: str = "") -> AptDevices:
    """Open the instruments of a run file (a path or an :class:`apt_daq.config.RunFile`; its
    ``drivers`` section picks sim, emulator or real backends) and wrap them as devices named
    ``hv``, ``laser`` and ``detector`` (after ``prefix``).

    The devices hold the instruments open: close them (leave the ``with`` block) before
    :func:`apt_daq.bluesky.acquire` opens the same instruments for a run.
    """
    run_file = _run_file(run, overrides)
    return AptDevices.from_instruments(drivers_module().open_instruments(run_file), prefix)


def _run_file(run: Any, overrides: dict[str, Any] | None) -> Any:
    from apt_daq.config import load_run

    if isinstance(run, str | Path):
        return load_run(run, overrides)
    if overrides:
        raise TypeError("overrides apply to a run file path; edit a RunFile with "
                        "model_copy(update=...) instead")
    return run
