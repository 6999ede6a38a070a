"""Typed driver interfaces (laser, HV supply, delay-line detector) and the driver errors.

Every driver shares :class:`Instrument`: a name and resource for messages, one
``threading.RLock`` (scripts and the run engine may share a driver), an injectable
:class:`Clock` (wall time for real instruments, instrument time for the simulator, a fake
clock in tests) and the context-manager lifecycle. Leaving a ``with`` block, by any exception
or KeyboardInterrupt, calls ``safe_off()`` (HV output off, laser emission off) and then
``close()``.

The safety rules of the HV supply (limit, ramp rate, output on at 0 V) and of the laser
(energy ceiling, no emission while the HV supply reports a trip) live in the shared
base classes, so every backend (sim, SCPI, serial, plug-in) gets them; a backend only
implements the primitive ``_send_*`` / ``_read_*`` operations.

One concept per module, every name re-exported here (and the public ones from
:mod:`apt_daq.drivers`): the errors in :mod:`~apt_daq.drivers.errors`, the clocks in
:mod:`~apt_daq.drivers.clock`, :class:`Instrument` in :mod:`~apt_daq.drivers.instrument`, the
interfaces in :mod:`~apt_daq.drivers.hv_base`, :mod:`~apt_daq.drivers.laser_base` and
:mod:`~apt_daq.drivers.dld_base`.
"""

from __future__ import annotations

from apt_daq.drivers.clock import Clock, FakeClock, WallClock
from apt_daq.drivers.dld_base import DelayLineDetector, SimulatedDetector
from apt_daq.drivers.errors import (
    BadReply,
    ConnectionLost,
    DriverError,
    DriverTimeout,
    InstrumentError,
    Interrupted,
    SafetyError,
)
from apt_daq.drivers.hv_base import HighVoltageSupply
from apt_daq.drivers.instrument import (
    Instrument,
    SwitchedInstrument,
    _finite,
    _fmt_v,
    _read_back_off,
    describe,
    log,
    quantize_wire,
)
from apt_daq.drivers.laser_base import Laser

__all__ = [
    "BadReply", "Clock", "ConnectionLost", "DelayLineDetector", "DriverError", "DriverTimeout",
    "FakeClock", "HighVoltageSupply", "Instrument", "InstrumentError", "Interrupted", "Laser",
    "SafetyError",
    "SimulatedDetector", "SwitchedInstrument", "WallClock", "_finite", "_fmt_v", "_read_back_off", "describe", "log",
    "quantize_wire",
]
