"""The ``sim`` backends: drivers calling the virtual LEAP's device models in-process.

They never sleep in wall time: the driver's clock is the instrument's (:class:`LeapClock`),
so a ramp's waiting is ``leap.idle(dt_s)`` (HV slews, nothing evaporates). A device refusal
(:class:`apt_daq.sim.devices.DeviceError`) becomes :class:`~apt_daq.drivers.base.InstrumentError`, naming the
SCPI-equivalent command, exactly as the SCPI backend would report it.

Without a :class:`apt_daq.sim.instrument.VirtualLeap` (``open_hv(cfg)`` on its own) the HV and laser
backends run on a :class:`DeviceBench`: the two device models on an instrument-time clock,
no specimen. The sim DLD needs a leap (it is the one that fires pulses).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import numpy as np
from apt_daq.drivers.base import (
    DelayLineDetector,
    DriverError,
    HighVoltageSupply,
    InstrumentError,
    Laser,
)
from apt_daq.sim.devices import DeviceError, HvSupplyModel, LaserModel
from apt_daq.sim.scpi_server import HvScpiInterface, LaserScpiInterface

from apt_daq.hits import RAW_DTYPE, TRUTH_DTYPE
from apt_daq.wire.scpi_commands import HV, LASER, format_error

if TYPE_CHECKING:
    from apt_daq.sim.instrument import SimBlock, VirtualLeap

    from apt_daq.config import RunFile

T = TypeVar("T")


class DeviceHost(Protocol):
    """What the HV and laser backends and :class:`LeapClock` use of a virtual instrument: the
    two device models and its clock (a :class:`apt_daq.sim.instrument.VirtualLeap` or a
    :class:`DeviceBench`). ``lock`` is given to a stand-in that lacks one (:func:`leap_lock`)."""

    @property
    def hv(self) -> HvSupplyModel: ...

    @property
    def laser(self) -> LaserModel: ...

    @property
    def now_s(self) -> float: ...

    def idle(self, dt_s: float) -> None: ...


class PulsedInstrument(DeviceHost, Protocol):
    """What the sim DLD uses besides: pulses fired in instrument time, and the ion species
    (a :class:`apt_daq.sim.instrument.VirtualLeap`)."""

    @property
    def ion_table(self) -> list[tuple[str, float, int]]: ...

    def advance(self, n_pulses: int, max_records: int | None = None) -> SimBlock: ...


def virtual_leap(run_file: RunFile) -> VirtualLeap:
    """The one virtual LEAP the ``sim`` backends of a run share, built from its run file (an
    :class:`apt_daq.config.RunFile`): instrument, specimen, base temperature and seed."""
    from apt_daq.sim.instrument import VirtualLeap

    return VirtualLeap(run_file.instrument, run_file.specimen,
                       base_temperature_k=run_file.run.base_temperature_k,
                       seed=run_file.run.seed)


class DeviceBench:
    """HV supply and laser models on an instrument-time clock, without a specimen."""

    def __init__(self, max_voltage_v: float = 15000.0, max_pulse_rate_hz: float = 500e3):
        self.hv = HvSupplyModel(max_voltage_v=max_voltage_v, limit_v=max_voltage_v)
        self.laser = LaserModel(max_pulse_rate_hz=max_pulse_rate_hz)
        self.now_s = 0.0
        self.lock = threading.RLock()

    def idle(self, dt_s: float) -> None:
        if dt_s > 0:
            self.now_s += dt_s
            self.hv.advance(dt_s)
            self.laser.now_s = self.now_s


def leap_lock(leap: DeviceHost) -> threading.RLock:
    """The lock that serialises every access to one virtual instrument: a chunk being fired
    in the background (:meth:`SimDld.arm`) holds it, so an HV or laser command waits for the
    chunk to end and the chunk sees the settings it was armed with (determinism)."""
    lock = getattr(leap, "lock", None)
    if lock is None:  # a stand-in leap (tests): give it one
        lock = threading.RLock()
        leap.lock = lock  # type: ignore[attr-defined]  # not part of DeviceHost: optional
    return lock


class LeapClock:
    """The instrument's clock: reads ``leap.now_s``; ``sleep`` is ``leap.idle`` (no wall time)."""

    def __init__(self, leap: DeviceHost):
        self.leap = leap
        self.lock = leap_lock(leap)

    def monotonic(self) -> float:
        with self.lock:
            return float(self.leap.now_s)

    def sleep(self, dt_s: float) -> None:
        if dt_s > 0:
            with self.lock:
                self.leap.idle(dt_s)


