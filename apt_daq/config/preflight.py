"""Loading a run file: what kind of file it is, and everything that would fail or be
dangerous when it runs, found before anything is switched on (:func:`preflight`)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, NamedTuple

from pydantic import ValidationError

from apt_daq.config.errors import ConfigError, Problems
from apt_daq.config.loader import (
    KIND_WORDS,
    Lines,
    _load_tree,
    compose_yaml,
    file_kind,
    validation_problems,
    where,
)
from apt_daq.config.models import (
    InstrumentConfig,
    RunConfig,
    RunFile,
    SpecimenConfig,
    StepConfig,
    _Model,
    _partial_instrument_problems,
)

#: what a target detection rate above this most likely is: a percentage
RATE_PERCENT_SUSPECT = 0.05


class UnitSlip(NamedTuple):
    """A value below ``below`` (in ``unit``) that a LEAP-class instrument is never run at, and
    most likely ``meant`` (``factor`` times ``unit``) was intended: a warning (it runs), not an
    error. ``why`` defends the threshold (docs/config.md)."""

    below: float
    unit: str
    in_use: str
    meant: str
    factor: float
    why: str


#: run keys (a schedule step's laser_pj too) whose values far below what a LEAP-class
#: instrument uses are most likely a unit slip; above, the drivers' and the instrument's hard
#: limits refuse them already (drivers.laser.max_energy_pj, instrument.max_pulse_rate_hz,
#: drivers.hv.limit_v)
UNIT_SLIPS = {
    "laser_pj": UnitSlip(
        0.1, "pJ", "a LEAP UV laser's useful range is ~1-200 pJ", "nJ", 1e3,
        "a decade below the lowest energy in use (~1 pJ; the shipped runs use 5-50 pJ): the "
        "pulses barely heat the apex and the run records DC evaporation and detector background; "
        "any value below it, read as nJ, is at most 100 pJ"),
    "pulse_rate_hz": UnitSlip(
        1e3, "Hz", "a LEAP pulses at ~10-500 kHz", "kHz", 1e3,
        "ten times below the lowest rate in use (~10 kHz): at 100 Hz and a 0.5 % detection "
        "rate 1e6 ions take 23 days; any value below it, read as kHz, is below 1 MHz"),
    "start_voltage_v": UnitSlip(
        100.0, "V", "a LEAP run starts at ~1-5 kV", "kV", 1e3,
        "100 V puts at most ~3 V/nm on a 10 nm apex (k_f 3.3), under a quarter of the lowest "
        "evaporation field (Li, ~14 V/nm); 0 (a ramp from zero) is not warned"),
}


def _not_a_run_file(path: Path, kind: str) -> str:
    use = {"instrument": f"name it in a run file (instrument: {path})",
           "specimen": f"name it in a run file (specimen: {path})",
           "campaign": f"apt-daq campaign {path}"}[kind]
    return f"{path}:1: this is {KIND_WORDS[kind]}, not a run file: {use}"


def _get(data: Any, loc: tuple[str, ...]) -> Any:
    for k in loc:
        if not isinstance(data, dict):
            return None
        data = data.get(k)
    return data


def _data_problems(data: dict[str, Any], path: Path, lines: Lines) -> dict[tuple, str]:
    """What is wrong in the tree whether or not the models accept the rest: files that do not
    exist, ROI syntax, a detection rate given in percent."""
    found: dict[tuple, str] = {}
    ranges = _get(data, ("analysis", "ranges"))
    if isinstance(ranges, str):
        p = Path(ranges) if Path(ranges).is_absolute() else path.parent / ranges
        if not p.is_file():
            why = ("is a directory, not a range file" if p.is_dir() else
                   "is not a regular file" if p.exists() else "range file not found")
            found[("analysis", "ranges")] = f"{p}: {why}" if p.exists() else f"{why}: {p}"
    roi = _get(data, ("analysis", "roi"))
    if isinstance(roi, str):
        from apt_daq.errors import UserError
        from apt_daq.roi import parse_roi

        try:
            parse_roi(roi)
        except UserError as e:
            found[("analysis", "roi")] = f"{e} (analyze would fail after the acquisition)"
    rate = _get(data, ("run", "target_detection_rate"))
    if isinstance(rate, int | float) and not isinstance(rate, bool) \
            and rate > RATE_PERCENT_SUSPECT:
        found[("run", "target_detection_rate")] = (
            f"{rate:g} ions per pulse means {100 * rate:g} % of pulses detect an ion: percent? "
            f"{rate:g} % is {rate / 100:g} (above {RATE_PERCENT_SUSPECT:g} the feedback drives "
            "the specimen to evaporate in bursts and fracture)")
    return found


#: the entry-point group third-party driver backends register in (``<kind>.<backend>``)
DRIVER_ENTRY_POINTS = "apt_daq.drivers"


def _backend_problems(rf: RunFile) -> dict[tuple, str]:
    """A backend that is neither built in nor a registered plug-in (``run`` would refuse it
    when it opens the instruments, without a file:line)."""
    from importlib.metadata import entry_points

    from apt_daq.driver_config import BUILTIN_BACKENDS

    found: dict[tuple, str] = {}
    plugins = {ep.name for ep in entry_points(group=DRIVER_ENTRY_POINTS)}
    for kind in ("laser", "hv", "dld"):
        backend = getattr(rf.drivers, kind).backend
        if backend in BUILTIN_BACKENDS[kind] or f"{kind}.{backend}" in plugins:
            continue
        others = sorted(p for p in plugins if p.startswith(kind + "."))
        found[("drivers", kind, "backend")] = (
            f"unknown backend {backend!r}; built in: {', '.join(sorted(BUILTIN_BACKENDS[kind]))}"
            f"; plug-ins ({DRIVER_ENTRY_POINTS}): {', '.join(others) or 'none'}")
    return found


def _model_problems(rf: RunFile) -> dict[tuple, str]:
    """What the models accept but the run would trip over."""
    r = rf.run
    found = _backend_problems(rf)
    if r.stop.max_voltage_v is not None and r.stop.max_voltage_v <= r.start_voltage_v:
        found[("run", "stop", "max_voltage_v")] = (
            f"{r.stop.max_voltage_v:g} V is not above run.start_voltage_v "
            f"{r.start_voltage_v:g} V: the run would stop at its first block")
    ceiling = rf.instrument.max_voltage_v
    if rf.drivers.hv.limit_v > ceiling:
        found[("drivers", "hv", "limit_v")] = (
            f"{rf.drivers.hv.limit_v:g} V is above instrument.max_voltage_v {ceiling:g} V (the "
            "supply's own ceiling): the supply refuses this limit when the driver connects, "
            "so the run cannot start")
    if r.start_voltage_v > ceiling:
        found[("run", "start_voltage_v")] = (
            f"{r.start_voltage_v:g} V is above instrument.max_voltage_v {ceiling:g} V (the "
            "supply's own ceiling)")
    if _never_stops(r) and rf.drivers.dld.backend == "sim":
        found[("run", "stop")] = (
            "nothing stops this simulated run (stop.ions, stop.instrument_time_s and "
            "stop.max_voltage_v null, stop.on_fracture false, no schedule): it would write "
            "until the disk is full; give stop.ions or stop.instrument_time_s")
    return found


#: a ramp to the start voltage longer than this, s, is warned (a LEAP ramps in seconds)
SLOW_RAMP_S = 3600.0


def _never_stops(r: RunConfig) -> bool:
    """No stop condition at all: a constant laser energy (a schedule ends), no ion count, no
    instrument time, no voltage ceiling and fractures ignored."""
    s = r.stop
    return (r.schedule is None and s.ions is None and s.instrument_time_s is None
            and s.max_voltage_v is None and not s.on_fracture)


def _unit_slips(r: RunConfig) -> dict[tuple, str]:
    """Values far below what a LEAP-class instrument uses (:data:`UNIT_SLIPS`), each with the
    unit slip it most likely is."""
    values = [(("run", "laser_pj"), r.laser_pj)] + [
        (("run", "schedule", i, "laser_pj"), s.laser_pj) for i, s in enumerate(r.schedule or [])
    ] + [(("run", "pulse_rate_hz"), r.pulse_rate_hz),
         (("run", "start_voltage_v"), r.start_voltage_v or None)]  # 0 V: a ramp from zero
    found = {}
    for loc, value in values:
        slip = UNIT_SLIPS[loc[-1]]
        if value is not None and value < slip.below:
            found[loc] = (f"{value:.6g} {slip.unit} is below {slip.below:.6g} {slip.unit}: "
                          f"{slip.in_use}; was {slip.meant} meant ({value:.6g} {slip.meant} = "
                          f"{value * slip.factor:.6g} {slip.unit})?")
    return found


def _warnings(rf: RunFile) -> dict[tuple, str]:
    """What runs, but likely not as meant."""
    r, found = rf.run, _unit_slips(rf.run)
    cut = schedule_cut_short(r)
    if cut:
        found[("run", "stop", "ions")] = f"{r.stop.ions} {cut}"
    if _never_stops(r) and rf.drivers.dld.backend != "sim":
        found[("run", "stop")] = (
            "nothing stops this run but its operator (stop.ions, stop.instrument_time_s and "
            "stop.max_voltage_v null, stop.on_fracture false, no schedule): Ctrl-C pauses, "
            "SIGTERM ends it")
    ramp = rf.drivers.hv.ramp_v_per_s
    if r.start_voltage_v / ramp > SLOW_RAMP_S:
        found[("drivers", "hv", "ramp_v_per_s")] = (
            f"{ramp:g} V/s takes {r.start_voltage_v / ramp / 3600:.1f} h to ramp to "
            f"run.start_voltage_v {r.start_voltage_v:g} V (a LEAP ramps at ~100-1000 V/s)")
    return found


def schedule_cut_short(run: RunConfig) -> str | None:
    """In words, which schedule steps the stop ion count leaves out (``ends the run in step 0
    (5 pJ, after 2000 of its 200000 ions): steps 1-3 (10 pJ, 15 pJ, 20 pJ) will not run``);
    None when every step runs or when a step ends on time (then nobody can tell)."""
    steps = run.schedule
    if not steps or not run.stop.ions:
        return None

    def name(s: StepConfig) -> str:
        return s.label or f"{s.laser_pj:g} pJ"

    before = 0
    for i, step in enumerate(steps):
        if step.ions is None:
            return None
        if before + step.ions >= run.stop.ions:
            if i == len(steps) - 1:
                return None
            rest = steps[i + 1:]
            which = f"step {i + 1}" if len(rest) == 1 else f"steps {i + 1}-{len(steps) - 1}"
            return (f"ends the run in step {i} ({name(step)}, after {run.stop.ions - before} "
                    f"of its {step.ions} ions): {which} ({', '.join(map(name, rest))}) will "
                    "not run")
        before += step.ions
    return None


def preflight(path: str | Path, overrides: dict[str, Any] | None = None,
              set_by: dict[str, str] | None = None) -> tuple[RunFile, list[str]]:
    """Everything that would fail or be dangerous when ``path`` runs, found before anything
    is switched on: the run file (with ``overrides``, dotted paths, e.g. ``{"run.stop.ions":
    1000}``; ``set_by`` names what set each, e.g. ``{"run.stop.ions": "--ions"}``) and its
    include files, validated; its range file present; its ROI parsed; energies, rates and
    voltages within the instruments'; a detection rate given in percent. Raises one
    ConfigError with every problem (``file:line path: what``); returns the run file and the
    warnings (``file:line path: what``: it runs, but likely not as meant)."""
    path = Path(path)
    data, lines = compose_yaml(path)
    kind = file_kind(data)
    if kind != "run":
        raise ConfigError([_not_a_run_file(path, kind)])
    missing: dict[str, str] = {}
    data, lines = _load_tree(path, missing)
    return preflight_tree(path, data, lines, missing, overrides, set_by)


def preflight_tree(path: Path, data: dict[str, Any], lines: Lines, missing: dict[str, str],
                   overrides: dict[str, Any] | None = None,
                   set_by: dict[str, str] | None = None) -> tuple[RunFile, list[str]]:
    """:func:`preflight` of a run file's tree as :func:`_load_tree` loaded it (with the
    include files it did not find in ``missing``): to check many overrides of one file
    without reading it again. ``data`` and ``lines`` are changed: give copies."""
    problems = list(missing.values())
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, last = dotted.split(".")
        for i, p in enumerate(parents):
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                at = ".".join(parents[:i + 1])
                raise ConfigError([f"{(set_by or {}).get(dotted, 'override')} {dotted}: {at} "
                                   f"is a value ({node!r}), not a section with keys"])
        node[last] = copy.deepcopy(value)  # the caller's dicts are read, never written: a
        key = tuple(dotted.split("."))  # later key (drivers.hv.limit_v) goes into the copy
        for k in [k for k in lines if k[:len(key)] == key]:
            del lines[k]
        lines[key] = ((set_by or {}).get(dotted, "override"), 0)
    data["source"] = str(path.resolve())  # so relative paths in it resolve from anywhere
    found = _data_problems(data, path, lines)
    problems += [f"{where(lines, loc, str(path))}: {msg}" for loc, msg in found.items()]
    skip = {(k,) for k in missing} | set(found)
    rf = None
    try:
        rf = RunFile.model_validate(data)
    except ValidationError as e:
        problems += validation_problems(e, lines, str(path), skip, model=RunFile)
        if not any(isinstance((err.get("ctx") or {}).get("error"), Problems)
                   for err in e.errors()):  # not reached: check from the parts that validate
            problems += [f"{where(lines, loc, str(path))}: {msg}"
                         for loc, msg in _partial_instrument_problems(data)
                         if not any(loc[:len(k)] == k for k in skip)]
    if rf is not None:
        problems += [f"{where(lines, loc, str(path))}: {msg}"
                     for loc, msg in _model_problems(rf).items()]
    if problems:
        raise ConfigError(problems)
    assert rf is not None
    return rf, [f"{where(lines, loc, str(path))}: {msg}" for loc, msg in _warnings(rf).items()]


def load_run(path: str | Path, overrides: dict[str, Any] | None = None) -> RunFile:
    """Load a run file with its included instrument/specimen files, checked as by
    :func:`preflight` (every problem in one ConfigError, each naming file:line).

    ``overrides`` maps dotted paths to values, e.g. ``{"run.seed": 3, "run.stop.ions": 1000}``.
    """
    return preflight(path, overrides)[0]


def detect_model(data: dict[str, Any]) -> type[_Model]:
    """Guess which model a YAML file holds, from its keys."""
    models: dict[str, type[_Model]] = {"specimen": SpecimenConfig, "instrument": InstrumentConfig}
    return models.get(file_kind(data), RunFile)
