"""The virtual LEAP 5000: device models, specimen and detector composed on a simpy clock.

Public API used by the drivers' ``sim`` backends and by the emulator:

- ``VirtualLeap(instrument, specimen, base_temperature_k=60, seed=0, realtime=False, speed=1)``
- ``.hv`` (:class:`sim.devices.HvSupplyModel`), ``.laser`` (:class:`sim.devices.LaserModel`)
- ``.now_s`` instrument time, ``.pulses`` pulses fired so far, ``.fractured``
- ``.idle(dt_s)``: let instrument time pass with no laser pulses (HV slews, nothing evaporates)
- ``.advance(n_pulses) -> SimBlock``: fire ``n_pulses`` laser pulses at the current settings and
  return the raw DLD records, their truth and the lost ions' truth
- ``.ion_table``: the run's ion species (names, mass of the main isotopologue, charge), the
  index that ``TRUTH_DTYPE.species`` points into
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import simpy
import simpy.rt

from apt_daq.config import InstrumentConfig, SpecimenConfig
from apt_daq.hits import RAW_DTYPE, TRUTH_DTYPE, empty
from sim.devices import HvSupplyModel, LaserModel


@dataclass
class SimBlock:
    """What one block of pulses produced."""

    raw: np.ndarray  # RAW_DTYPE, in pulse order
    truth: np.ndarray  # TRUTH_DTYPE, aligned row for row with raw (species -1: background)
    lost: np.ndarray  # TRUTH_DTYPE of evaporated ions that left no record
    pulses: int  # pulses fired in this block
    first_pulse: int  # pulse number of the first pulse of the block
    duration_s: float  # instrument time the block took


def make_environment(realtime: bool = False, speed: float = 1.0) -> simpy.Environment:
    """``simpy.Environment`` for runs; a real-time one (``speed`` x real time) for the emulator."""
    if realtime:
        return simpy.rt.RealtimeEnvironment(factor=1.0 / speed, strict=False)
    return simpy.Environment()


class VirtualLeap:
    """A LEAP 5000 XS/XR with a specimen in it, driven by its HV supply and laser models."""

    def __init__(
        self,
        instrument: InstrumentConfig,
        specimen: SpecimenConfig,
        *,
        base_temperature_k: float = 60.0,
        seed: int = 0,
        realtime: bool = False,
        speed: float = 1.0,
    ):
        self.instrument = instrument
        self.specimen = specimen
        self.base_temperature_k = base_temperature_k
        self.seed = seed
        self.env = make_environment(realtime, speed)
        self.hv = HvSupplyModel(max_voltage_v=instrument.max_voltage_v,
                                limit_v=instrument.max_voltage_v)
        self.laser = LaserModel(max_pulse_rate_hz=instrument.max_pulse_rate_hz)
        self.pulses = 0
        self.fractured = False
        self.rng = np.random.default_rng(seed)

    @property
    def now_s(self) -> float:
        return float(self.env.now)

    def _run_for(self, dt_s: float) -> None:
        if dt_s > 0:
            self.env.run(until=self.env.now + dt_s)
        self.hv.advance(dt_s)
        self.hv.now_s = self.laser.now_s = self.now_s

    def idle(self, dt_s: float) -> None:
        """Instrument time passes with no pulses: the HV output slews towards its setpoint."""
        self._run_for(dt_s)

    @property
    def ion_table(self) -> list[tuple[str, float, int]]:
        raise NotImplementedError("the field-evaporation model is not built yet (issue 5)")

    def advance(self, n_pulses: int) -> SimBlock:
        """Fire ``n_pulses`` pulses; returns an empty block when the laser is off."""
        first = self.pulses
        dt = n_pulses / self.laser.pulse_rate_hz
        if not self.laser.emission_on or self.fractured:
            self._run_for(dt)
            self.pulses += n_pulses
            return SimBlock(empty(RAW_DTYPE), empty(TRUTH_DTYPE), empty(TRUTH_DTYPE),
                            n_pulses, first, dt)
        raise NotImplementedError("the field-evaporation model is not built yet (issue 5)")
