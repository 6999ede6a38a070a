"""Parameter sweeps ("campaigns") of simulated runs, one run per point, on dask.distributed.

A sweep file names a base run file and the axes to vary::

    name: fig5-coated-5-50pj
    base: ../runs/nmc811-cr-5pj.yaml        # relative to the sweep file
    mode: product                           # product (every combination) or zip (in step)
    ions: 50000                             # shortcut for run.stop.ions
    axes:
      run.laser_pj: {start: 5, stop: 50, step: 5}    # stop inclusive when on the grid
      run.seed: [1, 2]                               # a plain list
      specimen: {values: [../specimens/nmc811.yaml]} # include keys take file paths
    set: {run.stop.on_fracture: true}       # fixed overrides for every point

Each point is the base run with the point's overrides (dotted paths into the run file; the
include keys ``instrument``, ``specimen``, ``drivers``, ``analysis`` may be YAML paths, relative
to the sweep file). Every point is validated in the client before anything runs. A point runs
as one dask task: by default :func:`simulate_and_analyze` (the run engine, then the analysis)
on a ``LocalCluster`` of processes with one thread each, or on an existing scheduler.

Out folder: ``<key>.h5`` (the run) and ``<key>.json`` (its result row, written by the worker
the moment the point ends) per point, ``results.csv`` / ``results.parquet`` (the table),
``sweep.json`` (the resolved sweep) and ``calibration.png``. On a re-run, a point whose JSON
row matches its configuration, holds no error, and whose run file ended by itself (``done``,
or ``failed`` by fracture) is skipped; anything else (an exception, an aborted or missing run)
runs again. With a scheduler address, the out folder must be on a file system that the
workers share with the client.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import itertools
import json
import logging
import math
import os
import time
import traceback
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from apt_daq.config import (
    AnalysisConfig,
    ConfigError,
    InstrumentConfig,
    RunFile,
    SpecimenConfig,
    _Model,
    compose_yaml,
    load_run,
    load_yaml_model,
    validation_problems,
)
from apt_daq.drivers.config import DriversConfig
from apt_daq.errors import UserError

log = logging.getLogger(__name__)

#: Run states after which a point counts as finished (a fracture is a result, not an error).
FINISHED_STATES = ("done", "failed")
_INCLUDE_MODELS: dict[str, type[_Model]] = {
    "instrument": InstrumentConfig, "specimen": SpecimenConfig,
    "drivers": DriversConfig, "analysis": AnalysisConfig,  # type: ignore[dict-item]
}


# ------------------------------------------------------------------------------ sweep model
class RangeAxis(_Model):
    """Evenly spaced values from ``start`` to ``stop`` (inclusive when it is on the grid),
    by ``step`` or in ``num`` values."""

    start: float
    stop: float
    step: float | None = Field(None, gt=0, description="spacing; give step or num")
    num: int | None = Field(None, ge=1, description="number of values; give step or num")

    @model_validator(mode="after")
    def _one(self) -> RangeAxis:
        if (self.step is None) == (self.num is None):
            raise ValueError("give exactly one of step or num")
        if self.stop < self.start:
            raise ValueError(f"stop {self.stop:g} is below start {self.start:g}")
        return self

    def values(self) -> list[float]:
        if self.num is not None:
            if self.num == 1:
                return [self.start]
            d = (self.stop - self.start) / (self.num - 1)
            return [_tidy(self.start + i * d) for i in range(self.num)]
        n = math.floor((self.stop - self.start) / self.step + 1e-9) + 1
        return [_tidy(self.start + i * self.step) for i in range(n)]


class ValuesAxis(_Model):
    """An explicit list of values."""

    values: list[Any] = Field(..., min_length=1)


def _tidy(x: float) -> float | int:
    """5.000000001 -> 5 and 0.30000000000000004 -> 0.3, so names and tables read well."""
    r = round(x, 10)
    return int(r) if r == int(r) else r


class Sweep(_Model):
    """A campaign: a base run file and the axes to vary."""

    name: str = Field(..., description="campaign name; default out folder runs/campaigns/NAME")
    base: str = Field(..., description="base run file, relative to the sweep file")
    mode: Literal["product", "zip"] = Field("product", description="combine axes: product|zip")
    axes: dict[str, list[Any] | RangeAxis | ValuesAxis] = Field(
        default_factory=dict, description="dotted run-file path -> values (list, range, values)")
    set: dict[str, Any] = Field(default_factory=dict, description="overrides for every point")
    ions: int | None = Field(None, gt=0, description="detected ions per point (run.stop.ions)")
    out: str | None = Field(None, description="out folder, relative to the current directory")
    source: str | None = Field(None, description="the file this was loaded from")

    @model_validator(mode="after")
    def _axes(self) -> Sweep:
        for k, v in self.axes.items():
            if isinstance(v, list) and not v:
                raise ValueError(f"axis {k!r} has no values")
        if self.mode == "zip":
            lengths = {k: len(self.axis_values(k)) for k in self.axes}
            if len(set(lengths.values())) > 1:
                raise ValueError(f"mode zip needs axes of equal length, got {lengths}")
        return self

    def axis_values(self, key: str) -> list[Any]:
        v = self.axes[key]
        if isinstance(v, RangeAxis):
            return v.values()
        if isinstance(v, ValuesAxis):
            return list(v.values)
        return list(v)

    def points(self) -> list[Point]:
        """Every point in order (product: the first axis varies slowest)."""
        keys = list(self.axes)
        columns = [self.axis_values(k) for k in keys]
        combos = zip(*columns, strict=True) if self.mode == "zip" else itertools.product(*columns)
        return [Point(i, dict(zip(keys, c, strict=True))) for i, c in enumerate(combos)]

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
        raise ConfigError(validation_problems(e, lines, str(path))) from None
    if not sweep.resolve(sweep.base).exists():
        f, line = lines.get(("base",), (str(path), 1))
        raise ConfigError([f"{f}:{line} base: run file not found: {sweep.resolve(sweep.base)}"])
    return sweep


@dataclass(frozen=True)
class Point:
    """One point of a sweep: its index and the axis values (as written in the sweep)."""

    index: int
    params: dict[str, Any]

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
        digest = hashlib.sha1(json.dumps(self.params, sort_keys=True, default=str).encode())
        return f"{slug}-{digest.hexdigest()[:6]}"


@dataclass(frozen=True)
class PointTask:
    """What a worker gets for one point: the validated run file and where to write."""

    index: int
    key: str
    params: dict[str, Any]
    run_file: RunFile
    out_path: Path
    config_sha: str

    @property
    def json_path(self) -> Path:
        return self.out_path.with_suffix(".json")


PointFn = Callable[[PointTask], dict[str, Any]]


def config_sha(run_file: RunFile) -> str:
    """A fingerprint of what a run does (not of where its file came from)."""
    d = run_file.model_dump(mode="json", exclude={"source"})
    return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def _resolve_value(sweep: Sweep, key: str, value: Any) -> Any:
    """An include key given as a path: load and validate that file (errors name it)."""
    if key in _INCLUDE_MODELS and isinstance(value, str):
        path = sweep.resolve(value)
        if not path.exists():
            raise ConfigError([f"{sweep.source}: {key}: file not found: {path}"])
        return load_yaml_model(path, _INCLUDE_MODELS[key]).model_dump(mode="json")
    return value


def build_tasks(sweep: Sweep, out_dir: Path) -> list[PointTask]:
    """Every point's run file, validated in the client before anything runs."""
    base = sweep.resolve(sweep.base).resolve()
    fixed = dict(sweep.set)
    if sweep.ions is not None:
        fixed.setdefault("run.stop.ions", sweep.ions)
    cache: dict[tuple[str, str], Any] = {}
    tasks, problems = [], []
    for point in sweep.points():
        overrides: dict[str, Any] = {}
        for k, v in {**fixed, **point.params}.items():
            ck = (k, json.dumps(v, sort_keys=True, default=str))
            if ck not in cache:
                cache[ck] = _resolve_value(sweep, k, v)
            overrides[k] = cache[ck]
        overrides.setdefault("run.name", point.key)
        try:
            rf = load_run(base, overrides)
        except ConfigError as e:
            problems += [f"{sweep.source}: point {point.index} {point.params}: {p}"
                         for p in e.problems]
            if len(problems) > 20:
                break
            continue
        out = (out_dir / f"{point.key}.h5").resolve()
        tasks.append(PointTask(point.index, point.key, point.params, rf, out, config_sha(rf)))
    if problems:
        raise ConfigError(problems)
    return tasks