def _call(drv: Any, command: str, fn: Callable[..., T], *args: Any) -> T:
    if not drv.connected:
        raise drv.not_connected(command)
    try:
        with drv.clock.lock:
            return fn(*args)
    except DeviceError as e:
        raise InstrumentError(drv.name, command, f"instrument error {e.code}: {e.message}",
                              format_error(e.code, e.message), code=e.code) from e


class SimHv(HighVoltageSupply):
    """HV supply backend on ``leap.hv`` (an :class:`apt_daq.sim.devices.HvSupplyModel`)."""

    def __init__(self, leap: DeviceHost, *, limit_v: float, ramp_v_per_s: float,
                 ramp_step_s: float = 0.5, max_step_v: float | None = None,
                 hardware_ramp: bool = False, resource: str = "sim"):
        super().__init__(resource, limit_v=limit_v, ramp_v_per_s=ramp_v_per_s,
                         ramp_step_s=ramp_step_s, max_step_v=max_step_v,
                         hardware_ramp=hardware_ramp, clock=LeapClock(leap))
        self.leap = leap
        self.model: HvSupplyModel = leap.hv
        self.idn = HvScpiInterface.idn  # what the emulator answers

    def connect(self) -> None:
        with self.lock:
            self.connected = True
            _call(self, HV.set_limit.format(self.limit_v), self.model.set_limit,
                  self.limit_v)
            if self.hardware_ramp:
                _call(self, HV.set_slew.format(self.ramp_v_per_s), self.model.set_slew,
                      self.ramp_v_per_s)
            self._sync(first=True)

    def close(self) -> None:
        self.connected = False

    def _send_setpoint(self, volts: float) -> None:
        _call(self, self._cmd_setpoint(volts), self.model.set_voltage, volts)

    def _send_output(self, on: bool) -> None:
        _call(self, self._cmd_output(on), self.model.set_output, on)

    def _read_setpoint(self) -> float:
        return _call(self, HV.get_voltage.text, lambda: self.model.setpoint_v)

    def _read_output(self) -> bool:
        return _call(self, HV.get_output.text, lambda: self.model.output_on)

    def _send_clear_trip(self) -> None:
        _call(self, HV.clear_trip.text, self.model.clear_trip)

    def voltage(self) -> float:
        return _call(self, HV.measure_voltage.text, self.model.measured_v)

    def current(self) -> float:
        return _call(self, HV.measure_current.text, lambda: self.model.current_a)

    def tripped(self) -> bool:
        t = _call(self, HV.get_trip.text, lambda: self.model.tripped)
        if t:
            self._on = False
        return t


class SimLaser(Laser):
    """Laser backend on ``leap.laser`` (a :class:`apt_daq.sim.devices.LaserModel`)."""

    def __init__(self, leap: DeviceHost, *, max_energy_pj: float = 100.0,
                 hv: HighVoltageSupply | None = None, resource: str = "sim"):
        super().__init__(resource, max_energy_pj=max_energy_pj, hv=hv, clock=LeapClock(leap))
        self.leap = leap
        self.model: LaserModel = leap.laser
        self.idn = LaserScpiInterface.idn

    def connect(self) -> None:
        self.connected = True

    def close(self) -> None:
        self.connected = False

    def _send_energy(self, pj: float) -> None:
        _call(self, self._cmd_energy(pj), self.model.set_energy, pj)

    def _send_pulse_rate(self, hz: float) -> None:
        _call(self, LASER.set_rate.format(hz), self.model.set_pulse_rate, hz)

    def _send_emission(self, on: bool) -> None:
        _call(self, self._cmd_emission(on), self.model.set_emission, on)

    def energy(self) -> float:
        return _call(self, LASER.get_energy.text, lambda: self.model.energy_pj)

    def pulse_rate(self) -> float:
        return _call(self, LASER.get_rate.text, lambda: self.model.pulse_rate_hz)

    def emission_on(self) -> bool:
        return _call(self, LASER.get_emission.text, lambda: self.model.emission_on)

    def interlock_open(self) -> bool:
        return _call(self, LASER.get_interlock.text, lambda: self.model.interlock_open)


