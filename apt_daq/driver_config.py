"""Pydantic configs of the three drivers. The ``backend`` field picks the implementation.

A foundation module: a run file's ``drivers:`` section is part of :class:`apt_daq.config.RunFile`,
so the models sit below the drivers; :mod:`apt_daq.drivers.config` re-exports them.

Built-in backends:

- laser: ``sim`` (in-process virtual LEAP), ``scpi`` (pyvisa ``resource``)
- hv: ``sim``, ``scpi`` (pyvisa ``resource``), ``serial`` (pyserial ``url``)
- dld: ``sim``, ``stream`` (length-prefixed binary records over TCP, ``url`` tcp://host:port)

Third-party backends register in the ``apt_daq.drivers`` entry-point group as
``<kind>.<backend>`` (e.g. ``hv.mybox``) and take their own settings from ``options``.
"""

from __future__ import annotations

from typing import Any, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

BUILTIN_BACKENDS: dict[str, frozenset[str]] = {
    "laser": frozenset({"sim", "scpi"}),
    "hv": frozenset({"sim", "scpi", "serial"}),
    "dld": frozenset({"sim", "stream"}),
}
_NEEDS = {"scpi": "resource", "serial": "url", "stream": "url"}


def refuse_bool(model: type[BaseModel], value: Any, info: ValidationInfo) -> Any:
    """A field validator (mode "before") refusing ``true``/``false`` where the field is no
    bool: pydantic reads ``chunk_pulses: true`` as 1 and ``laser_pj: yes`` as 1.0 pJ."""
    if isinstance(value, bool) and info.field_name:
        ann = model.model_fields[info.field_name].annotation
        if ann is not bool and bool not in get_args(ann) and ann is not Any:
            raise PydanticCustomError("not_a_bool", "true/false is not a value of this key "
                                      "(a number or a name is meant)")
    return value


class _Strict(BaseModel):
    """Unknown keys, infinities and true/false for numbers are refused (NaN is too: a bound
    does not hold for it)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    _no_bool = field_validator("*", mode="before")(classmethod(refuse_bool))


class _DriverConfig(_Strict):
    _kind: str = "?"

    backend: str = Field("sim", description="sim, scpi, serial, stream or a registered plug-in")
    resource: str | None = Field(
        None,
        description="pyvisa resource string for scpi, e.g. TCPIP::127.0.0.1::5025::SOCKET, "
        "or a pyvisa-sim YAML ending in @sim",
    )
    url: str | None = Field(
        None, description="pyserial URL (/dev/ttyUSB0, socket://host:port, loop://) or tcp://"
    )
    baudrate: int = Field(9600, gt=0, description="serial line speed, baud")
    timeout_s: float = Field(2.0, gt=0, description="per-command timeout, s")
    retries: int = Field(2, ge=0, le=10, description="retries of idempotent queries only")
    reconnect_deadline_s: float = Field(
        10.0, gt=0, le=600,
        description="give up reconnecting (or sending a safe-off) after this long, wall s")
    options: dict[str, Any] = Field(default_factory=dict, description="plug-in backend options")

    @model_validator(mode="after")
    def _backend_fields(self) -> _DriverConfig:
        need = _NEEDS.get(self.backend)
        if need and getattr(self, need) is None:
            raise ValueError(f"backend {self.backend!r} needs field {need!r}")
        return self


class _SwitchedConfig(_DriverConfig):
    """A laser or HV supply: an output that a lost controller must not leave on."""

    watchdog_s: float = Field(
        0.0, ge=0, le=3600,
        description="arm the instrument's link watchdog on connect (SYST:COMM:WATC / W): "
        "with no command for this long, wall s, the instrument turns its output off by "
        "itself, so a killed or disconnected controller cannot leave it on; the driver "
        "keeps it fed while connected. 0: not armed (instruments without the command); "
        "ignored by the in-process sim backend")


class LaserConfig(_SwitchedConfig):
    """The pulsed UV laser."""

    _kind = "laser"
    max_energy_pj: float = Field(100.0, gt=0, description="highest energy the driver will set, pJ")


class HvConfig(_SwitchedConfig):
    """The specimen DC high-voltage supply. Safety limits are enforced in the driver."""

    _kind = "hv"
    limit_v: float = Field(12000.0, gt=0, description="highest voltage ever sent, V")
    ramp_v_per_s: float = Field(
        200.0, ge=1, description="fastest setpoint change, V/s (a LEAP ramps at ~100-1000 V/s; "
        "below 1 V/s the ramp to a few kV takes hours)")
    ramp_step_s: float = Field(
        0.5, gt=0, description="interval between the setpoints of ramp_to, s"
    )
    max_step_v: float | None = Field(
        None, gt=0,
        description="largest single setpoint change with the output on, V (default "
        "ramp_v_per_s x ramp_step_s); idle time never allows more")
    hardware_ramp: bool = Field(
        False, description="also set the supply's own slew rate to ramp_v_per_s on connect "
        "(SOUR:VOLT:SLEW / S), for supplies that have one")


class DldConfig(_DriverConfig):
    """The delay-line detector front end."""

    _kind = "dld"
    max_chunk_records: int = Field(
        65536, gt=0, le=1 << 22, description="records per read_chunk at most (2^22: "
        "the simulator's block buffer, ~0.3 GB of records and truth rows)")


class DriversConfig(_Strict):
    """Which backend drives each instrument. All ``sim`` by default."""

    laser: LaserConfig = Field(default_factory=LaserConfig)
    hv: HvConfig = Field(default_factory=HvConfig)
    dld: DldConfig = Field(default_factory=DldConfig)
