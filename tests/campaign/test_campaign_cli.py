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
    assert [r["state"] for r in read_table(out / "results.parquet")] == ["done"] * 3
    assert main(["campaign", str(p), "-o", str(out), "--dry-run", "--quiet"]) == 0
    assert "0 ran, 3 already finished" in " ".join(capsys.readouterr().out.split())