class SimDld(DelayLineDetector):
    """DLD backend on the virtual LEAP: each ``read_chunk`` fires up to ``chunk_pulses`` pulses
    (``leap.advance``) and returns their raw records; ``read_truth()`` gives the truth aligned
    with that chunk and the ions lost in it.

    Like a real TDC whose buffer is read out when full, a chunk ends early once it holds
    ``max_chunk_records`` records: ``leap.advance(..., max_records=)`` stops after the
    sub-block that filled the buffer (sub-blocks then expect at most 1/8 of it). A burst of
    evaporation (after a laser step, say) therefore gives a short chunk, and the engine's
    feedback reacts within it. ``last_block`` is the chunk's :class:`apt_daq.sim.instrument.SimBlock`.

    :meth:`arm` fires the next chunk on a background thread (the simulator's numba kernels
    release the GIL) while the caller stores the last one; ``read_chunk`` then collects it.
    The chunk holds the instrument's lock, so it is the same chunk as without ``arm``.
    """

    def __init__(self, leap: PulsedInstrument, *, chunk_pulses: int = 2_000_000, resource: str = "sim",
                 max_chunk_records: int = 65536):
        super().__init__(resource, clock=LeapClock(leap))
        if chunk_pulses <= 0:
            raise ValueError("chunk_pulses must be > 0")
        self.leap = leap
        self.chunk_pulses = int(chunk_pulses)
        self.max_chunk_records = int(max_chunk_records)
        self._truth = np.zeros(0, TRUTH_DTYPE)
        self._lost = np.zeros(0, TRUTH_DTYPE)
        self.last_block: SimBlock | None = None
        self._armed: Future | None = None
        self._pool: ThreadPoolExecutor | None = None
        #: run before every chunk, under the instrument's lock: mirrors real HV / laser
        #: drivers into the virtual instrument (:func:`follow_real_drivers`)
        self.follow: Callable[[], None] | None = None

    def connect(self) -> None:
        self.connected = True

    def close(self) -> None:
        self.stop()
        self.connected = False
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def start(self) -> None:
        if not self.connected:
            raise self.not_connected("start")
        self.running = True

    def stop(self) -> None:
        """Stop acquiring; a chunk fired by :meth:`arm` and not read is waited for and
        dropped (its pulses were fired: instrument time has passed)."""
        with self.lock:
            armed, self._armed = self._armed, None
            self.running = False
        if armed is not None:
            armed.exception()  # wait; an error in a dropped chunk is not the caller's

    def arm(self) -> None:
        with self.lock:
            if not (self.connected and self.running) or self._armed is not None:
                return
            if self._pool is None:
                self._pool = ThreadPoolExecutor(1, thread_name_prefix=f"{self.name}-fire")
            self._armed = self._pool.submit(self._fire)

    def _fire(self) -> SimBlock:
        with leap_lock(self.leap):  # the instrument's lock, the one LeapClock holds
            if self.follow is not None:
                self.follow()
            return self.leap.advance(self.chunk_pulses, max_records=self.max_chunk_records)

    def read_chunk(self, timeout_s: float = 0.0) -> np.ndarray:
        """Fire ``chunk_pulses`` pulses in instrument time, or collect the chunk :meth:`arm`
        started (``timeout_s`` is not needed: the simulator always answers)."""
        with self.lock:
            if not self.connected:
                raise self.not_connected("read_chunk")
            if not self.running:
                raise DriverError(self.name, "read_chunk", "not started (call start())")
            armed, self._armed = self._armed, None
            block = armed.result() if armed is not None else self._fire()
            raw = block.raw
            dt = np.asarray(raw).dtype
            if dt is not RAW_DTYPE and dt != RAW_DTYPE:  # identity first: == on a
                # structured dtype costs ~30 us of Python in numpy
                raise DriverError(self.name, "read_chunk", f"simulator gave dtype {dt}")
            self._truth, self._lost = block.truth, block.lost
            self.last_block = block
            self._count(raw, block.pulses)
            return raw

    def read_truth(self) -> tuple[np.ndarray, np.ndarray]:
        """(truth aligned row for row with the last chunk, ions lost in it), TRUTH_DTYPE."""
        return self._truth, self._lost

    @property
    def ion_table(self) -> list[tuple[str, float, int]]:
        return self.leap.ion_table


def follow_real_drivers(dld: SimDld, hv: HighVoltageSupply | None,
                        laser: Laser | None) -> None:
    """A simulated detector under real instruments (``dld: sim`` with ``hv`` or ``laser`` not
    ``sim``): before every chunk the virtual instrument takes the real drivers' commanded
    settings (no I/O), so its specimen sees the voltage and laser the run commands. Without
    it the virtual supply stayed at 0 V and the run recorded detector background only, at
    ``v_dc`` 0. ``None``: that instrument is simulated (its model is the driver's own)."""
    leap = dld.leap
    if hv is None and laser is None:
        return

    def follow() -> None:
        if hv is not None:
            leap.hv.follow(hv.commanded_v)
        if laser is not None:
            leap.laser.follow(laser.commanded_pj, laser.commanded_hz, laser.commanded_emission)

    dld.follow = follow
