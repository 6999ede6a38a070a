"""Instrument drivers: laser, HV supply and delay-line detector behind small typed interfaces.

A lab script picks backends only through configuration::

    from apt_daq import drivers
    with drivers.open_hv("configs/pyvisa-sim/hv-driver.yaml") as hv:   # or a dict, or HvConfig
        hv.output(True)
        hv.ramp_to(3000)

``open_laser``, ``open_hv`` and ``open_dld`` take a pydantic config (``apt_daq.drivers.config``), a dict
or a YAML path and return a connected driver (a context manager: leaving the ``with`` block by
any exception or Ctrl-C turns the HV output and the laser emission off). ``open_instruments``
opens all three for a run file, sharing one virtual LEAP among the ``sim`` backends.

Backends: built in ``sim``, ``scpi`` (pyvisa), ``serial`` (pyserial, HV only), ``stream`` (DLD);
third-party ones register in the ``apt_daq.drivers`` entry-point group as ``<kind>.<backend>``
(e.g. ``hv.mybox = mypkg.hv:open_mybox``): the factory is called as
``factory(cfg, **kwargs)`` and returns a driver (connected, or it is connected here).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from apt_daq.drivers.base import (
    BadReply,
    Clock,
    ConnectionLost,
    DelayLineDetector,
    DriverError,
    DriverTimeout,
    FakeClock,
    HighVoltageSupply,
    InstrumentError,
    Interrupted,
    Laser,
    SafetyError,
    SwitchedInstrument,
    WallClock,
)
from apt_daq.drivers.config import DldConfig, DriversConfig, HvConfig, LaserConfig
from apt_daq.drivers.errors import SAFE_OFF_RECORD
from pydantic import BaseModel, ValidationError

if TYPE_CHECKING:
    from apt_daq.drivers.sim_backends import DeviceHost, PulsedInstrument

    from apt_daq.config import RunFile

__all__ = [
    "BadReply", "Clock", "ConnectionLost", "DelayLineDetector", "DldConfig", "DriverError",
    "DriverTimeout", "DriversConfig", "FakeClock", "HighVoltageSupply", "HvConfig",
    "InstrumentError", "Instruments", "Interrupted", "Laser", "LaserConfig", "SafetyError", "WallClock",
    "load_config", "open_dld", "open_hv", "open_instruments", "open_laser",
]

ENTRY_POINT_GROUP = "apt_daq.drivers"
_MODELS: dict[str, type[BaseModel]] = {"laser": LaserConfig, "hv": HvConfig, "dld": DldConfig}

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- config input


def load_config(cfg: Any, kind: str) -> Any:
    """``cfg`` (model, dict or YAML path) as the ``kind`` driver config.

    A dict or YAML may hold the driver config itself, or a mapping with a ``<kind>`` key (a
    drivers file), or a ``drivers:`` section (a run file). Errors name file, line and field.
    """
    from apt_daq.config import ConfigError, RunFile, validation_problems

    model = _MODELS[kind]
    if isinstance(cfg, model):
        return cfg
    if isinstance(cfg, RunFile):
        cfg = cfg.drivers
    if isinstance(cfg, DriversConfig):
        return getattr(cfg, kind)
    lines: dict = {}
    where = "<dict>"
    prefix: tuple = ()
    if isinstance(cfg, str | Path):
        from apt_daq.config import compose_yaml

        where = str(cfg)
        data, lines = compose_yaml(Path(cfg))
    elif isinstance(cfg, dict):
        data = cfg
    else:
        raise TypeError(f"{kind} config: expected a {model.__name__}, a dict or a YAML path, "
                        f"got {type(cfg).__name__}")
    if not isinstance(data, dict):
        raise ConfigError([f"{where}:1: expected a mapping"])
    if isinstance(data.get("drivers"), dict):
        data, prefix = data["drivers"], ("drivers",)
    if isinstance(data.get(kind), dict) and "backend" not in data:
        data, prefix = data[kind], (*prefix, kind)
    sub = {k[len(prefix):]: v for k, v in lines.items() if k[:len(prefix)] == prefix}
    try:
        return model.model_validate(data)
    except ValidationError as e:
        problems = validation_problems(e, sub, where)
        if prefix:
            dotted = ".".join(prefix) + "."
            problems = [p.replace(" ", " " + dotted, 1) for p in problems]
        raise ConfigError(problems) from None


def _plugin(kind: str, backend: str):
    name = f"{kind}.{backend}"
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            return ep.load()
    from apt_daq.drivers.config import BUILTIN_BACKENDS

    from apt_daq.config import ConfigError

    others = sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)
                    if ep.name.startswith(kind + "."))
    raise ConfigError([f"{kind}.backend: unknown backend {backend!r}; built in: "
                       f"{', '.join(sorted(BUILTIN_BACKENDS[kind]))}; plug-ins "
                       f"({ENTRY_POINT_GROUP}): {', '.join(others) or 'none'}"])


def _given(value: str | None) -> str:
    """A field the config requires for the backend at hand (``resource``, ``url``)."""
    assert value is not None, "the driver config validates it for this backend"
    return value


@runtime_checkable
class _Connectable(Protocol):
    """A driver that says whether it is connected (every built-in one; a plug-in may not)."""

    connected: bool

    def connect(self) -> None: ...


def _connected(drv: Any) -> Any:
    """``drv``, connected: a plug-in factory may return it connected or not."""
    if isinstance(drv, _Connectable) and not drv.connected:
        drv.connect()
    return drv


def _bench(leap: DeviceHost | None) -> DeviceHost:
    if leap is not None:
        return leap
    from apt_daq.drivers.sim_backends import DeviceBench

    return DeviceBench()


# --------------------------------------------------------------------------- factories


def open_hv(cfg: Any, *, leap: DeviceHost | None = None, clock: Clock | None = None) -> HighVoltageSupply:
    """A connected HV supply driver. ``leap``: the virtual instrument for ``sim`` (else a
    device bench of its own); ``clock``: for ``scpi``/``serial`` (wall clock by default)."""
    c: HvConfig = load_config(cfg, "hv")
    kw: dict[str, Any] = dict(limit_v=c.limit_v, ramp_v_per_s=c.ramp_v_per_s,
                              ramp_step_s=c.ramp_step_s, max_step_v=c.max_step_v,
                              hardware_ramp=c.hardware_ramp)
    if c.backend == "sim":
        from apt_daq.drivers.sim_backends import SimHv

        return _connected(SimHv(_bench(leap), **kw))
    if c.backend == "scpi":
        from apt_daq.drivers.hv import ScpiHv
        from apt_daq.drivers.scpi import make_transport

        t = make_transport(_given(c.resource), c.timeout_s, c.options.get("transport", "visa"))
        return _connected(ScpiHv(t, _given(c.resource), retries=c.retries, clock=clock,
                                 reconnect_deadline_s=c.reconnect_deadline_s,
                                 watchdog_s=c.watchdog_s, **kw))
    if c.backend == "serial":
        from apt_daq.drivers.hv import SerialHv
        from apt_daq.drivers.serial_line import SerialTransport

        t = SerialTransport(_given(c.url), baudrate=c.baudrate, timeout_s=c.timeout_s)
        return _connected(SerialHv(t, _given(c.url), retries=c.retries, clock=clock,
                                   reconnect_deadline_s=c.reconnect_deadline_s,
                                   watchdog_s=c.watchdog_s, **kw))
    return _connected(_plugin("hv", c.backend)(c, leap=leap, clock=clock))


def open_laser(cfg: Any, *, leap: DeviceHost | None = None, hv: HighVoltageSupply | None = None,
               clock: Clock | None = None) -> Laser:
    """A connected laser driver; with ``hv`` given, emission is refused while it is tripped."""
    c: LaserConfig = load_config(cfg, "laser")
    if c.backend == "sim":
        from apt_daq.drivers.sim_backends import SimLaser

        return _connected(SimLaser(_bench(leap), max_energy_pj=c.max_energy_pj, hv=hv))
    if c.backend == "scpi":
        from apt_daq.drivers.laser import ScpiLaser
        from apt_daq.drivers.scpi import make_transport

        t = make_transport(_given(c.resource), c.timeout_s, c.options.get("transport", "visa"))
        return _connected(ScpiLaser(t, _given(c.resource), max_energy_pj=c.max_energy_pj, hv=hv,
                                    retries=c.retries, clock=clock,
                                    reconnect_deadline_s=c.reconnect_deadline_s,
                                    watchdog_s=c.watchdog_s))
    return _connected(_plugin("laser", c.backend)(c, leap=leap, hv=hv, clock=clock))


def open_dld(cfg: Any, *, leap: PulsedInstrument | None = None, chunk_pulses: int | None = None,
             clock: Clock | None = None) -> DelayLineDetector:
    """A connected DLD driver. ``sim`` needs ``leap`` (use :func:`open_instruments`)."""
    c: DldConfig = load_config(cfg, "dld")
    if c.backend == "sim":
        from apt_daq.drivers.sim_backends import SimDld

        if leap is None:
            raise DriverError("DLD sim", None, "the sim DLD needs the virtual instrument: use "
                              "drivers.open_instruments(run_file) or pass leap=")
        return _connected(SimDld(leap, chunk_pulses=chunk_pulses or 2_000_000,
                                 max_chunk_records=c.max_chunk_records))
    if c.backend == "stream":
        from apt_daq.drivers.dld import StreamDld

        return _connected(StreamDld(_given(c.url), timeout_s=c.timeout_s,
                                    max_chunk_records=c.max_chunk_records, clock=clock))
    return _connected(_plugin("dld", c.backend)(c, leap=leap, chunk_pulses=chunk_pulses,
                                                clock=clock))


# --------------------------------------------------------------------------- all three


@dataclass
class Instruments:
    """The three drivers of a run. As a context manager, leaving it by any exception or Ctrl-C
    ends with HV output off and laser emission off, then everything closed."""

    laser: Laser
    hv: HighVoltageSupply
    dld: DelayLineDetector
    virtual: PulsedInstrument | None = None  # the shared VirtualLeap when any backend is sim
    off_unverified: tuple[str, ...] = ()  # set by safe_off: the HV/laser it could not confirm

    def safe_off(self) -> None:
        """HV output off, then laser emission off (each sent first on its link, no handshake
        before it), DLD stopped, then both read back off. Each is tried even if another fails;
        the first failure is raised afterwards, the HV's or laser's before the DLD's, and
        ``off_unverified`` names the HV or laser whose off was not confirmed."""
        errors: list[BaseException] = []  # the HV's and laser's: raised before the DLD's
        unverified: list[str] = []
        sent: list[SwitchedInstrument] = []
        switched: tuple[SwitchedInstrument, ...] = (self.hv, self.laser)
        for drv in switched:
            try:
                drv.send_off()
                sent.append(drv)
            except Exception as e:
                errors.append(e)
                unverified.append(drv.name)
        dld_error: list[BaseException] = []
        try:
            self.dld.safe_off()
        except Exception as e:
            dld_error.append(e)
        for drv in sent:
            try:
                drv.verify_off()
            except Exception as e:
                errors.append(e)
                unverified.append(drv.name)
        self.off_unverified = tuple(unverified)
        if errors or dld_error:
            raise (errors + dld_error)[0]

    def close(self) -> None:
        for drv in (self.dld, self.laser, self.hv):
            try:
                drv.close()
            except Exception:  # closing must go on to the next instrument
                pass

    def __enter__(self) -> Instruments:
        return self

    def __exit__(self, exc_type, exc, tb) -> Literal[False]:
        """Safe off, then close. If we are leaving because of an exception and safe-off fails
        too (a dead link, say), the original exception goes on (it is the cause the user must
        see) and the safe-off failure is logged and attached as a note."""
        try:
            self.safe_off()
        except Exception as off_error:
            if exc is None:
                raise
            log.error("safe off failed while handling %r: %s", exc, off_error,
                      extra=SAFE_OFF_RECORD)
            exc.add_note(f"safe off also failed: {off_error}")
        finally:
            self.close()
        return False


def open_instruments(run_file: RunFile) -> Instruments:
    """Open laser, HV supply and DLD of ``run_file`` (an ``apt_daq.config.RunFile``).

    If any backend is ``sim``, ONE ``apt_daq.sim.instrument.VirtualLeap`` is built from the run file and
    shared by the sim backends (``Instruments.virtual``); the sim DLD fires
    ``run_file.run.chunk_pulses`` pulses per ``read_chunk``. A sim DLD under a real HV supply
    or laser follows their commanded settings (:func:`~apt_daq.drivers.sim_backends.
    follow_real_drivers`). The laser gets the HV driver, so emission is refused while the
    supply reports a trip.
    """
    d = run_file.drivers
    leap: PulsedInstrument | None = None
    if "sim" in (d.laser.backend, d.hv.backend, d.dld.backend):
        from apt_daq.drivers.sim_backends import virtual_leap

        leap = virtual_leap(run_file)
    opened: list[Any] = []
    try:
        hv = open_hv(d.hv, leap=leap)
        opened.append(hv)
        laser = open_laser(d.laser, leap=leap, hv=hv)
        opened.append(laser)
        dld = open_dld(d.dld, leap=leap, chunk_pulses=run_file.run.chunk_pulses)
        if d.dld.backend == "sim":
            from apt_daq.drivers.sim_backends import SimDld, follow_real_drivers

            if isinstance(dld, SimDld):
                follow_real_drivers(dld, hv if d.hv.backend != "sim" else None,
                                    laser if d.laser.backend != "sim" else None)
    except BaseException:
        for drv in reversed(opened):
            try:
                drv.__exit__(None, None, None)
            except Exception:  # the open failure is the error to report
                pass
        if not opened:  # the HV supply failed first: the laser is still switched off
            _laser_off(d.laser, leap)
        raise
    return Instruments(laser=laser, hv=hv, dld=dld, virtual=leap)


def _laser_off(cfg: Any, leap: PulsedInstrument | None) -> None:
    """Open the laser only to switch its emission off (safe off on leaving), when the run
    cannot start because the HV supply could not be opened: a laser an earlier run left
    emitting must not stay on. Its failure is logged; the HV supply's error is the one
    reported (a laser that fails its connect sends its off itself)."""
    try:
        with open_laser(cfg, leap=leap):
            pass
    except Exception as e:
        log.warning("laser not reached to switch it off after the HV supply failed: %s", e)
