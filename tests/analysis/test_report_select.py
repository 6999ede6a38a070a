"""analyze(select=...): one part of a run (e.g. one laser-energy step) analysed on its own."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from apt_daq.analysis.report import analyze, laser_pj_select
from apt_daq.errors import UserError

from .synth import make_run


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("runs") / "s.h5", n=40_000, seed=5)


def test_select_first_half(run: Path) -> None:
    full = analyze(run, roi="none")
    half = analyze(run, roi="none", select=lambda h: h["pulse"] < 20_000 * 200)
    assert half.summary["ions_selected"] == 20_000
    assert half.summary["ions"] == 20_000
    assert int(half.hitmap[0].sum()) == 20_000
    # the reconstruction still runs over every hit: same final depth
    assert half.summary["reconstruction"]["depth_nm"] == pytest.approx(
        full.summary["reconstruction"]["depth_nm"])
    # the selected ions keep the positions they have in the whole run's reconstruction
    for k in ("x", "y", "z"):
        np.testing.assert_allclose(half.slices[k], full.slices[k][:20_000], rtol=1e-6)
    # composition of the half agrees with the truth of the selected ions
    truth = half.summary["truth"]["composition_detected"]
    for el, v in half.summary["composition"].items():
        assert v["fraction"] == pytest.approx(truth.get(el, 0.0), abs=3 * v["error"] + 2e-3), el


def test_laser_pj_select(run: Path) -> None:
    same = analyze(run, roi="none", select=laser_pj_select(5.0))
    assert same.summary["ions_selected"] == same.summary["ions_total"]
    with pytest.raises(UserError, match="keeps no hits"):
        analyze(run, roi="none", select=laser_pj_select(10.0))