# ------------------------------------------------------------------------------ point functions
def flatten_report(report: dict[str, Any]) -> dict[str, Any]:
    """The table columns of an ``analyze_run`` report: ``comp.El`` (+ ``.err``),
    ``ratio.NAME`` (+ ``.err``), ``count.ION``, ``mrp50``/``mrp10`` (the most counted peak)
    and ``mrp50.PEAK``/``mrp10.PEAK``, ``fda_mu.ION``."""
    row: dict[str, Any] = {}
    for k in ("ions", "ranged_ions"):
        if k in report:
            row[k] = report[k]
    for el, v in (report.get("composition") or {}).items():
        if isinstance(v, dict):
            row[f"comp.{el}"] = v.get("fraction")
            row[f"comp.{el}.err"] = v.get("error")
        else:
            row[f"comp.{el}"] = v
    for name, v in (report.get("ratios") or {}).items():
        row[f"ratio.{name}"] = v.get("value") if isinstance(v, dict) else v
    for name, v in (report.get("ratio_errors") or {}).items():
        row[f"ratio.{name}.err"] = v
    for ion, n in (report.get("ion_counts") or {}).items():
        row[f"count.{ion}"] = n
    mrp = report.get("mrp")
    if isinstance(mrp, list):  # per peak, most counted first: mrp50/mrp10 of the first
        for i, pk in enumerate(p for p in mrp if isinstance(p, dict)):
            for k in ("mrp50", "mrp10"):
                if k in pk:
                    row[f"{k}.{pk.get('peak', i)}"] = pk[k]
                    if i == 0:
                        row[k] = pk[k]
    elif isinstance(mrp, dict):
        for k, v in mrp.items():
            if isinstance(v, int | float) or v is None:
                row[f"mrp.{k}"] = v
    elif mrp is not None:
        row["mrp"] = mrp
    for sp, v in (report.get("fda") or {}).items():
        row[f"fda_mu.{sp}"] = v.get("mu") if isinstance(v, dict) else v
    return {k: _scalar(v) for k, v in row.items()}


