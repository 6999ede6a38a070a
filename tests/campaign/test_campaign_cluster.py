"""Campaigns on real dask clusters: a LocalCluster of 2 worker processes, a separately started
``dask scheduler`` + ``dask worker`` on loopback, and a campaign killed (SIGKILL) or
interrupted (SIGINT) in the middle, then resumed. Points are tiny (small run files)."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from campaign_points import store_point

from apt_daq.campaign import (
    _run_state as run_state,
)
from apt_daq.campaign import (
    build_tasks,
    connect,
    fn_name,
    load_sweep,
    read_row,
    read_table,
    run_campaign,
)

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "configs" / "runs" / "nmc811-cr-5pj.yaml"
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.timeout(240)


def write_sweep(tmp_path: Path, n: int = 4) -> Path:
    p = tmp_path / "sweep.yaml"
    p.write_text(f"name: t\nbase: {BASE}\nions: 1000\n"
                 f"axes:\n  run.laser_pj: {{start: 5, stop: {5 * n}, step: 5}}\n")
    return p


@pytest.fixture(scope="module")
def client() -> Iterator[object]:
    with connect(workers=2) as c:
        yield c


def test_local_cluster_two_workers(client, tmp_path: Path):
    """Every point runs once, on both workers, each with one numba/OpenMP thread and the
    numba cache set; a failing point is recorded with its error and the others finish."""
    markers = tmp_path / "markers"
    markers.mkdir()
    fn = functools.partial(store_point, sleep_s=0.3, fail_index=2, marker_dir=str(markers))
    res = run_campaign(write_sweep(tmp_path, 6), tmp_path / "out", client=client, point_fn=fn)
    rows = {r["point"]: r for r in res.rows}
    assert len(rows) == 6 and res.ran == 6 and res.skipped == 0
    assert rows[2]["state"] == "error" and "injected failure at point 2" in rows[2]["error"]
    assert all(rows[i]["state"] == "done" and rows[i]["error"] is None for i in (0, 1, 3, 4, 5))
    assert res.errors == 1 and res.finished == 5
    assert len(list(markers.iterdir())) == 6          # each point started exactly once
    assert len({r["pid"] for r in res.rows}) == 2     # both workers took points
    for r in res.rows:
        if r["error"] is None:
            assert r["env_numba_threads"] == "1" and r["env_omp_threads"] == "1"
            assert r["env_numba_cache"]
    table = read_table(res.parquet_path)
    assert [r["run.laser_pj"] for r in table] == [5, 10, 15, 20, 25, 30]
    assert table[3]["ratio.O2+/O+"] == pytest.approx(10 / 20)
    assert res.plots and res.plots[0].exists()
    # a re-run skips the 5 finished points and tries the failed one again (it fails again)
    for f in markers.iterdir():
        f.unlink()
    res2 = run_campaign(write_sweep(tmp_path, 6), tmp_path / "out", client=client,
                        point_fn=fn)
    assert res2.skipped == 5 and res2.ran == 1 and res2.errors == 1
    assert [f.name.split(".")[0] for f in markers.iterdir()] == [rows[2]["key"]]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _proc(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen]:
    """A subprocess in its own process group, always torn down (TERM, then KILL)."""
    with log.open("wb") as out:
        p = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT,
                             start_new_session=True)
    try:
        yield p
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGTERM)
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=10)


def test_external_scheduler_on_loopback(tmp_path: Path):
    """The same sweep, unchanged, against `dask scheduler` + `dask worker` started apart."""
    port = _free_port()
    addr = f"tcp://127.0.0.1:{port}"
    # the scheduler unpickles the tasks too: both import the point function from their path
    env = {**os.environ, "NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
           "NUMBA_CACHE_DIR": os.environ["NUMBA_CACHE_DIR"],
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent),
                                         os.environ.get("PYTHONPATH", "")])}
    with _proc([str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port),
                "--dashboard-address", "127.0.0.1:0"], env, tmp_path / "scheduler.log"), \
         _proc([str(BIN / "dask"), "worker", addr, "--nworkers", "2", "--nthreads", "1",
                "--host", "127.0.0.1", "--dashboard-address", "127.0.0.1:0",
                "--death-timeout", "60"], env, tmp_path / "worker.log"):
        res = run_campaign(write_sweep(tmp_path, 3), tmp_path / "out", scheduler=addr,
                           point_fn=functools.partial(store_point, sleep_s=0.1))
    assert [r["state"] for r in res.rows] == ["done"] * 3
    assert all(r["env_numba_threads"] == "1" for r in res.rows)
    scheduler_log = (tmp_path / "scheduler.log").read_text()
    assert "Register worker" in scheduler_log          # the workers really were the external ones
    assert {r["host"] for r in res.rows} == {os.uname().nodename}


SCRIPT = textwrap.dedent("""
    import functools, signal, sys
    # a terminal's Ctrl-C reaches a process with the default SIGINT handling; a child of the
    # test process inherits whatever an earlier test left ignored or blocked: restore it
    signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT])
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.path.insert(0, {here!r})
    import campaign_points
    from apt_daq.campaign import run_campaign
    fn = functools.partial(campaign_points.store_point, sleep_s={sleep!r},
                           marker_dir={markers!r})
    if __name__ == "__main__":  # worker processes are spawned: they import this file
        try:
            run_campaign({sweep!r}, {out!r}, workers=2, point_fn=fn)
        except KeyboardInterrupt:
            print("INTERRUPTED", flush=True)
            sys.exit(130)
