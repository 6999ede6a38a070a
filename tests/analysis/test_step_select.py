"""``analyze --step N|ENERGY`` splits a scheduled run by step (judged against the hits' own
laser energy, which the pulser stamps on every record), and a run that is mostly ramp-up is
flagged."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from apt_daq.cli import main
from apt_daq.io.store import RunReader
from apt_daq.run import Session

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def scheduled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("step") / "s.h5"
    res = Session.from_yaml(ROOT / "configs/runs/nmc811-cr-5-20pj.yaml", {
        "run.schedule": [{"laser_pj": 5.0, "ions": 15000}, {"laser_pj": 10.0, "ions": 15000}],
        "run.stop.ions": 40000}, out=out, handle_signals=False).run()
    assert res.state.name == "DONE", res.reason
    return out


@pytest.mark.parametrize(("step", "pj"), [("0", 5.0), ("1", 10.0), ("10pJ", 10.0)])
def test_step_holds_exactly_that_steps_hits(scheduled: Path, capsys, step: str, pj: float):
    assert main(["analyze", str(scheduled), "--step", step, "--json", "--no-store",
                 "--roi", "none"]) == 0
    s = json.loads(capsys.readouterr().out)
    with RunReader(scheduled) as r:
        hits = r.read("hits")
    expected = int(np.count_nonzero(np.isclose(hits["laser_pj"], pj)))
    assert s["ions"] == expected  # the step's hits (no ROI), by the energy stamped on each
    assert f"{pj:g} pJ" in s["step"]


def test_unknown_step_is_one_line_exit_2(scheduled: Path, capsys):
    assert main(["analyze", str(scheduled), "--step", "50pJ", "--no-store"]) == 2
    err = capsys.readouterr().err
    assert "no step at 50 pJ" in err and "Traceback" not in err


def test_a_mostly_ramp_up_run_is_flagged(tmp_path: Path, capsys):
    out = tmp_path / "short.h5"
    Session.from_yaml(ROOT / "configs/runs/nmc811-cr-5pj.yaml", {"run.stop.ions": 3000},
                      out=out, handle_signals=False).run()
    assert main(["analyze", str(out), "--json", "--no-store", "--roi", "none"]) == 0
    assert "ramp-up" in capsys.readouterr().err
