"""Found by a new user's audit of ``analyze`` from the outside (Dec 2026), judged from what the
CLI prints: an ROI that holds no ion says so on stderr (it passed silently with empty
tables)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_cli_polish import RUN, cli


@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> Path:
    """3000 simulated ions: most of them ramp-up background."""
    from apt_daq.run import Session

    out = tmp_path_factory.mktemp("run") / "small.h5"
    Session.from_yaml(RUN, {"run.stop.ions": 3000}, out=out, handle_signals=False).run()
    return out


def warnings(proc, needle: str) -> list[str]:
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    return [s for s in proc.stderr.splitlines() if s.startswith("warning:") and needle in s]


@pytest.mark.parametrize(("roi", "named"), [
    ("cylinder:0.001", "cylinder 0.001 nm diameter along z"),
    ("cylinder:10,500,0", "cylinder 10 nm diameter along z through (500, 0) nm"),
    ("box:5,5,5,0,0,900", "box 5 x 5 x 5 nm at (0, 0, 900) nm")])
def test_an_roi_that_holds_no_ion_is_one_warning(small_run, roi, named):
    proc = cli("analyze", str(small_run), "--no-store", "--roi", roi)
    lines = warnings(proc, "holds 0 ions")
    assert len(lines) == 1, proc.stderr
    assert named in lines[0] and "n/a" in lines[0] and "the ions lie at x " in lines[0], lines[0]
    js = cli("analyze", str(small_run), "--no-store", "--roi", roi, "--json")
    assert len(warnings(js, "holds 0 ions")) == 1, js.stderr
    s = json.loads(js.stdout)
    assert s["ions"] == 0 and all(v["fraction"] is None for v in s["composition"].values())


def test_an_roi_that_holds_ions_is_not_flagged(small_run):
    assert warnings(cli("analyze", str(small_run), "--no-store", "--roi", "cylinder:25"),
                    "ROI") == []
