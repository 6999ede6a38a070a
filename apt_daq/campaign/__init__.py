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

One concept per module, every name importable from here as before: the sweep model
(:mod:`~apt_daq.campaign.sweep`), the point functions (:mod:`~apt_daq.campaign.points`), one
point on a worker (:mod:`~apt_daq.campaign.worker`), the results table
(:mod:`~apt_daq.campaign.table`), the cluster (:mod:`~apt_daq.campaign.cluster`) and the
campaign itself (:mod:`~apt_daq.campaign.runner`).
"""

from __future__ import annotations

from apt_daq.campaign.cluster import connect, worker_env
from apt_daq.campaign.points import (
    FINISHED_STATES,
    _run_state,
    flatten_report,
    fn_name,
    simulate_and_analyze,
    synthetic_point,
)
from apt_daq.campaign.runner import (
    CampaignResult,
    _Progress,
    default_out_dir,
    expected_ratios,
    run_campaign,
)
from apt_daq.campaign.sweep import (
    Point,
    PointFn,
    PointTask,
    RangeAxis,
    Sweep,
    ValuesAxis,
    build_tasks,
    config_sha,
    load_sweep,
)
from apt_daq.campaign.table import read_table, table_columns, write_table
from apt_daq.campaign.worker import execute_point, read_row, recorded_row

__all__ = [
    "FINISHED_STATES", "CampaignResult", "Point", "PointFn", "PointTask", "RangeAxis", "Sweep",
    "ValuesAxis", "_Progress", "_run_state", "build_tasks", "config_sha", "connect", "default_out_dir",
    "execute_point", "expected_ratios", "flatten_report", "fn_name", "load_sweep", "read_row",
    "read_table", "recorded_row", "run_campaign", "simulate_and_analyze", "synthetic_point",
    "table_columns", "worker_env", "write_table",
]