def _scalar(v: Any) -> Any:
    if hasattr(v, "item") and callable(v.item):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v if v is None or isinstance(v, bool | int | float | str) else str(v)


def _run_state(path: Path) -> tuple[str | None, str | None]:
    """(state, config fingerprint) of an existing run file, or (None, None)."""
    if not path.exists():
        return None, None
    try:
        from apt_daq.io.store import RunReader

        with RunReader(path) as r:
            cfg = r.meta.get("config")
            sha = config_sha(RunFile.model_validate(cfg)) if cfg else None
            return r.meta.get("state"), sha
    except Exception:  # a file cut short by a kill: run again
        return None, None


def simulate_and_analyze(task: PointTask) -> dict[str, Any]:
    """The default point: the run engine on the point's run file, then the analysis.

    A run file that already ended by itself with the same configuration (a campaign killed
    after the run but before its result was recorded) is analysed again, not re-simulated.
    """
    from apt_daq.run import Session

    state, sha = _run_state(task.out_path)
    row: dict[str, Any]
    if state in FINISHED_STATES and sha == task.config_sha:
        from apt_daq.io.store import RunReader

        with RunReader(task.out_path) as r:
            c = r.meta.get("counters") or {}
            row = {"state": state, "reason": r.meta.get("end_reason", ""),
                   "ions": c.get("ions"), "pulses": c.get("pulses"), "resimulated": False}
    else:
        res = Session(task.run_file, out=task.out_path, overwrite=True, progress=False).run()
        row = {"state": res.state.name.lower(), "reason": res.reason, "ions": res.ions,
               "pulses": res.pulses, "v_min_v": res.voltage_range_v[0],
               "v_max_v": res.voltage_range_v[1]}
    row["path"] = task.out_path.name
    if row.get("ions"):
        from apt_daq.analysis.report import analyze_run

        metrics = flatten_report(analyze_run(task.out_path))
        metrics.pop("ions", None)
        row.update(metrics)
    return row


