"""The sweep model: a sweep file (base run file, axes, mode), its points, and the validated
run file of every point (:func:`build_tasks`), checked in the client before anything runs."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    JsonValue,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from apt_daq.config import (
    AnalysisConfig,
    ConfigError,
    InstrumentConfig,
    Problems,
    RunFile,
    SpecimenConfig,
    _Model,
    compose_yaml,
    load_run,
    load_yaml_model,
    validation_problems,
)
from apt_daq.drivers.config import DriversConfig

_INCLUDE_MODELS: dict[str, type[BaseModel]] = {
    "instrument": InstrumentConfig, "specimen": SpecimenConfig,
    "drivers": DriversConfig, "analysis": AnalysisConfig,
}


# ------------------------------------------------------------------------------ sweep model
#: a sweep's values reach the run model as they are (a NaN laser energy is refused there, at
#: its key; a range checks its own numbers are finite)
_SWEEP_CONFIG = ConfigDict(extra="forbid", validate_default=True, allow_inf_nan=True)


class RangeAxis(_Model):
    """Evenly spaced values from ``start`` to ``stop`` (inclusive when it is on the grid),
    by ``step`` or in ``num`` values."""

    model_config = _SWEEP_CONFIG
    start: float
    stop: float
    step: float | None = Field(None, gt=0, description="spacing; give step or num")
    num: int | None = Field(None, ge=1, description="number of values; give step or num")

    @model_validator(mode="after")
    def _one(self) -> RangeAxis:
        if (self.step is None) == (self.num is None):
            raise ValueError("give exactly one of step or num")
        if not all(math.isfinite(v) for v in (self.start, self.stop, self.step or 1.0)):
            raise ValueError("start, stop and step must be finite numbers")
        if self.stop < self.start:
            raise ValueError(f"stop {self.stop:g} is below start {self.start:g}")
        n = self.count()
        if n > MAX_POINTS:
            many = f"{n:.3g}" if math.isfinite(n) else "more than 1e308"
            raise ValueError(f"{many} values: more than the {MAX_POINTS} points a sweep may have")
        return self

    def count(self) -> float:
        """How many values (a float: counted before any is made; inf when (stop - start) /
        step overflows)."""
        if self.num is not None:
            return float(self.num)
        assert self.step is not None
        q = (self.stop - self.start) / self.step
        return math.floor(q + 1e-9) + 1.0 if math.isfinite(q) else math.inf

    def values(self) -> list[float]:
        if self.num is not None:
            if self.num == 1:
                return [self.start]
            d = (self.stop - self.start) / (self.num - 1)
            return [_tidy(self.start + i * d) for i in range(self.num)]
        step = self.step
        assert step is not None  # _one: step or num
        n = math.floor((self.stop - self.start) / step + 1e-9) + 1
        return [_tidy(self.start + i * step) for i in range(n)]


#: the most points a sweep may have (each a simulated run): a typo such as ``step: 1e-6`` or
#: ``num: 1e8`` is refused at once, not expanded until memory runs out
MAX_POINTS = 10_000


class ValuesAxis(_Model):
    """An explicit list of values."""

    model_config = _SWEEP_CONFIG
    values: list[JsonValue] = Field(..., min_length=1)


def _axis_kind(v: object) -> str:
    """Which kind of axis a value is written as, so a mistake in one is reported for that kind
    alone (not once per kind the union could have been)."""
    if isinstance(v, dict | ValuesAxis):
        return "values" if isinstance(v, ValuesAxis) or "values" in v else "range"
    return "range" if isinstance(v, RangeAxis) else "list"


#: an axis: a list of values, a range (start, stop, step or num) or {values: [...]}
Axis = Annotated[Annotated[list[JsonValue], Tag("list")] | Annotated[RangeAxis, Tag("range")]
                 | Annotated[ValuesAxis, Tag("values")], Discriminator(_axis_kind)]


def _tidy(x: float) -> float | int:
    """5.000000001 -> 5 and 0.30000000000000004 -> 0.3, so names and tables read well."""
    r = round(x, 10)
    return int(r) if r == int(r) else r


class Sweep(_Model):
    """A campaign: a base run file and the axes to vary."""

    model_config = _SWEEP_CONFIG
    name: str = Field(..., description="campaign name; default out folder runs/campaigns/NAME")
    base: str = Field(..., description="base run file, relative to the sweep file")
    mode: Literal["product", "zip"] = Field("product", description="combine axes: product|zip")
    axes: dict[str, Axis] = Field(
        default_factory=dict, description="dotted run-file path -> values (list, range, values)")
    set: dict[str, JsonValue] = Field(default_factory=dict, description="overrides for every point")
    ions: int | None = Field(None, gt=0, description="detected ions per point (run.stop.ions)")
    out: str | None = Field(None, description="out folder, relative to the current directory")
    source: str | None = Field(None, description="the file this was loaded from")

    @field_validator("name")
    @classmethod
    def _plain_name(cls, name: str) -> str:
        """The name is a folder under runs/campaigns (and the run names' stem): ``../x`` or
        ``/abs`` would write elsewhere (``out:`` or ``-o`` choose another folder)."""
        if name in ("", ".", "..") or "/" in name or "\\" in name:
            raise ValueError("a plain name, no folders (give out: or -o for another folder)")
        return name

    @model_validator(mode="after")
    def _axes(self) -> Sweep:
        empty = [(("axes", k), "no values: give at least one") for k, v in self.axes.items()
                 if isinstance(v, list) and not v]
        if empty:  # each at its own line (a plain ValueError was blamed on line 1)
            raise Problems(empty)
        sizes = [v.count() if isinstance(v, RangeAxis) else len(self.axis_values(k))
                 for k, v in self.axes.items()]
        if self.mode == "zip":
            lengths = {k: len(self.axis_values(k)) for k in self.axes}
            first = next(iter(lengths), "")
            odd = [(("axes", k), f"{n} values where {first} has {lengths[first]}: mode zip "
                    "pairs the axes value by value, so they need as many")
                   for k, n in lengths.items() if n != lengths[first]]
            if odd:
                raise Problems(odd)
        elif math.prod(sizes) > MAX_POINTS:
            raise ValueError(f"{math.prod(sizes):.3g} points ({' x '.join(f'{n:g}' for n in sizes)}"
                             f"): more than the {MAX_POINTS} a sweep may have")
        return self

    def axis_values(self, key: str) -> list[JsonValue]:
        v = self.axes[key]
        if isinstance(v, RangeAxis):
            return [x for x in v.values()]  # a list of JSON values, as the other axes
        if isinstance(v, ValuesAxis):
            return list(v.values)
        return list(v)

    def points(self) -> list[Point]:
        """Every point in order (product: the first axis varies slowest)."""
        keys = list(self.axes)
        columns = [self.axis_values(k) for k in keys]
        combos = zip(*columns, strict=True) if self.mode == "zip" else itertools.product(*columns)
        points = [Point(i, dict(zip(keys, c, strict=True))) for i, c in enumerate(combos)]
        seen: dict[str, int] = {}
        for pt in points:  # the same values twice: one run file written by two workers
            if pt.key in seen:
                raise ConfigError([f"{self.source}: points {seen[pt.key]} and {pt.index} are "
                                   f"the same, {pt.params}: list each value once"])
            seen[pt.key] = pt.index
        return points

    def resolve(self, relative: str | Path) -> Path:
        p = Path(relative)
        if not p.is_absolute() and self.source:
            p = Path(self.source).parent / p
        return p


def load_sweep(path: str | Path) -> Sweep:
    """Load and validate a sweep file; errors name the file, line and field."""
    path = Path(path)
    data, lines = compose_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError([f"{path}:1: expected a mapping at the top level"])
    data["source"] = str(path)
    try:
        sweep = Sweep.model_validate(data)
    except ValidationError as e:
        raise ConfigError(validation_problems(e, lines, str(path), model=Sweep)) from None
    if not sweep.resolve(sweep.base).exists():
        f, line = lines.get(("base",), (str(path), 1))
        raise ConfigError([f"{f}:{line} base: run file not found: {sweep.resolve(sweep.base)}"])
    return sweep


@dataclass(frozen=True)
class Point:
    """One point of a sweep: its index and the axis values (as written in the sweep)."""

    index: int
    params: dict[str, JsonValue]

    @property
    def key(self) -> str:
        """A file stem that reads as the parameters and cannot collide (a hash of them)."""
        parts = []
        for k, v in self.params.items():
            name = k.rsplit(".", 1)[-1]
            if isinstance(v, str):
                val = Path(v).stem
            elif isinstance(v, float | int):
                val = f"{v:g}"
            else:
                val = "x"
            parts.append(f"{name}={val}")
        slug = "_".join(parts)[:80] or "point"
        slug = "".join(c if c.isalnum() or c in "=_.+-" else "-" for c in slug)
        digest = hashlib.sha1(json.dumps(_canonical(self.params), sort_keys=True,
                                         default=str).encode())
        return f"{slug}-{digest.hexdigest()[:6]}"


def _canonical(v: JsonValue) -> JsonValue:
    """A point's values as the run file reads them: a whole-number float is its integer, so
    ``[5, 5.0]`` is one point twice (refused) and ``5.0`` resumes the point ``5`` wrote
    (they were two points with the same run, simulated twice, under two hashes)."""
    if isinstance(v, float) and v.is_integer() and abs(v) < 2**53:
        return int(v)
    if isinstance(v, dict):
        return {k: _canonical(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_canonical(x) for x in v]
    return v


@dataclass(frozen=True)
class PointTask:
    """What a worker gets for one point: the validated run file and where to write."""

    index: int
    key: str
    params: dict[str, JsonValue]
    run_file: RunFile
    out_path: Path
    config_sha: str

    @property
    def json_path(self) -> Path:
        return self.out_path.with_suffix(".json")


#: a result row: the point's parameters, its outcome and its metrics, as JSON and the table
#: hold them (:func:`apt_daq.campaign.points.flatten_report` makes metrics scalars)
Row = dict[str, JsonValue]
#: runs one point on a worker and returns its row (picklable)
PointFn = Callable[[PointTask], Row]


def config_sha(run_file: RunFile) -> str:
    """A fingerprint of what a run does (not of where its file came from)."""
    d = run_file.model_dump(mode="json", exclude={"source"})
    return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def _resolve_value(sweep: Sweep, key: str, value: JsonValue) -> JsonValue:
    """An include key given as a path: load and validate that file (errors name it)."""
    if key in _INCLUDE_MODELS and isinstance(value, str):
        path = sweep.resolve(value)
        if not path.exists():
            raise ConfigError([f"{sweep.source}: {key}: file not found: {path}"])
        return load_yaml_model(path, _INCLUDE_MODELS[key]).model_dump(mode="json")
    return value


def _fixed(sweep: Sweep) -> dict[str, JsonValue]:
    """The overrides of every point: set:, and ions: (or --ions), which wins over set:."""
    fixed = dict(sweep.set)
    if sweep.ions is not None:  # an axis of it is a clash
        if "run.stop.ions" in sweep.axes:
            raise ConfigError([f"{sweep.source}: ions {sweep.ions} (ions: or --ions) and the "
                               "axis run.stop.ions: give one"])
        fixed["run.stop.ions"] = sweep.ions
    return fixed


MAX_FAILED_POINTS = 50  # build_tasks stops after this many points that fail


def build_tasks(sweep: Sweep, out_dir: Path) -> list[PointTask]:
    """Every point's run file, validated in the client before anything runs."""
    base = sweep.resolve(sweep.base).resolve()
    fixed = _fixed(sweep)
    cache: dict[tuple[str, str], JsonValue] = {}
    tasks: list[PointTask] = []
    problems: dict[str, list[Point]] = {}  # each problem once, with the points it is at
    failed = 0
    points = sweep.points()
    for point in points:
        overrides: dict[str, JsonValue] = {}
        for k, v in {**fixed, **point.params}.items():
            ck = (k, json.dumps(v, sort_keys=True, default=str))
            if ck not in cache:
                cache[ck] = _resolve_value(sweep, k, v)
            overrides[k] = cache[ck]
        overrides.setdefault("run.name", point.key)
        try:
            rf = load_run(base, overrides)
        except ConfigError as e:
            for p in e.problems:
                problems.setdefault(p, []).append(point)
            failed += 1
            if len(problems) > 20 or failed >= MAX_FAILED_POINTS:
                break  # a point takes ~10 ms to validate: 10000 of them would take minutes
            continue
        out = (out_dir / f"{point.key}.h5").resolve()
        tasks.append(PointTask(point.index, point.key, point.params, rf, out, config_sha(rf)))
    if problems:
        lines = [_problem_line(sweep, p, at) for p, at in problems.items()]
        if failed >= MAX_FAILED_POINTS and point is not points[-1]:
            lines.append(f"{sweep.source}: checking stopped at the {failed}th point that failed "
                         f"(point {point.index} of {len(points)})")
        raise ConfigError(lines)
    return tasks


def _problem_line(sweep: Sweep, problem: str, at: list[Point]) -> str:
    """One line of a problem found at one or many points: the first point named (its
    parameters shortened), how many others share it."""
    params = repr(at[0].params)
    if len(params) > 80:
        params = params[:77] + "..."
    more = f" (and {len(at) - 1} more point{'s' if len(at) > 2 else ''})" if len(at) > 1 else ""
    return f"{sweep.source}: point {at[0].index} {params}{more}: {problem}"


def _checked_values(sweep: Sweep, key: str) -> list[JsonValue]:
    """The distinct values of an axis that :func:`check_sweep` validates: every listed one; of
    a range its first, second and last (evenly spaced: the rest lie between them)."""
    values = sweep.axis_values(key)
    if isinstance(sweep.axes[key], RangeAxis):
        values = values[:2] + values[-1:]
    distinct = {json.dumps(v, sort_keys=True, default=str): v for v in values}
    return list(distinct.values())


def check_sweep(sweep: Sweep) -> None:
    """What ``campaign --dry-run`` refuses, found without validating the product of the axes
    (:func:`build_tasks`): a point listed twice; the first point (the base run file with set:,
    ions: and each axis' first value); then each other value of each axis in it
    (:func:`_checked_values`). One ConfigError, each line naming the sweep file's line of
    set:, ions: or the axis (at most ~20 lines)."""
    import copy

    from apt_daq.config import _load_tree, preflight, preflight_tree

    src = str(sweep.source)
    _, at_line = compose_yaml(Path(src))

    def label(section: str, key: str | None = None) -> str:
        f, line = at_line.get((section, key) if key else (section,), (src, 1))
        return f"{f}:{line} {section}"

    sweep.points()  # the same point twice
    first = {k: _resolve_value(sweep, k, v) for k, v in _fixed(sweep).items()}
    set_by = {k: label("set", k) for k in sweep.set}
    if sweep.ions is not None:
        set_by["run.stop.ions"] = label("ions")
    for key in sweep.axes:
        first[key] = _resolve_value(sweep, key, sweep.axis_values(key)[0])
        set_by[key] = label("axes", key)
    base = sweep.resolve(sweep.base)
    labels = tuple(set_by.values())
    problems: list[str] = []
    try:
        preflight(base, first, set_by)  # each problem at the sweep's line that set it
    except ConfigError as e:
        if not all(p.startswith(labels) for p in e.problems):
            raise  # the base file's own (or one it is blamed for): the same at every point
        problems = list(e.problems)
    data, lines = _load_tree(base, {})
    for key in sweep.axes:
        name = set_by[key]
        for v in _checked_values(sweep, key)[1:]:
            try:
                over = {**first, key: _resolve_value(sweep, key, v)}
                preflight_tree(base, copy.deepcopy(data), dict(lines), {}, over, set_by)
            except ConfigError as e:  # a problem the base file is blamed for: which value
                problems += [p if p.startswith(labels) else f"{name} {key} = {v!r}: {p}"
                             for p in e.problems]
            problems = list(dict.fromkeys(problems))  # an unknown key: once, not per value
            if len(problems) >= 20:
                raise ConfigError(problems)
    if problems:
        raise ConfigError(problems)
