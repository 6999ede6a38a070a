"""``apt-daq analyze`` warns when most of a run's ions came in the ramp-up, counted in ions
(the data analysed), as docs/analysis.md says. Counted in pulses it fired on every quickstart
run: the ramp-up's pulses are many (half of a 200 000-ion run's, 80 % of a 60 000-ion one's)
and its ions few (6 %, 18 %), and a warning that always fires is one users learn to ignore."""

from __future__ import annotations

from pathlib import Path

import pytest

from apt_daq.analysis.report import ramp_up_share
from apt_daq.cli import main

ROOT = Path(__file__).resolve().parents[2]
RUN = ROOT / "configs/runs/nmc811-cr-5pj.yaml"


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """The quickstart run stopped at 60 000 ions (past its ramp-up) and at 15 000 (mostly
    ramp-up: its ~11 000 ramp-up hits are detector background while V climbs)."""
    d = tmp_path_factory.mktemp("ramp")
    out = {}
    for n in (60_000, 15_000):
        out[n] = d / f"r{n}.h5"
        assert main(["run", str(RUN), "-o", str(out[n]), "--ions", str(n), "--quiet"]) == 0
    return out


def _ramp_up_warnings(run: Path, capsys) -> list[str]:
    capsys.readouterr()
    assert main(["analyze", str(run), "--json", "--no-store", "--roi", "none"]) == 0
    return [line for line in capsys.readouterr().err.splitlines() if "(ramp-up)" in line]


def test_a_run_past_its_ramp_up_is_not_warned(runs: dict[int, Path], capsys):
    run = runs[60_000]
    by_ions = ramp_up_share(run, per="ions")
    assert by_ions is not None and by_ions < 0.5  # most ions measure the steady state ...
    assert ramp_up_share(run, per="pulses") > 0.5  # ... while most pulses were the ramp-up's
    assert _ramp_up_warnings(run, capsys) == []


def test_a_run_mostly_of_ramp_up_ions_is_warned_in_ions(runs: dict[int, Path], capsys):
    run = runs[15_000]
    share = ramp_up_share(run, per="ions")
    assert share is not None and 0.5 < share < 1.0
    lines = _ramp_up_warnings(run, capsys)
    assert len(lines) == 1, lines
    assert f"{100 * share:.0f} % of its ions came before the detection rate" in lines[0], lines
    assert "--settled" in lines[0]


def test_run_says_the_rate_it_held_after_the_ramp_up(tmp_path: Path, capsys):
    """`apt-daq run` printed "0.299 % detection rate" for a run held at its 0.5 % target:
    the whole run's pulses count the ramp-up's (an outside audit read it as the feedback
    missing its target). It now also gives the rate after the ramp-up, judged against the
    config's target and the feedback's +-10 % band, and against the file's own totals."""
    import re

    import h5py

    out = tmp_path / "held.h5"
    capsys.readouterr()
    assert main(["run", str(RUN), "-o", str(out), "--ions", "150000"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    m = re.search(r"(\d+) ions in (\d+) pulses \(([\d.]+) % detection rate; ([\d.]+) % after "
                  r"the ramp-up's ([\d.]+) M pulses\)", text)
    assert m, text
    ions, pulses, overall, held, ramp_m = (int(m[1]), int(m[2]), float(m[3]), float(m[4]),
                                           float(m[5]))
    assert abs(held - 0.5) <= 0.05, held  # the target, within the rate band
    assert overall < 0.9 * held
    with h5py.File(out, "r") as f:  # the counts the line rests on, read without apt-daq
        n_hits = f["hits"].shape[0]
        first_settled = f["hits"]["pulse"][f["hits"]["pulse"] >= ramp_m * 1e6]
    assert ions == n_hits
    # the hits from the end of the ramp-up on, over the pulses from there: the held rate
    assert abs(100 * len(first_settled) / (pulses - ramp_m * 1e6) - held) < 0.02 * held + 0.002