def synthetic_point(task: PointTask, *, work: int = 40, size: int = 100_000) -> dict[str, Any]:
    """A stand-in point that burns a fixed amount of single-threaded CPU and simulates nothing:
    for benchmarks and for checking that a cluster reaches its workers (``--dry-run``).

    ``work`` sorts of ``size`` random numbers: the same work on every point and every machine.
    """
    import numpy as np

    rng = np.random.default_rng(task.index)
    acc = 0.0
    for _ in range(work):
        acc += float(np.sort(rng.random(size))[size // 2])
    return {"state": "done", "reason": "synthetic", "ions": 0, "pulses": 0,
            "synthetic_median": acc / max(work, 1)}


def fn_name(fn: Callable[..., Any]) -> str:
    """A stable name of a point function (a partial includes its keywords)."""
    if isinstance(fn, functools.partial):
        kw = ",".join(f"{k}={v!r}" for k, v in sorted(fn.keywords.items()))
        return f"{fn_name(fn.func)}({kw})"
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


# ------------------------------------------------------------------------------ one point (worker)
def _base_row(task: PointTask) -> dict[str, Any]:
    r = task.run_file.run
    laser = r.laser_pj if r.laser_pj is not None else (r.schedule[0].laser_pj if r.schedule
                                                       else None)
    return {
        "point": task.index, "key": task.key,
        **{k: _scalar(v) for k, v in task.params.items()},
        "specimen_name": task.run_file.specimen.name,
        "coated": task.run_file.specimen.coating is not None,
        "laser_pj": laser, "seed": r.seed,
    }


def _announce(topic: str | None, msg: dict[str, Any]) -> None:
    if not topic:
        return
    try:
        from distributed import get_worker

        get_worker().log_event(topic, msg)
    except (ImportError, ValueError):  # not inside a dask worker
        pass


def _write_json(path: Path, row: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(row, indent=1, default=str))
    os.replace(tmp, path)  # atomic: a kill leaves the old row or the new one, never half


def execute_point(task: PointTask, point_fn: PointFn, fn_id: str,
                  topic: str | None = None) -> dict[str, Any]:
    """Run one point and record its row beside its run file. Never raises for the point's
    own errors: they go into the row's ``error`` (the other points go on)."""
    _announce(topic, {"event": "start", "index": task.index})
    t0 = time.perf_counter()
    row = _base_row(task)
    # warnings go into the row (the JSON), not onto the terminal of whoever started a worker
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        try:
            row.update(point_fn(task))
            row.setdefault("state", "done")
            row.setdefault("error", None)
        except Exception as e:
            row.update(state="error", error=f"{type(e).__name__}: {e}",
                       traceback=traceback.format_exc(limit=20))
    if caught:
        row["warnings"] = sorted({f"{w.category.__name__}: {w.message}" for w in caught})
    row["duration_s"] = round(time.perf_counter() - t0, 4)
    row.update(config_sha=task.config_sha, point_fn=fn_id, host=os.uname().nodename,
               pid=os.getpid(), finished=time.strftime("%Y-%m-%dT%H:%M:%S"))
    try:
        _write_json(task.json_path, row)
    except OSError as e:  # no shared file system: the client writes it
        log.warning("could not write %s: %s", task.json_path, e)
    return row


def read_row(task: PointTask, fn_id: str) -> dict[str, Any] | None:
    """The JSON row beside a point's run file if it belongs to this configuration and point
    function (whatever its state), else None."""
    try:
        row = json.loads(task.json_path.read_text())
    except (OSError, ValueError):
        return None
    if row.get("config_sha") != task.config_sha or row.get("point_fn") != fn_id:
        return None
    return row


def recorded_row(task: PointTask, fn_id: str) -> dict[str, Any] | None:
    """The recorded row of a finished point, or None if the point must (re)run."""
    row = read_row(task, fn_id)
    if row is None or row.get("error") or row.get("state") not in FINISHED_STATES:
        return None
    if row.get("path"):
        state, _ = _run_state(task.out_path)
        if state != row["state"]:
            return None
    return row


# ------------------------------------------------------------------------------ table
_FIRST = ["point", "key"]
_AFTER = ["state", "reason", "error", "ions", "ranged_ions", "pulses", "duration_s",
          "specimen_name", "coated", "laser_pj", "seed"]
_GROUPS = ["comp.", "ratio.", "mrp", "fda_mu.", "count."]
_LAST = ["v_min_v", "v_max_v", "path", "host", "pid", "finished", "config_sha", "point_fn"]
_JSON_ONLY = {"traceback", "warnings"}


def table_columns(rows: list[dict[str, Any]], params: list[str]) -> list[str]:
    seen: dict[str, None] = {}
    for r in rows:
        seen.update(dict.fromkeys(k for k in r if k not in _JSON_ONLY))
    cols = [c for c in _FIRST + params + _AFTER if c in seen or c in params]
    rest = [c for c in seen if c not in cols and c not in _LAST]
    for g in _GROUPS:
        cols += sorted(c for c in rest if c.startswith(g))
    cols += [c for c in rest if not any(c.startswith(g) for g in _GROUPS)]
    return cols + [c for c in _LAST if c in seen]


def _column_type(values: list[Any]) -> str:
    vals = [v for v in values if v is not None]
    if vals and all(isinstance(v, bool) for v in vals):
        return "bool"
    if vals and all(isinstance(v, int) and not isinstance(v, bool) for v in vals):
        return "int"
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in vals):
        return "float"
    return "str"


def write_table(rows: list[dict[str, Any]], out_dir: Path, params: list[str],
                stem: str = "results") -> tuple[Path, Path]:
    """The results table as CSV and Parquet (one row per point, point order)."""
    import csv

    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = sorted(rows, key=lambda r: r.get("point", 0))
    cols = table_columns(rows, params)
    arrays = []
    for c in cols:
        vals = [r.get(c) for r in rows]
        kind = _column_type(vals)
        if kind == "str":
            arrays.append(pa.array([None if v is None else str(v) for v in vals], pa.string()))
        else:
            typ = {"bool": pa.bool_(), "int": pa.int64(), "float": pa.float64()}[kind]
            arrays.append(pa.array([None if v is None else (float(v) if kind == "float" else v)
                                    for v in vals], typ))
    out_dir.mkdir(parents=True, exist_ok=True)
    pq_path, csv_path = out_dir / f"{stem}.parquet", out_dir / f"{stem}.csv"
    pq.write_table(pa.table(arrays, names=cols), pq_path.with_suffix(".parquet.tmp"))
    os.replace(pq_path.with_suffix(".parquet.tmp"), pq_path)
    tmp = csv_path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for r in rows:
            w.writerow(["" if r.get(c) is None else r.get(c) for c in cols])
    os.replace(tmp, csv_path)
    return csv_path, pq_path


def read_table(path: str | Path) -> list[dict[str, Any]]:
    """A results table (Parquet) back as a list of row dicts."""
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()


# ------------------------------------------------------------------------------ cluster
def worker_env() -> dict[str, str]:
    """Environment of every worker process: one thread per worker for numba, OpenMP and BLAS
    (the workers are the parallelism), and a shared numba cache so kernels compile once."""
    cache = os.environ.get("NUMBA_CACHE_DIR") or str(Path.cwd() / ".numba-cache")
    env = {"NUMBA_CACHE_DIR": cache, "MPLBACKEND": "Agg"}
    for var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                "MKL_NUM_THREADS"):
        env[var] = "1"
    return env


