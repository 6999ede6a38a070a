"""Point functions: what a worker runs for one point (:func:`simulate_and_analyze`, the
benchmark's :func:`synthetic_point`), the table columns of a report, and their stable names."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from apt_daq.campaign.sweep import PointTask, Row, config_sha
from apt_daq.config import RunFile

#: Run states after which a point counts as finished (a fracture is a result, not an error).
FINISHED_STATES = ("done", "failed")


def flatten_report(report: Mapping[str, Any]) -> Row:
    """The table columns of an ``analyze_run`` report: ``comp.El`` (+ ``.err``),
    ``ratio.NAME`` (+ ``.err``), ``count.ION``, ``mrp50``/``mrp10`` (the most counted peak,
    named in ``mrp_peak``) and ``mrp50.PEAK``/``mrp10.PEAK``, ``fda_mu.ION``."""
    row: dict[str, object] = {}
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
                        row["mrp_peak"] = pk.get("peak")  # which peak mrp50/mrp10 measure
    elif isinstance(mrp, dict):
        for k, v in mrp.items():
            if isinstance(v, int | float) or v is None:
                row[f"mrp.{k}"] = v
    elif mrp is not None:
        row["mrp"] = mrp
    for sp, v in (report.get("fda") or {}).items():
        row[f"fda_mu.{sp}"] = v.get("mu") if isinstance(v, dict) else v
    return {k: _scalar(v) for k, v in row.items()}


#: what a table cell holds
Scalar = bool | int | float | str | None


def _scalar(v: object) -> Scalar:
    item = getattr(v, "item", None)
    if callable(item):  # a numpy scalar
        v = item()
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


def simulate_and_analyze(task: PointTask) -> Row:
    """The default point: the run engine on the point's run file, then the analysis.

    A run file that already ended by itself with the same configuration (a campaign killed
    after the run but before its result was recorded) is analysed again, not re-simulated.
    """
    from apt_daq.run import Session

    state, sha = _run_state(task.out_path)
    row: Row
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
        from apt_daq.analysis.report import analyze_run, burst_share, ramp_up_share

        metrics = flatten_report(analyze_run(task.out_path))
        metrics.pop("ions", None)
        row.update(metrics)
        share = ramp_up_share(task.out_path, per="ions")
        # the share of its ions detected before the rate first reached half its target: a
        # point whose ions are mostly the ramp-up's measures the ramp-up; the plot and the
        # CLI say so
        row["ramp_up_share"] = None if share is None else round(share, 4)
        burst = burst_share(task.out_path)  # ions of blocks far above the target rate
        row["burst_share"] = None if burst is None else round(burst, 4)
    return row


def synthetic_point(task: PointTask, *, work: int = 40, size: int = 100_000) -> Row:
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


def fn_name(fn: Callable[..., object]) -> str:
    """A stable name of a point function (a partial includes its keywords)."""
    if isinstance(fn, functools.partial):
        kw = ",".join(f"{k}={v!r}" for k, v in sorted(fn.keywords.items()))
        return f"{fn_name(fn.func)}({kw})"
    module = getattr(fn, "__module__", "?")
    qualname = getattr(fn, "__qualname__", repr(fn))
    if module == __name__ and qualname in _PUBLIC:  # by the name rows recorded before the
        module = "apt_daq.campaign"                 # package split carry, so they still match
    return f"{module}.{qualname}"


#: the point functions of this module, named as exported by ``apt_daq.campaign``
_PUBLIC = ("simulate_and_analyze", "synthetic_point")
