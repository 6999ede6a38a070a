"""Device models of the virtual LEAP's HV supply and laser: state and rules, no wire protocol.

The same models sit behind the in-process ``sim`` driver backends and behind the emulator's
SCPI and serial interfaces (model and wire apart, as in Lewis). Each model keeps a ``received``
log of every accepted setting with its instrument time, so safety tests can check what the
instrument got rather than what a driver believes it sent. The logs are bounded
(:data:`HISTORY_MAX` entries, oldest dropped first): a client flooding settings cannot grow
the emulator's memory without end.
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol

from apt_daq.wire.scpi_commands import DATA_OUT_OF_RANGE, DEVICE_SPECIFIC, ERROR_MESSAGES

HISTORY_MAX = 100_000  # entries kept in every log (received, commands seen, events)
_RANGE = ERROR_MESSAGES[DATA_OUT_OF_RANGE]
_DEVICE = ERROR_MESSAGES[DEVICE_SPECIFIC]


class History(deque):
    """A bounded log: a ``deque`` of at most ``maxlen`` entries (default :data:`HISTORY_MAX`;
    the oldest go first) that also takes slices (``log[:3]``, ``log[-5:]``) like a list."""

    def __init__(self, iterable: Any = (), maxlen: int = HISTORY_MAX):
        super().__init__(iterable, maxlen)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step == 1:
                return list(itertools.islice(self, start, max(start, stop)))
            return list(self)[index]
        return super().__getitem__(index)

    def __reduce__(self) -> Any:
        return (type(self), (list(self), self.maxlen))


class DeviceModel(Protocol):
    """What a wire interface uses of a device model: its instrument time, moving it on, and
    the reset (``*RST``)."""

    now_s: float

    def advance(self, dt_s: float) -> None: ...

    def reset(self) -> None: ...

    def watchdog_expired(self) -> None: ...


class DeviceError(Exception):
    """A command the device refuses. ``code`` and ``message`` go to the SCPI error queue."""

    def __init__(self, code: int, message: str):
        self.code = code
        self.message = message
        super().__init__(f"{code},\"{message}\"")


@dataclass
class HvSupplyModel:
    """A DC HV supply with a hardware limit, an output relay and a trip (over-current) latch.

    The output follows the setpoint at most at ``slew_v_per_s`` (the supply's own slew), and
    ``advance(dt_s)`` moves it on in instrument time.
    """

    max_voltage_v: float = 15000.0
    slew_v_per_s: float = 1000.0
    max_slew_v_per_s: float = 1000.0  # the hardware's fastest slew; set_slew goes below it
    trip_current_a: float = 50e-6
    setpoint_v: float = 0.0
    limit_v: float = 15000.0
    output_on: bool = False
    tripped: bool = False
    output_v: float = 0.0
    current_a: float = 0.0
    now_s: float = 0.0
    received: History = field(default_factory=History)

    def set_voltage(self, volts: float) -> None:
        if not (0.0 <= volts <= self.limit_v):
            raise DeviceError(DATA_OUT_OF_RANGE, f"{_RANGE}: {volts:g} V above limit {self.limit_v:g}")
        self.setpoint_v = float(volts)
        self.received.append((self.now_s, "setpoint_v", self.setpoint_v))

    def set_limit(self, volts: float) -> None:
        if not (0.0 < volts <= self.max_voltage_v):
            raise DeviceError(DATA_OUT_OF_RANGE, f"{_RANGE}: limit {volts:g} V")
        self.limit_v = float(volts)
        self.received.append((self.now_s, "limit_v", self.limit_v))
        if self.setpoint_v > self.limit_v:
            self.set_voltage(self.limit_v)

    def set_slew(self, v_per_s: float) -> None:
        """The supply's own ramp: the output follows a setpoint change at most this fast."""
        if not (0.0 < v_per_s <= self.max_slew_v_per_s):
            raise DeviceError(DATA_OUT_OF_RANGE, f"{_RANGE}: slew {v_per_s:g} V/s")
        self.slew_v_per_s = float(v_per_s)
        self.received.append((self.now_s, "slew_v_per_s", self.slew_v_per_s))

    def set_output(self, on: bool) -> None:
        if on and self.tripped:
            raise DeviceError(DEVICE_SPECIFIC, f"{_DEVICE}: output tripped, clear protection first")
        self.output_on = bool(on)
        self.received.append((self.now_s, "output", float(self.output_on)))
        if not on:
            self.output_v = 0.0
            self.current_a = 0.0

    def follow(self, volts: float) -> None:
        """Mirror a supply outside the simulator (a real driver's commanded output): output on
        at ``volts`` (> 0), else off. The output then slews to it as for any setpoint; a trip
        (the specimen fractured) stays latched."""
        on = volts > 0.0 and not self.tripped
        if on != self.output_on:
            self.set_output(on)
        if on and volts != self.setpoint_v:
            self.setpoint_v = min(float(volts), self.limit_v)
            self.received.append((self.now_s, "setpoint_v", self.setpoint_v))

    def watchdog_expired(self) -> None:
        """The link watchdog ran out (no command line for its timeout): output off."""
        self.set_output(False)
        self.received.append((self.now_s, "watchdog", 1.0))

    def trip(self) -> None:
        """Over-current protection fires: output off, latched until cleared."""
        self.tripped = True
        self.output_on = False
        self.output_v = 0.0
        self.current_a = 0.0
        self.received.append((self.now_s, "trip", 1.0))

    def clear_trip(self) -> None:
        self.tripped = False
        self.received.append((self.now_s, "trip", 0.0))

    def reset(self) -> None:
        """*RST: output off, setpoint 0, limit back to the hardware maximum."""
        self.set_output(False)
        self.setpoint_v = 0.0
        self.limit_v = self.max_voltage_v
        self.received.append((self.now_s, "reset", 0.0))

    def advance(self, dt_s: float) -> None:
        """Move the output towards the setpoint at the supply's slew rate."""
        self.now_s += dt_s
        target = self.setpoint_v if self.output_on else 0.0
        step = self.slew_v_per_s * dt_s
        delta = max(-step, min(step, target - self.output_v))
        self.output_v += delta

    def measured_v(self) -> float:
        return self.output_v if self.output_on else 0.0


@dataclass
class LaserModel:
    """A pulsed UV laser: pulse energy, repetition rate, emission and a safety interlock."""

    max_energy_pj: float = 1000.0
    max_pulse_rate_hz: float = 500e3
    energy_pj: float = 0.0
    pulse_rate_hz: float = 100e3
    emission_on: bool = False
    interlock_open: bool = False
    now_s: float = 0.0
    received: History = field(default_factory=History)

    def set_energy(self, pj: float) -> None:
        if not (0.0 <= pj <= self.max_energy_pj):
            raise DeviceError(DATA_OUT_OF_RANGE, f"{_RANGE}: energy {pj:g} pJ")
        self.energy_pj = float(pj)
        self.received.append((self.now_s, "energy_pj", self.energy_pj))

    def set_pulse_rate(self, hz: float) -> None:
        if not (0.0 < hz <= self.max_pulse_rate_hz):
            raise DeviceError(DATA_OUT_OF_RANGE, f"{_RANGE}: pulse rate {hz:g} Hz")
        self.pulse_rate_hz = float(hz)
        self.received.append((self.now_s, "pulse_rate_hz", self.pulse_rate_hz))

    def set_emission(self, on: bool) -> None:
        if on and self.interlock_open:
            raise DeviceError(DEVICE_SPECIFIC, f"{_DEVICE}: interlock open, emission refused")
        self.emission_on = bool(on)
        self.received.append((self.now_s, "emission", float(self.emission_on)))

    def follow(self, pj: float | None, hz: float | None, emission: bool) -> None:
        """Mirror a laser outside the simulator (a real driver's commanded settings; None:
        never set, keep this model's)."""
        if pj is not None and pj != self.energy_pj:
            self.set_energy(min(pj, self.max_energy_pj))
        if hz is not None and hz != self.pulse_rate_hz:
            self.set_pulse_rate(min(hz, self.max_pulse_rate_hz))
        on = emission and not self.interlock_open
        if on != self.emission_on:
            self.set_emission(on)

    def watchdog_expired(self) -> None:
        """The link watchdog ran out (no command line for its timeout): emission off."""
        self.set_emission(False)
        self.received.append((self.now_s, "watchdog", 1.0))

    def advance(self, dt_s: float) -> None:
        """Move on in instrument time (the laser's settings act at once: nothing slews)."""
        self.now_s += dt_s

    def open_interlock(self) -> None:
        self.interlock_open = True
        self.emission_on = False
        self.received.append((self.now_s, "interlock", 1.0))

    def close_interlock(self) -> None:
        self.interlock_open = False
        self.received.append((self.now_s, "interlock", 0.0))

    def reset(self) -> None:
        self.set_emission(False)
        self.energy_pj = 0.0
        self.received.append((self.now_s, "reset", 0.0))
