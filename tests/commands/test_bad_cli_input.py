"""The bad-input audit of Dec 5 2026, judged from the outside: the files on disk after the
command, its exit code and its stderr (one ``error:`` line, no traceback).

- ``run --live PNG`` renamed the dashboard over any file it was given, the run's own output,
  its config or an unrelated run file included, with exit 0; a missing or unwritable place
  was only found after the whole acquisition.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUN = ROOT / "configs" / "runs" / "nmc811-cr-5pj.yaml"


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    return subprocess.run([sys.executable, "-m", "apt_daq.cli", *args], capture_output=True,
                          text=True, cwd=ROOT, env=env, timeout=timeout)


def one_error_line(proc: subprocess.CompletedProcess, *needles: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [s for s in proc.stderr.splitlines() if s.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    assert all(n in errors[0] for n in needles), errors[0]
    return errors[0]


def digest(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


# ------------------------------------------------------------------ run --live
@pytest.fixture
def victims(tmp_path: Path) -> dict[str, Path]:
    """Files a wrong ``--live`` must leave alone, byte for byte."""
    config = tmp_path / "run.yaml"
    config.write_text(RUN.read_text().replace("../", f"{RUN.parent.parent}/"))
    other = tmp_path / "other.h5"
    other.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(range(256)) * 8)
    notes = tmp_path / "notes.png"  # a .png name that holds no PNG image
    notes.write_text("my notes, not an image\n")
    return {"config": config, "other": other, "notes": notes}


@pytest.mark.parametrize("target", ["out", "config", "other", "notes", "folder"])
def test_live_never_replaces_a_file_that_is_not_its_dashboard(tmp_path, victims, target):
    out = tmp_path / "new.h5"
    live = {"out": out, "folder": tmp_path, **victims}[target]
    before = {k: digest(p) for k, p in victims.items()}
    r = cli("run", str(victims["config"]), "--ions", "200", "-o", str(out), "--quiet",
            "--live", str(live))
    one_error_line(r, "--live", str(live))
    assert {k: digest(p) for k, p in victims.items()} == before
    assert not out.exists()  # refused before the run: nothing acquired, nothing written


def test_live_redraws_an_earlier_dashboard_and_makes_its_folder(tmp_path, victims):
    live = tmp_path / "new" / "folder" / "live.png"
    for i in range(2):  # the second run redraws the first one's image
        r = cli("run", str(victims["config"]), "--ions", "200", "-o", str(tmp_path / f"{i}.h5"),
                "--quiet", "--live", str(live))
        assert r.returncode == 0, r.stderr
        assert live.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in live.parent.iterdir()] == ["live.png"]  # no temporary left


# ------------------------------------------------------------------ reproduce and SIGTERM
def _group_alive(pgid: int) -> list[int]:
    """The processes of a process group still alive (zombies are gone for this purpose)."""
    alive = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                alive.append(int(d.name))
    return alive


def test_sigterm_ends_a_reproduction_and_its_workers(tmp_path):
    """``reproduce`` ran on for minutes after SIGTERM: the pool waited for its workers'
    runs and started queued ones (41 GB written). Fig. 5's first stage runs several
    simulations on two worker processes; SIGTERM once they have started."""
    import signal
    import time

    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    proc = subprocess.Popen([sys.executable, "-m", "apt_daq.cli", "reproduce", "--figure", "5",
                             "--ions", "50000000", "--workers", "2", "-o", str(tmp_path / "r")],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # the pool's runs are under way once this is printed
            if line.startswith("simulating"):
                break
        time.sleep(8.0)  # the workers spawned, imported and simulating
        assert len(_group_alive(proc.pid)) >= 3  # the command and two workers
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err
    deadline = time.monotonic() + 10
    while _group_alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _group_alive(proc.pid) == []  # no worker goes on writing
    sidecars = list((tmp_path / "r" / "runs").glob("*.json"))
    assert sidecars == []  # no aborted run is cached as if it were done


# ------------------------------------------------------------------ arguments
@pytest.mark.parametrize("args, needle", [
    (["run", "x", "--ions", "-5"], "--ions: must be > 0, got -5"),
    (["run", "x", "--ions", str(2**64 + 1)], "--ions: must be < 2**64"),
    (["run", "x", "--seed", str(2**64)], "--seed: must be < 2**64"),
    (["run", "x", "--seed", "1" + "0" * 5000], "--seed: must be a whole number"),
    (["export"], "the following arguments are required"),
    (["reproduce", "--workers", "0"], "--workers: must be > 0"),
    (["no-such-command"], "invalid choice"),
])  # fmt: skip
def test_an_argument_error_is_one_line(args, needle):
    """argparse printed its usage block (4-7 lines) before the error; a 5000-digit seed
    was echoed whole."""
    r = cli(*args)
    line = one_error_line(r, needle, "--help")
    assert r.stderr.strip() == line and len(line) < 400


def test_a_file_named_like_an_emoji_code_is_named_as_given(tmp_path):
    r = cli("info", str(tmp_path / ":smile:.pos"))
    one_error_line(r, ":smile:.pos")


# ------------------------------------------------------------------ plot
@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> Path:
    from apt_daq.run import Session

    out = tmp_path_factory.mktemp("run") / "small.h5"
    Session.from_yaml(RUN, {"run.stop.ions": 3000}, out=out, handle_signals=False).run()
    return out


def test_plot_replaces_a_figure_only_with_overwrite(small_run, tmp_path):
    out = tmp_path / "plots"
    out.mkdir()
    mine = out / "spectrum.png"
    mine.write_bytes(b"my own figure")
    r = cli("plot", str(small_run), "--only", "spectrum", "-o", str(out))
    one_error_line(r, str(mine), "exists", "--overwrite")
    assert mine.read_bytes() == b"my own figure"
    r = cli("plot", str(small_run), "--only", "spectrum", "-o", str(out), "--overwrite")
    assert r.returncode == 0, r.stderr
    assert mine.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    one_error_line(cli("plot", str(small_run), "-o", str(mine)), "folder")


# ------------------------------------------------------------------ campaign --scheduler
@pytest.mark.parametrize("address", ["garbage", "tcp://host", "tcp://host:99999"])
def test_a_malformed_scheduler_address_is_one_line(address, tmp_path):
    r = cli("campaign", str(ROOT / "configs" / "campaigns" / "fracture-seeds.yaml"),
            "--dry-run", "--scheduler", address, "-o", str(tmp_path / "c"), timeout=120)
    one_error_line(r, address, "HOST:PORT")


def test_a_scheduler_that_is_no_dask_service_is_one_line(tmp_path):
    """An HTTP server where the scheduler should be: dask read "HTTP/1.1" as a frame
    length and numpy was asked for 3 EiB (a MemoryError traceback)."""
    import socket
    import threading

    srv = socket.create_server(("127.0.0.1", 0))
    port = srv.getsockname()[1]
    stop = threading.Event()

    def answer() -> None:
        srv.settimeout(0.5)
        while not stop.is_set():
            try:
                c, _ = srv.accept()
            except OSError:
                continue
            with c:
                c.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n" * 4)

    t = threading.Thread(target=answer, daemon=True)
    t.start()
    try:
        r = cli("campaign", str(ROOT / "configs" / "campaigns" / "fracture-seeds.yaml"),
                "--dry-run", "--scheduler", f"tcp://127.0.0.1:{port}", "-o", str(tmp_path / "c"),
                timeout=120)
    finally:
        stop.set()
        t.join(5)
        srv.close()
    one_error_line(r, f"tcp://127.0.0.1:{port}")


# ------------------------------------------------------------------ calibrate
def test_calibrate_a_fresh_simulated_run_with_its_defaults(tmp_path):
    """A fresh 20k-ion simulation of the shipped config could not be calibrated without
    arguments: its ion table lists minor ions (Cr, Ga, LiO+...) that such a run holds too
    few of to make a peak, and each was an error. The simulator's instrument (t0 0 ns,
    L 100 mm) is the truth the fit must find."""
    import json

    from apt_daq.run import Session

    run = tmp_path / "fresh.h5"
    Session.from_yaml(RUN, {"run.stop.ions": 20000}, out=run, handle_signals=False).run()
    r = cli("calibrate", str(run), "--json", "--no-store")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert abs(rep["t0_ns"]) < 0.5 and abs(rep["flight_path_mm"] / 100.0 - 1) < 1e-3, rep
    assert any("left out" in n for n in rep["calibration"]["notes"])
    named = cli("calibrate", str(run), "--elements", "Li,O,Ni,Co,Mn,Ga", "--no-store")
    one_error_line(named, "Ga", "explain no peak")  # a name the user gave must find a peak


@pytest.mark.parametrize("arg, value", [("--flight-path-mm", "0"), ("--flight-path-mm", "-5"),
                                        ("--flight-path-mm", "inf"), ("--t0-ns", "nan")])
def test_calibrate_refuses_a_given_value_that_is_no_length_or_time(arg, value, tmp_path):
    one_error_line(cli("calibrate", str(tmp_path / "x.h5"), arg, value), arg, value)


# ------------------------------------------------------------------ range --charges/--elements
@pytest.mark.parametrize("args, needles", [
    (["--charges", "4-1"], ["4-1", "reversed", "1-4"]),   # was: 'must be between 1 and 8'
    (["--charges", "1-1000000000000"], ["between 1 and 8"]),  # was expanded before the check
    (["--charges", "x"], ["expected e.g. 1-4"]),
    (["--elements", ","], ["no element named"]),             # was taken as "all elements"
    (["--elements", "Li,Xx"], ["Xx"]),
])
def test_range_refuses_charges_and_elements_it_cannot_use(small_run, args, needles):
    one_error_line(cli("range", str(small_run), *args, timeout=120), *needles)


def test_range_takes_spans_and_lists_of_charges_and_elements(tmp_path):
    from apt_daq.run import Session

    run = tmp_path / "r.h5"  # past the ramp-up: 3000 ions hold no clear peak
    Session.from_yaml(RUN, {"run.stop.ions": 30000}, out=run, handle_signals=False).run()
    r = cli("range", str(run), "--charges", "2-2, 1", "--elements", " Li , O",
            "-o", str(tmp_path / "r.rrng"))
    assert r.returncode == 0, r.stderr
    text = (tmp_path / "r.rrng").read_text()
    assert "[Ions]\nNumber=2\nIon1=Li\nIon2=O\n" in text, text
