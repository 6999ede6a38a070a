"""Campaign throughput: a 16-point sweep on a LocalCluster of 2 workers against 1 worker.

Every point is the same CPU-bound, single-threaded work (:func:`apt_daq.campaign.
synthetic_point`: a fixed number of sorts), so the ratio measures what the campaign machinery
(submission, per-point JSON, progress events, the table) lets through of the ideal 2x. Cluster
start-up is outside the timing (a warm-up sweep runs first on each cluster); the table and JSON
writes are inside it. Beside it, the same points on a plain 2-process pool against one process:
the parallelism the machine had to give at that moment (on a shared machine it can be far
below 2, and then so is the campaign's).
"""

from __future__ import annotations

import functools
import tempfile
import time
from pathlib import Path

from apt_daq.bench import Result, result
from apt_daq.shipped import configs_dir

POINTS = 16


def _sweep(folder: Path, n: int) -> Path:
    p = folder / f"bench-{n}.yaml"
    p.write_text(
        f"name: bench\nbase: {configs_dir() / 'runs' / 'nmc811-cr-5pj.yaml'}\n"
        f"axes:\n  run.seed: {{start: 1, stop: {n}, step: 1}}\n"
    )
    return p


def _one(client: object, fn: object, folder: Path, tag: str) -> float:
    from apt_daq.campaign import run_campaign

    t0 = time.perf_counter()
    res = run_campaign(_sweep(folder, POINTS), folder / tag, client=client, point_fn=fn,
                       plots=False)
    dt = time.perf_counter() - t0
    assert res.ran == POINTS and res.errors == 0
    return dt


def run(quick: bool = False) -> list[Result]:
    from apt_daq.campaign import connect, run_campaign, synthetic_point

    work, repeat = (15, 1) if quick else (60, 2)
    fn = functools.partial(synthetic_point, work=work)
    t1 = t2 = float("inf")
    with tempfile.TemporaryDirectory(prefix="apt-daq-bench-campaign-") as d, \
            connect(workers=1) as c1, connect(workers=2) as c2:
        folder = Path(d)
        for n, c in ((1, c1), (2, c2)):  # warm-up: imports and first tasks on every worker
            run_campaign(_sweep(folder, n), folder / f"warm-{n}", client=c, point_fn=fn,
                         plots=False)
        for i in range(repeat):  # interleaved, so a change in machine load hits both
            t1 = min(t1, _one(c1, fn, folder, f"w1-{i}"))
            t2 = min(t2, _one(c2, fn, folder, f"w2-{i}"))
    h1, h2 = _headroom(work)
    return [
        result(f"campaign {POINTS} points, 2 workers vs 1", POINTS / t2, "points/s",
               POINTS / t1, note=f"{t2:.2f} s vs {t1:.2f} s; ratio = speed-up, "
               "target >= 1.7 on 2 idle cores"),
        result(f"same {POINTS} points, 2 plain processes vs 1 (machine headroom)",
               POINTS / h2, "points/s", POINTS / h1,
               note="multiprocessing.Pool, no dask: the speed-up the machine allowed now"),
    ]


def _bare_point(i: int, work: int) -> float:
    from apt_daq.campaign import PointTask, synthetic_point

    task = PointTask(i, "", {}, None, Path(), "")  # type: ignore[arg-type]
    return float(synthetic_point(task, work=work)["synthetic_median"])


def _headroom(work: int) -> tuple[float, float]:
    """The same points without dask: in this process, then on a pool of 2 processes."""
    import multiprocessing as mp

    fn = functools.partial(_bare_point, work=work)
    t0 = time.perf_counter()
    for i in range(POINTS):
        fn(i)
    t_serial = time.perf_counter() - t0
    with mp.get_context("spawn").Pool(2) as pool:
        pool.map(fn, range(2))  # start-up and imports outside the timing
        t0 = time.perf_counter()
        pool.map(fn, range(POINTS), chunksize=1)
        t_pool = time.perf_counter() - t0
    return t_serial, t_pool
