"""One point on a worker: run its point function, record its row beside its run file (never
raising for the point's own errors), and read a recorded row back on a re-run."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
import traceback
import warnings
from collections.abc import Iterator
from pathlib import Path

from pydantic import JsonValue

from apt_daq.campaign.points import FINISHED_STATES, _run_state, _scalar
from apt_daq.campaign.sweep import PointFn, PointTask, Row

log = logging.getLogger(__name__)


def _base_row(task: PointTask) -> Row:
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


def _announce(topic: str | None, msg: dict[str, JsonValue]) -> None:
    if not topic:
        return
    try:
        from distributed import get_worker

        get_worker().log_event(topic, msg)
    except (ImportError, ValueError):  # not inside a dask worker
        pass


def _write_json(path: Path, row: Row) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps(row, indent=1, default=str))
        os.replace(tmp, path)  # atomic: a kill leaves the old row or the new one, never half
    except OSError as e:  # a full disk: no empty temporary file left, and the file named
        tmp.unlink(missing_ok=True)
        raise OSError(e.errno, f"{path}: cannot write the point's row ({e.strerror or e})"
                      ) from None


class _Keep(logging.Handler):
    """Keeps the WARNING and worse records of the loggers that reach the root."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.name}: {record.getMessage()}")


@contextlib.contextmanager
def _logged() -> Iterator[list[str]]:
    """The point's logged warnings (``laser sim: HV supply sim reports a trip``), for its
    row: they reached the terminal of whoever started the worker, 18 times in a 24-point
    campaign and naming no point. A LocalCluster worker runs one point at a time; on a
    worker with several threads a record of another point's thread lands in this one's."""
    root = logging.getLogger()
    keep = _Keep()

    def withhold(record: logging.LogRecord) -> bool:  # the root's other handlers: nothing
        return False

    others = list(root.handlers)
    for h in others:
        h.addFilter(withhold)
    root.addHandler(keep)  # with a handler, logging's last resort (stderr) stays quiet
    try:
        yield keep.lines
    finally:
        root.removeHandler(keep)
        for h in others:
            h.removeFilter(withhold)


def execute_point(task: PointTask, point_fn: PointFn, fn_id: str,
                  topic: str | None = None) -> Row:
    """Run one point and record its row beside its run file. Never raises for the point's
    own errors: they go into the row's ``error`` (the other points go on)."""
    _announce(topic, {"event": "start", "index": task.index})
    t0 = time.perf_counter()
    row = _base_row(task)
    # warnings go into the row (the JSON), not onto the terminal of whoever started a worker
    with warnings.catch_warnings(record=True) as caught, _logged() as logged:
        warnings.simplefilter("default")
        try:
            row.update(point_fn(task))
            row.setdefault("state", "done")
            row.setdefault("error", None)
        except Exception as e:
            row.update(state="error", error=f"{type(e).__name__}: {e}",
                       traceback=traceback.format_exc(limit=20))
    warned = sorted({f"{w.category.__name__}: {w.message}" for w in caught})
    warned += [m for m in dict.fromkeys(logged) if m not in warned]  # in order, once each
    if warned:
        row["warnings"] = [m for m in warned]  # list[str] is not a list of JSON values
    row["duration_s"] = round(time.perf_counter() - t0, 4)
    row.update(config_sha=task.config_sha, point_fn=fn_id, host=os.uname().nodename,
               pid=os.getpid(), finished=time.strftime("%Y-%m-%dT%H:%M:%S"))
    try:
        _write_json(task.json_path, row)
    except OSError as e:  # no shared file system: the client writes it
        log.warning("could not write %s: %s", task.json_path, e)
    return row


def read_row(task: PointTask, fn_id: str) -> Row | None:
    """The JSON row beside a point's run file if it belongs to this configuration and point
    function (whatever its state), else None."""
    try:
        row = json.loads(task.json_path.read_text())
    except (OSError, ValueError):
        return None
    if row.get("config_sha") != task.config_sha or row.get("point_fn") != fn_id:
        return None
    return row


def recorded_row(task: PointTask, fn_id: str) -> Row | None:
    """The recorded row of a finished point, or None if the point must (re)run."""
    row = read_row(task, fn_id)
    if row is None or row.get("error") or row.get("state") not in FINISHED_STATES:
        return None
    if row.get("path"):
        state, _ = _run_state(task.out_path)
        if state != row["state"]:
            return None
    return row
