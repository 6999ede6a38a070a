"""Point functions for the campaign tests: small and deterministic. Tasks are pickled by
reference, so the scheduler and workers import this module: LocalCluster workers inherit this
process's ``sys.path``; separately started ones get this folder in ``PYTHONPATH``."""

from __future__ import annotations

import os
import time
from typing import Any

from apt_daq.campaign import PointTask, flatten_report


def fake_report(laser_pj: float) -> dict[str, Any]:
    """An analyze_run-shaped report whose numbers follow from the laser energy: O2+/O+ falls
    and Li/(Li+Ni+Co+Mn) stays at 0.5 as in the paper's Fig 5."""
    o2_o = 10.0 / laser_pj
    return {
        "ions": 1000, "ranged_ions": 950,
        "composition": {"Li": {"fraction": 0.25, "error": 0.01},
                        "Ni": {"fraction": 0.20, "error": 0.01},
                        "Co": {"fraction": 0.025, "error": 0.004},
                        "Mn": {"fraction": 0.025, "error": 0.004},
                        "O": {"fraction": 0.5, "error": 0.015}},
        "ion_counts": {"O+": 100, "O2+": round(100 * o2_o), "Li+": 250},
        "ratios": {"O2+/O+": o2_o},
        "ratio_errors": {"O2+/O+": 0.1 * o2_o},
        "mrp": [{"peak": "NiO+", "mass": 73.9, "fwhm": 0.09, "fw10m": 0.3,
                 "mrp50": 800.0 + laser_pj, "mrp10": 250.0},
                {"peak": "Li+", "mass": 7.0, "fwhm": 0.01, "fw10m": 0.03,
                 "mrp50": 700.0, "mrp10": 230.0}],
        "fda": {"Li+": {"mu": 0.5, "chi2": 3.0, "blocks": 10}},
    }


def store_point(task: PointTask, *, sleep_s: float = 0.0, fail_index: int = -1,
                marker_dir: str | None = None) -> dict[str, Any]:
    """Write a small run file that says "running" for ``sleep_s`` and then "done"; raise at
    point ``fail_index``; report the worker's environment."""
    from apt_daq.io.store import RunWriter

    if marker_dir:  # one file per start: how often each point really ran
        with open(os.path.join(marker_dir, f"{task.key}.{os.getpid()}.{time.time_ns()}"),
                  "w"):
            pass
    if task.index == fail_index:
        raise RuntimeError(f"injected failure at point {task.index}")
    meta = {"config": task.run_file.model_dump(mode="json")}
    with RunWriter(task.out_path, meta, overwrite=True) as w:
        if sleep_s:
            time.sleep(sleep_s)
        w.set_meta("counters", {"ions": 1000, "pulses": 200000})
        w.finish("done")
    row = {"state": "done", "reason": "test", "ions": 1000, "pulses": 200000,
           "path": task.out_path.name,
           "env_numba_threads": os.environ.get("NUMBA_NUM_THREADS"),
           "env_omp_threads": os.environ.get("OMP_NUM_THREADS"),
           "env_numba_cache": os.environ.get("NUMBA_CACHE_DIR")}
    report = fake_report(task.run_file.run.laser_pj or 5.0)
    metrics = flatten_report(report)
    metrics.pop("ions")
    return {**row, **metrics}