@contextlib.contextmanager
def connect(workers: int | None = None, scheduler: str | None = None,
            timeout_s: float = 30.0) -> Iterator[Any]:
    """A dask client: on ``scheduler`` (``tcp://HOST:PORT``) if given, else on a new
    LocalCluster of ``workers`` processes with one thread each. Closed on the way out."""
    from distributed import Client, LocalCluster

    if scheduler:
        try:
            client = Client(scheduler, timeout=timeout_s)
        except OSError as e:
            raise UserError(f"scheduler {scheduler}: cannot connect ({e})") from None
        try:
            try:
                client.wait_for_workers(1, timeout=timeout_s)
            except TimeoutError:
                raise UserError(f"scheduler {scheduler}: no workers after {timeout_s:g} s "
                                "(start some with `dask worker ADDRESS`)") from None
            yield client
        finally:
            client.close()
        return
    n = max(1, workers or os.cpu_count() or 1)
    quiet = logging.getLogger().getEffectiveLevel() > logging.DEBUG
    dlog = logging.getLogger("distributed")
    level = dlog.level
    if quiet:  # the scheduler runs in this process and logs every worker at INFO
        dlog.setLevel(logging.ERROR)
    # the scheduler's HTTP server (health, metrics) on a free loopback port, never 8787
    cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                           host="127.0.0.1", dashboard_address="127.0.0.1:0",
                           silence_logs=logging.ERROR if quiet else False, env=worker_env())
    client = Client(cluster)
    try:
        yield client
    finally:
        with contextlib.suppress(Exception):
            client.close()
        with contextlib.suppress(Exception):
            cluster.close()
        dlog.setLevel(level)


