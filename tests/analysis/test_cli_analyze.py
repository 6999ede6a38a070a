"""The analyze and plot commands end to end on a synthetic run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from apt_daq.cli import main
from apt_daq.io.store import LOG_DTYPE

from .synth import make_run


def test_analyze_json_and_plot(tmp_path: Path, capsys) -> None:
    run = make_run(tmp_path / "a.h5", n=20_000, seed=4)
    assert main(["analyze", str(run), "--json", "--roi", "cylinder:25"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["roi"].startswith("cylinder 25") and s["ions"] < 20_000
    assert set(s["composition"]["Li"]) >= {"fraction", "error"}
    assert main(["plot", str(run), "-o", str(tmp_path / "p")]) == 0
    names = {p.name for p in (tmp_path / "p").iterdir()}
    assert {"spectrum.png", "hitmap.png", "fda.png", "profile.png", "slices.png"} <= names
    assert all((tmp_path / "p" / n).stat().st_size > 5000 for n in names)


def test_analyze_bad_input_exits_2(tmp_path: Path, capsys) -> None:
    assert main(["analyze", str(tmp_path / "missing.h5")]) == 2
    bad = tmp_path / "bad.rrng"
    bad.write_text("[Ranges]\nNumber=1\nRange1=16.2 15.9 O:1\n")
    run = make_run(tmp_path / "b.h5", n=5000)
    assert main(["analyze", str(run), "--ranges", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.rrng:3" in err


def test_an_fda_ion_no_range_names_is_a_warning(tmp_path: Path, capsys) -> None:
    """fda_ions [Li+, Cu+] on a run whose ranges have no Cu+: one warning naming Cu+ (its FDA
    was left out of the report without a word); Li+'s FDA is there. The default fda_ions
    on a run without Li (a Si specimen, say) are no request: no warning."""
    run = make_run(tmp_path / "f.h5", n=5000, fda_ions=["Li+", "Cu+"])
    assert main(["analyze", str(run), "--json", "--no-store"]) == 0
    out = capsys.readouterr()
    assert "Li+" in json.loads(out.out)["fda"]
    warned = [line for line in out.err.splitlines() if "fda_ions" in line]
    assert len(warned) == 1 and "analysis.fda_ions Cu+: no range names it" in warned[0], out.err
    run = make_run(tmp_path / "g.h5", n=5000, ions={"Ni+": 1.0, "O+": 1.0})
    assert main(["analyze", str(run), "--json", "--no-store"]) == 0
    assert "fda_ions" not in capsys.readouterr().err


def test_analyze_settled(tmp_path: Path, capsys) -> None:
    """--settled leaves out the hits before the first block at half the target rate; a run
    without a log is a clear error (exit 2), not a traceback."""
    log = np.zeros(4, LOG_DTYPE)
    log["pulses"] = np.arange(1, 5) * 1_000_000
    log["rate"] = [0.0, 0.0, 0.005, 0.005]
    run = make_run(tmp_path / "s.h5", n=20_000, seed=4, log=log)  # a hit every 200 pulses
    assert main(["analyze", str(run), "--json", "--roi", "none", "--settled"]) == 0
    assert json.loads(capsys.readouterr().out)["ions"] == 20_000 - 2_000_000 // 200
    bare = make_run(tmp_path / "nolog.h5", n=2_000, seed=4)
    assert main(["analyze", str(bare), "--settled"]) == 2
    assert "cannot tell the ramp-up" in capsys.readouterr().err