""")


def _start_campaign(tmp_path: Path, sleep_s: float) -> subprocess.Popen:
    script = tmp_path / "campaign.py"
    script.write_text(SCRIPT.format(here=str(Path(__file__).parent), sleep=sleep_s,
                                    markers=str(tmp_path / "markers"),
                                    sweep=str(write_sweep(tmp_path, 8)),
                                    out=str(tmp_path / "out")))
    (tmp_path / "markers").mkdir(exist_ok=True)
    return subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "NUMBA_CACHE_DIR": os.environ["NUMBA_CACHE_DIR"]})


def _wait_for_rows(out: Path, n: int, p: subprocess.Popen, timeout_s: float = 90) -> None:
    t_end = time.monotonic() + timeout_s
    while time.monotonic() < t_end:
        if len([f for f in out.glob("*.json") if f.name != "sweep.json"]) >= n:
            return
        assert p.poll() is None, p.stdout.read().decode()
        time.sleep(0.1)
    raise AssertionError(f"fewer than {n} points finished in {timeout_s} s")


def _group_gone(pgid: int, timeout_s: float = 20) -> bool:
    t_end = time.monotonic() + timeout_s
    while time.monotonic() < t_end:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False


def test_resume_after_kill(tmp_path: Path):
    """SIGKILL the whole campaign (client, scheduler and workers) mid-way; the re-run skips
    the finished points, re-runs the ones cut off (their run file said "running")."""
    p = _start_campaign(tmp_path, sleep_s=1.0)
    try:
        _wait_for_rows(tmp_path / "out", 2, p)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        p.wait(timeout=20)
    assert _group_gone(p.pid)
    out = tmp_path / "out"
    before = [json.loads(f.read_text()) for f in out.glob("*.json") if f.name != "sweep.json"]
    assert all(r["error"] is None for r in before), before
    finished = {r["key"] for r in before}
    cut = [f for f in out.glob("*.h5") if f.stem not in finished]
    assert 2 <= len(finished) < 8
    markers = tmp_path / "markers"
    for f in markers.iterdir():
        f.unlink()
    sweep = load_sweep(tmp_path / "sweep.yaml")
    fn = functools.partial(store_point, sleep_s=1.0, marker_dir=str(markers))
    why = {t.key: (read_row(t, fn_name(fn)) is not None, run_state(t.out_path))
           for t in build_tasks(sweep, out) if t.key in finished}
    res = run_campaign(sweep, out, workers=2, plots=False,
                       point_fn=functools.partial(store_point, sleep_s=1.0,
                                                  marker_dir=str(markers)))
    assert res.skipped == len(finished) and res.ran == 8 - len(finished), why
    assert [r["state"] for r in res.rows] == ["done"] * 8
    rerun = {f.name.split(".")[0] for f in markers.iterdir()}
    assert rerun.isdisjoint(finished) and len(rerun) == 8 - len(finished)
    assert {f.stem for f in cut} <= rerun              # cut-off runs ran again


def test_ctrl_c_cancels_cleanly(tmp_path: Path):
    """SIGINT to the whole process group (what a terminal's Ctrl-C does): the campaign stops
    within seconds, writes the table of what finished (the rest "pending"), leaves no worker
    process behind, and no worker prints a traceback."""
    # 8 points of 4 s on 2 workers: >= 16 s of work, so the Ctrl-C after the first row lands
    # mid-campaign even when the machine is slow to start the workers
    p = _start_campaign(tmp_path, sleep_s=4.0)
    try:
        _wait_for_rows(tmp_path / "out", 1, p)
        t0 = time.monotonic()
        os.killpg(p.pid, signal.SIGINT)
        out, _ = p.communicate(timeout=60)
        stop_s = time.monotonic() - t0
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
    assert p.returncode == 130, out.decode()
    assert b"INTERRUPTED" in out
    # the workers are in the group too: each died of the Ctrl-C with two tracebacks (~60
    # lines) while the campaign cancelled them anyway (an outside audit, Dec 6)
    assert b"Traceback" not in out and b"KeyboardInterrupt" not in out, out.decode()[-3000:]
    assert stop_s < 30
    assert _group_gone(p.pid)
    table = read_table(tmp_path / "out" / "results.parquet")
    states = [r["state"] for r in table]
    assert len(table) == 8 and "pending" in states and "done" in states


def test_real_simulated_points(client, tmp_path: Path):
    """Two small simulated runs (run engine + virtual LEAP + analysis) as dask tasks: each
    writes its run file with the state its row reports, and the table carries composition
    fractions that sum to 1 and the O2+/O+ field proxy. Re-running skips both; a point whose
    row was lost but whose run ended is analysed again, not simulated again."""
    sweep = tmp_path / "real.yaml"
    sweep.write_text(f"name: real\nbase: {BASE}\nions: 3000\n"
                     "axes:\n  run.laser_pj: [5, 20]\n")
    res = run_campaign(sweep, tmp_path / "out", client=client)
    assert res.errors == 0, [r.get("traceback") for r in res.rows]
    for r in res.rows:
        assert r["state"] in ("done", "failed")
        if r["state"] == "done":
            assert r["ions"] >= 3000
        from apt_daq.io.store import RunReader

        with RunReader(tmp_path / "out" / r["path"]) as rr:
            assert rr.meta["state"] == r["state"]
            assert rr.run_file.run.laser_pj == r["run.laser_pj"]
        comps = [v for k, v in r.items() if k.startswith("comp.") and not k.endswith(".err")
                 and v is not None]
        assert sum(comps) == pytest.approx(1.0, abs=1e-6)
        assert r["ratio.O2+/O+"] is None or r["ratio.O2+/O+"] >= 0
        assert r["duration_s"] > 0
    again = run_campaign(sweep, tmp_path / "out", client=client)
    assert again.skipped == 2 and again.ran == 0
    (tmp_path / "out" / f"{res.rows[0]['key']}.json").unlink()
    third = run_campaign(sweep, tmp_path / "out", client=client)
    assert third.ran == 1 and third.rows[0]["resimulated"] is False
    assert third.rows[0]["ions"] == res.rows[0]["ions"]
