"""`apt-daq campaign`: exit codes and messages (a bad sweep file is one line and exit 2)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from apt_daq.campaign import connect, read_table
from apt_daq.cli import main
from apt_daq.errors import UserError

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "configs" / "runs" / "nmc811-cr-5pj.yaml"


def test_bad_sweep_is_one_line_exit_2(tmp_path: Path, capsys):
    p = tmp_path / "bad.yaml"
    p.write_text(f"name: b\nbase: {BASE}\naxes:\n  run.laser_pj: [5, -1]\n")
    assert main(["campaign", str(p), "-o", str(tmp_path / "o"), "--quiet"]) == 2
    err = " ".join(capsys.readouterr().err.split())  # rich wraps long lines
    assert "point 1 {'run.laser_pj': -1}" in err and "must be > 0" in err
    p.write_text("name: b\nbase: x.yaml\nmode: diagonal\n")
    assert main(["campaign", str(p), "--quiet"]) == 2
    assert "bad.yaml:3 mode: must be one of" in " ".join(capsys.readouterr().err.split())
    with pytest.raises(SystemExit) as e:  # an argument error: argparse's one line, exit 2
        main(["campaign", str(p), "--workers", "0"])
    assert e.value.code == 2


def test_unreachable_scheduler_is_a_user_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again at once: nothing listens there
    with pytest.raises(UserError, match=f"scheduler tcp://127.0.0.1:{port}: cannot connect"):
        with connect(scheduler=f"tcp://127.0.0.1:{port}", timeout_s=2):
            pass


@pytest.mark.timeout(180)
def test_dry_run_then_resume(tmp_path: Path, capsys):
    """--dry-run validates every point and runs the synthetic load on a 1-worker cluster; the
    second call finds every point finished and starts no cluster at all."""
    p = tmp_path / "s.yaml"
    p.write_text(f"name: s\nbase: {BASE}\naxes:\n  run.seed: {{start: 1, stop: 3, step: 1}}\n")
    out = tmp_path / "o"
    assert main(["campaign", str(p), "-o", str(out), "--workers", "1", "--dry-run",
                 "--quiet"]) == 0
    said = " ".join(capsys.readouterr().out.split())
    assert "3 ran, 0 already finished, 3 finished, 0 with errors" in said
    # its synthetic table goes to OUT/dry-run: it once replaced a real campaign's rows and table
    assert not (out / "results.parquet").exists()
    assert [r["state"] for r in read_table(out / "dry-run" / "results.parquet")] == ["done"] * 3
    assert main(["campaign", str(p), "-o", str(out), "--dry-run", "--quiet"]) == 0
    assert "0 ran, 3 already finished" in " ".join(capsys.readouterr().out.split())


# an outside audit's sweep files (Dec 3 2026): each crashed with a traceback or ran on for
# minutes and gigabytes; now one line naming the file, exit 2, at once
SWEEPS = {
    "a self-referencing alias": ("axes:\n  run.laser_pj: &a [5, *a]\n", "refers to itself"),
    "billion laughs": ("x: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n"
                       + "".join(f"x{i}: &a{i} [{', '.join(['*a' if i == 0 else f'*a{i - 1}'] * 10)}]\n"
                                 for i in range(8)) + "axes:\n  run.seed: [1]\n",
                       "more than 100000 values"),
    "an axis into a value": ("axes:\n  run.laser_pj.x: [5]\n",
                             "run.laser_pj is a value (5.0), not a section"),
    "a range to inf": ("axes:\n  run.laser_pj: {start: 0, stop: .inf, step: 1}\n",
                       "must be finite numbers"),
    "10^8 values": ("axes:\n  run.seed: {start: 0, stop: 1, num: 100000000}\n",
                    "more than the 10000 points"),
    "a product of 10^6": ("axes:\n  run.seed: {start: 1, stop: 1000, step: 1}\n"
                          "  run.laser_pj: {start: 1, stop: 10, num: 1000}\n",
                          "1e+06 points (1000 x 1000)"),
    "the same point twice": ("axes:\n  run.laser_pj: [20, 20]\n", "points 0 and 1 are the same"),
    "a name with folders": ("axes:\n  run.seed: [1]\n", "name: Value error, a plain name"),
}


@pytest.mark.parametrize("what", list(SWEEPS))
def test_a_bad_sweep_of_the_audit_is_one_line(tmp_path: Path, capsys, what: str):
    body, says = SWEEPS[what]
    name = "../../x" if what == "a name with folders" else "b"
    p = tmp_path / "bad.yaml"
    p.write_text(f"name: {name}\nbase: {BASE}\n{body}")
    assert main(["campaign", str(p), "-o", str(tmp_path / "o"), "--dry-run", "--quiet"]) == 2
    out = capsys.readouterr()
    err = " ".join(out.err.split())
    assert says in err and "Traceback" not in out.err + out.out, err
    assert len(out.err.strip().splitlines()) <= 2, out.err  # rich may wrap the one line


@pytest.mark.timeout(300)
def test_another_sweeps_finished_runs_are_not_replaced(tmp_path: Path, capsys):
    """A sweep with the same axes as the one whose finished runs are in the folder, but another
    base setting: the points' file names are the same, and the runs were replaced without a
    word (sha256 changed, exit 0). Now: one line naming them, exit 2, the files as they were;
    --overwrite replaces them."""
    import hashlib

    def sweep(seed: int) -> Path:
        p = tmp_path / f"s{seed}.yaml"
        p.write_text(f"name: s\nbase: {BASE}\nions: 2000\nset:\n  run.seed: {seed}\n"
                     "axes:\n  run.laser_pj: [5]\n")
        return p

    out = tmp_path / "o"
    assert main(["campaign", str(sweep(1)), "-o", str(out), "--workers", "1", "--quiet",
                 "--no-plots"]) == 0
    (run,) = out.glob("*.h5")
    before = hashlib.sha256(run.read_bytes()).hexdigest()
    capsys.readouterr()
    assert main(["campaign", str(sweep(2)), "-o", str(out), "--workers", "1", "--quiet",
                 "--no-plots"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"1 finished run(s) of another configuration would be replaced ({run.name})" in err
    assert hashlib.sha256(run.read_bytes()).hexdigest() == before
    assert main(["campaign", str(sweep(2)), "-o", str(out), "--workers", "1", "--quiet",
                 "--no-plots", "--overwrite"]) == 0
    assert hashlib.sha256(run.read_bytes()).hexdigest() != before


def test_ions_wins_over_set_and_clashes_with_an_axis(tmp_path: Path, capsys):
    """``--ions 5000`` with ``set: {run.stop.ions: 100000}`` ran 104 592 ions into a folder
    named ``-5000ions``; now --ions sets every point's run.stop.ions, and an axis of it is a
    clash named in one line."""
    from apt_daq.campaign import build_tasks, load_sweep

    p = tmp_path / "s.yaml"
    p.write_text(f"name: s\nbase: {BASE}\nset:\n  run.stop.ions: 100000\n"
                 "axes:\n  run.laser_pj: [5]\n")
    sweep = load_sweep(p).model_copy(update={"ions": 5000})
    (task,) = build_tasks(sweep, tmp_path / "o")
    assert task.run_file.run.stop.ions == 5000
    p.write_text(f"name: s\nbase: {BASE}\naxes:\n  run.stop.ions: [1000, 2000]\n")
    assert main(["campaign", str(p), "--ions", "5000", "-o", str(tmp_path / "o2"),
                 "--dry-run", "--quiet"]) == 2
    assert "and the axis run.stop.ions: give one" in " ".join(capsys.readouterr().err.split())


@pytest.mark.timeout(240)
def test_a_points_logged_warnings_go_into_its_row_not_the_terminal(tmp_path: Path, capfd):
    """A reference peak that names no range was replaced in silence (an outside audit set
    ``analysis.reference_peak: Zr+`` on an axis: exit 0, nothing said); a point's logged
    warnings reached the terminal of the campaign, naming no point, 18 times in 24 points;
    docs/campaigns.md keeps them in the point's JSON. Judged from the process's own stderr
    (the worker processes' too: they share the file descriptor) and the row on disk."""
    import json

    p = tmp_path / "s.yaml"
    p.write_text(f"name: s\nbase: {BASE}\nions: 3000\n"
                 "axes:\n  analysis.reference_peak: [Zr+]\n")
    out = tmp_path / "o"
    capfd.readouterr()
    assert main(["campaign", str(p), "-o", str(out), "--workers", "1", "--quiet"]) == 0
    said = capfd.readouterr()
    assert "names no range" not in said.err + said.out
    rows = [json.loads(f.read_text()) for f in out.glob("*.json") if f.name != "sweep.json"]
    assert len(rows) == 1 and rows[0]["error"] is None, rows
    warned = [w for w in rows[0].get("warnings", []) if "reference_peak Zr+ names no range" in w]
    assert len(warned) == 1, rows[0].get("warnings")
    assert "the corrections are fitted on" in warned[0]


def test_one_campaign_at_a_time_in_a_folder(tmp_path: Path, capsys):
    """Two campaigns on the same -o both ran every point (an outside audit: 12 points
    simulated twice, both exit 0). While one holds the folder, the other is one line, exit 2,
    naming the holder; once it is gone the folder is free."""
    import os

    from apt_daq.io.store.lock import held

    p = tmp_path / "s.yaml"
    p.write_text(f"name: s\nbase: {BASE}\nions: 2000\naxes:\n  run.seed: [1]\n")
    out = tmp_path / "o"
    out.mkdir()
    with held(out / "campaign", "another campaign is running in this folder", out):
        capsys.readouterr()
        assert main(["campaign", str(p), "-o", str(out), "--workers", "1", "--quiet"]) == 2
        err = " ".join(capsys.readouterr().err.split())
        assert f"{out}: another campaign is running in this folder (pid {os.getpid()})" in err
        assert not list(out.glob("*.h5"))
    assert main(["campaign", str(p), "-o", str(out), "--workers", "1", "--quiet"]) == 0


def test_an_out_folder_that_is_a_file_is_named(tmp_path: Path, capsys):
    p = tmp_path / "s.yaml"
    p.write_text(f"name: s\nbase: {BASE}\nions: 2000\n")
    afile = tmp_path / "afile"
    afile.write_text("keep me")
    capsys.readouterr()
    assert main(["campaign", str(p), "-o", str(afile), "--quiet"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"{afile}: is a file, not a folder" in err, err  # was "afile: File exists"
    assert afile.read_text() == "keep me"
