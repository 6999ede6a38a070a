"""A campaign point that is mostly ramp-up is said to be so: in its row, on the calibration
plot and on the terminal (issue 19: "a 5000-ion campaign point is pure ramp-up and its plot
shows a trend with no warning").

The ramp-up share is read from the run's own /log (the detection rate of every readout block
as the engine recorded it), so the judgement rests on what the simulated instrument did, not on
a count the campaign makes up."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from campaign_points import fake_report

from apt_daq.campaign import build_tasks, flatten_report, load_sweep, simulate_and_analyze
from apt_daq.campaign_plots import calibration_figure, mostly_ramp_up, ramp_up_warning
from apt_daq.io.store import RunReader

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "configs" / "runs" / "nmc811-cr-5pj.yaml"


@pytest.mark.timeout(600)
def test_short_point_is_flagged_and_long_point_is_not(tmp_path: Path):
    sweep = tmp_path / "s.yaml"
    sweep.write_text(f"name: s\nbase: {BASE}\nions: 5000\naxes:\n  run.seed: [1]\n")
    (short,) = build_tasks(load_sweep(sweep), tmp_path / "short")
    row = simulate_and_analyze(short)
    assert row["ramp_up_share"] is not None and 0.0 <= row["ramp_up_share"] <= 1.0
    assert row["ramp_up_share"] > 0.5 and mostly_ramp_up(row)
    # another reading of the same run: its ions' true species (/truth) hold mostly detector
    # background (which is what a ramp-up at ~0.03 % per pulse detects); the long one not
    assert _background_share(short.out_path) > 0.5

    sweep.write_text(f"name: s\nbase: {BASE}\nions: 150000\naxes:\n  run.seed: [1]\n")
    (long,) = build_tasks(load_sweep(sweep), tmp_path / "long")
    row_long = simulate_and_analyze(long)
    assert row_long["ramp_up_share"] < 0.5 and not mostly_ramp_up(row_long)
    assert _background_share(long.out_path) < 0.25


def test_plot_and_warning_name_the_ramp_up_points(tmp_path: Path):
    rows = []
    for i, (pj, share) in enumerate([(5, 0.9), (10, 0.1), (20, None)]):
        rows.append({"point": i, "state": "done", "error": None, "laser_pj": pj,
                     "specimen_name": "x", "ramp_up_share": share,
                     **flatten_report(fake_report(pj))})
    warning = ramp_up_warning(rows)
    assert warning is not None and "1 of 3 points" in warning and "points 0)" in warning
    fig = calibration_figure(rows, {}, tmp_path / "c.png", title="t")
    assert "WARNING" in fig._suptitle.get_text() and "points 0)" in fig._suptitle.get_text()
    crosses = [c for c in fig.axes[0].collections
               if c.get_label().startswith("mostly ramp-up")]
    assert len(crosses) == 1 and len(crosses[0].get_offsets()) == 1
    # no ramp-up point: no warning, no crosses
    for r in rows:
        r["ramp_up_share"] = 0.05
    assert ramp_up_warning(rows) is None
    fig = calibration_figure(rows, {}, None, title="t")
    assert fig._suptitle.get_text() == "t"
    assert not [c for c in fig.axes[0].collections
                if c.get_label().startswith("mostly ramp-up")]


def _background_share(path: Path) -> float:
    with RunReader(path) as r:
        truth = r.read("truth")
    return float(np.mean(truth["species"] < 0))