# ------------------------------------------------------------------------------ the campaign
@dataclass
class CampaignResult:
    out_dir: Path
    rows: list[dict[str, Any]]
    csv_path: Path | None = None
    parquet_path: Path | None = None
    plots: list[Path] = field(default_factory=list)
    ran: int = 0
    skipped: int = 0
    errors: int = 0
    interrupted: bool = False

    @property
    def finished(self) -> int:
        return sum(1 for r in self.rows if r.get("state") in FINISHED_STATES
                   and not r.get("error"))


class _Progress:
    """rich progress: points done of total, running now, errors, skipped."""

    def __init__(self, name: str, total: int, skipped: int, enabled: bool):
        self.running: set[int] = set()
        self.finished: set[int] = set()
        self.errors = 0
        self.skipped = skipped
        self.p = None
        if not enabled:
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.p = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                          MofNCompleteColumn(), TextColumn("{task.fields[status]}"),
                          TimeElapsedColumn(), TimeRemainingColumn())
        self.task = self.p.add_task(name, total=total, completed=skipped, status="")
        self.p.start()
        self._show()

    def _show(self) -> None:
        if self.p is not None:
            status = f"running {len(self.running)}  errors {self.errors}  skipped {self.skipped}"
            self.p.update(self.task, status=status)

    def event(self, ev: tuple[float, dict[str, Any]]) -> None:
        msg = ev[1]
        # events and results travel apart: a start may arrive after its point's result
        if msg.get("event") == "start" and int(msg["index"]) not in self.finished:
            self.running.add(int(msg["index"]))
            self._show()

    def done(self, index: int, error: bool) -> None:
        self.finished.add(index)
        self.running.discard(index)
        self.errors += int(error)
        if self.p is not None:
            self.p.advance(self.task)
        self._show()

    def close(self) -> None:
        if self.p is not None:
            self.p.stop()


def expected_ratios(specimen: SpecimenConfig) -> dict[str, float]:
    """Stoichiometric ratios of the specimen's matrix phase (the dashed lines of Fig 5)."""
    c = specimen.phase(specimen.matrix).composition
    g = {el: c.get(el, 0.0) for el in ("Li", "Ni", "Co", "Mn", "O")}
    out = {}
    if g["Li"] + g["Ni"] + g["Co"] + g["Mn"] > 0:
        out["Li/(Li+Ni+Co+Mn)"] = g["Li"] / (g["Li"] + g["Ni"] + g["Co"] + g["Mn"])
    if g["Ni"] + g["Co"] + g["Mn"] > 0:
        out["Ni/(Ni+Co+Mn)"] = g["Ni"] / (g["Ni"] + g["Co"] + g["Mn"])
    if sum(g.values()) > 0:
        out["O/(Li+O+Ni+Co+Mn)"] = g["O"] / sum(g.values())
    return out


def default_out_dir(sweep: Sweep) -> Path:
    return Path(sweep.out) if sweep.out else Path("runs") / "campaigns" / sweep.name


