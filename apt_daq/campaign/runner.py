"""The campaign: every point without a finished result on the cluster, with progress, then
the table and the calibration plot (:func:`run_campaign`)."""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import JsonValue

from apt_daq.campaign.cluster import connect
from apt_daq.campaign.points import FINISHED_STATES, _run_state, fn_name, simulate_and_analyze
from apt_daq.campaign.sweep import PointFn, PointTask, Row, Sweep, build_tasks, load_sweep
from apt_daq.campaign.table import write_table
from apt_daq.campaign.worker import _base_row, _write_json, execute_point, read_row, recorded_row
from apt_daq.config import SpecimenConfig
from apt_daq.io.store.lock import held

if TYPE_CHECKING:
    from distributed import Client


@dataclass
class CampaignResult:
    out_dir: Path
    rows: list[Row]
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

    def event(self, ev: tuple[float, dict[str, JsonValue]]) -> None:
        msg = ev[1]
        index = msg.get("index")
        # events and results travel apart: a start may arrive after its point's result
        if msg.get("event") == "start" and isinstance(index, int) and index not in self.finished:
            self.running.add(index)
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
    client: Client | None = None,
    point_fn: PointFn = simulate_and_analyze,
    progress: bool = False,
    plots: bool = True,
    overwrite: bool = False,
) -> CampaignResult:
    """Run every point of ``sweep`` that has no finished result yet; write the table and plots.

    ``client``: an existing ``distributed.Client`` (then ``workers``/``scheduler`` are unused).
    ``point_fn(task) -> dict`` runs one point on a worker (default: simulate and analyse); it
    must be picklable. A KeyboardInterrupt cancels the outstanding points, writes the table of
    what finished and is raised again once the cluster is closed.

    A finished run file in ``out_dir`` of another configuration than its point's (another
    sweep with the same axes, an edited base run) is replaced only with ``overwrite``;
    without, a :class:`~apt_daq.errors.UserError` names them before anything runs.
    """
    if not isinstance(sweep, Sweep):
        sweep = load_sweep(sweep)
    out = Path(out_dir) if out_dir else default_out_dir(sweep)
    if out.exists() and not out.is_dir():  # mkdir said only "File exists"
        from apt_daq.errors import UserError

        raise UserError(f"{out}: is a file, not a folder: -o names the campaign's folder")
    out.mkdir(parents=True, exist_ok=True)
    # one campaign per folder: two at once each ran every point (an audit: 12 ran twice)
    with held(out / "campaign", "another campaign is running in this folder", out):
        return _run_locked(sweep, out, workers, scheduler, client, point_fn, progress, plots,
                           overwrite)


def _run_locked(sweep: Sweep, out: Path, workers: int | None, scheduler: str | None,
                client: Client | None, point_fn: PointFn, progress: bool, plots: bool,
                overwrite: bool) -> CampaignResult:
    tasks = build_tasks(sweep, out)
    params = list(sweep.axes)
    fn_id = fn_name(point_fn)
    if not overwrite and fn_id == fn_name(simulate_and_analyze):
        _refuse_other_runs(tasks, out)
    (out / "sweep.json").write_text(json.dumps(sweep.model_dump(mode="json"), indent=1))

    rows: dict[int, Row] = {}
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


def _refuse_other_runs(tasks: list[PointTask], out: Path) -> None:
    """A UserError naming the finished run files of another configuration than their
    point's, which the campaign would replace (an audit saw a second sweep with the same axes
    replace a first one's finished runs without a word)."""
    from apt_daq.errors import UserError

    others = [t.out_path.name for t in tasks
              if (st := _run_state(t.out_path))[0] in FINISHED_STATES and st[1] != t.config_sha]
    if others:
        shown = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3
                                         else "")
        raise UserError(f"{out}: {len(others)} finished run(s) of another configuration would "
                        f"be replaced ({shown}); give another -o, or --overwrite to replace "
                        "them")


def _submit_and_collect(client: Client, todo: list[PointTask], point_fn: PointFn, fn_id: str,
                        rows: dict[int, Row], bar: _Progress,
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