def run_campaign(
    sweep: Sweep | str | Path,
    out_dir: str | Path | None = None,
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    client: Any = None,
    point_fn: PointFn = simulate_and_analyze,
    progress: bool = False,
    plots: bool = True,
) -> CampaignResult:
    """Run every point of ``sweep`` that has no finished result yet; write the table and plots.

    ``client``: an existing ``distributed.Client`` (then ``workers``/``scheduler`` are unused).
    ``point_fn(task) -> dict`` runs one point on a worker (default: simulate and analyse); it
    must be picklable. A KeyboardInterrupt cancels the outstanding points, writes the table of
    what finished and is raised again once the cluster is closed.
    """
    if not isinstance(sweep, Sweep):
        sweep = load_sweep(sweep)
    out = Path(out_dir) if out_dir else default_out_dir(sweep)
    out.mkdir(parents=True, exist_ok=True)
    tasks = build_tasks(sweep, out)
    params = list(sweep.axes)
    fn_id = fn_name(point_fn)
    (out / "sweep.json").write_text(json.dumps(sweep.model_dump(mode="json"), indent=1))

    rows: dict[int, dict[str, Any]] = {}
    todo = []
    for t in tasks:
        row = recorded_row(t, fn_id)
        if row is None:
            todo.append(t)
        else:
            rows[t.index] = row
    result = CampaignResult(out, [], skipped=len(rows))
    bar = _Progress(sweep.name, len(tasks), len(rows), progress)
    try:
        if todo:
            cm = contextlib.nullcontext(client) if client is not None else connect(
                min(workers or os.cpu_count() or 1, len(todo)), scheduler)
            with cm as c:
                _submit_and_collect(c, todo, point_fn, fn_id, rows, bar, result)
    except KeyboardInterrupt:
        result.interrupted = True
    finally:
        bar.close()
        # a point whose worker recorded it but whose result had not reached us (Ctrl-C)
        result.rows = [rows.get(t.index) or read_row(t, fn_id) or
                       {**_base_row(t), "state": "pending"} for t in tasks]
        result.csv_path, result.parquet_path = write_table(result.rows, out, params)
        result.errors = sum(1 for r in result.rows if r.get("error"))
    if plots and not result.interrupted:
        result.plots = _draw(result, tasks, out, sweep.name)
    if result.interrupted:
        raise KeyboardInterrupt(f"campaign interrupted; table of finished points: "
                                f"{result.csv_path}")
    return result


def _submit_and_collect(client: Any, todo: list[PointTask], point_fn: PointFn, fn_id: str,
                        rows: dict[int, dict[str, Any]], bar: _Progress,
                        result: CampaignResult) -> None:
    from distributed import as_completed

    topic = f"apt-daq-campaign-{uuid.uuid4().hex[:8]}"
    client.subscribe_topic(topic, bar.event)
    futures = {}
    for t in todo:
        f = client.submit(execute_point, t, point_fn, fn_id, topic, pure=False,
                          key=f"{topic}-{t.index}")
        futures[f] = t
    try:
        for f in as_completed(futures):
            t = futures[f]
            try:
                row = f.result()
            except Exception as e:  # the worker died under it (KilledWorker) or similar
                row = {**_base_row(t), "state": "error", "error": f"{type(e).__name__}: {e}",
                       "config_sha": t.config_sha, "point_fn": fn_id}
            if not t.json_path.exists() or row.get("state") == "error":
                with contextlib.suppress(OSError):
                    _write_json(t.json_path, row)
            rows[t.index] = row
            result.ran += 1
            bar.done(t.index, bool(row.get("error")))
    except BaseException:
        client.cancel(list(futures), force=True)
        raise
    finally:
        with contextlib.suppress(Exception):
            client.unsubscribe_topic(topic)


def _draw(result: CampaignResult, tasks: list[PointTask], out: Path, name: str) -> list[Path]:
    from apt_daq.campaign_plots import calibration_figure, has_calibration_data

    if not tasks or not has_calibration_data(result.rows):
        return []
    expected = expected_ratios(tasks[0].run_file.specimen)
    path = out / "calibration.png"
    calibration_figure(result.rows, expected, path, title=name)
    return [path]
