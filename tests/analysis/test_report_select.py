"""analyze(select=...): one part of a run (e.g. one laser-energy step) analysed on its own."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from apt_daq.analysis.report import _reference_range, analyze, laser_pj_select, settled_select
from apt_daq.config import load_run
from apt_daq.errors import UserError
from apt_daq.io.store import LOG_DTYPE

from .synth import RUN_YAML, make_run


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


def test_settled_select_drops_the_ramp_up(tmp_path: Path) -> None:
    """Hits before the first block at >= half the target rate are left out; the block that
    reached it is kept from its first pulse (the previous log row's count)."""
    target = load_run(RUN_YAML).run.target_detection_rate
    log = np.zeros(8, LOG_DTYPE)
    log["pulses"] = np.arange(1, 9) * 1_000_000  # cumulative at each block's end
    log["rate"] = [0.05 * target] * 3 + [0.6 * target] + [target] * 4
    path = make_run(tmp_path / "ramp.h5", n=40_000, seed=2, log=log)  # a hit every 200 pulses
    sel = settled_select(path)
    res = analyze(path, roi="none", select=sel)
    assert res.summary["ions"] == 40_000 - 3_000_000 // 200
    # a run that never reached the target keeps everything
    log["rate"] = 0.1 * target
    never = make_run(tmp_path / "never.h5", n=2_000, seed=2, log=log)
    pulses = np.arange(2_000) * 200
    assert settled_select(never)(np.rec.fromarrays([pulses], names="pulse")).all()


def test_reference_range_prefers_a_peak_across_the_detector() -> None:
    """A rim-only range (a coating's Cr2+) with more counts loses to the most counted range in
    the central half of the radius; without central hits the overall count decides."""
    rng = np.random.default_rng(0)
    r_det = 40.0
    n_rim, n_core = 6_000, 4_000
    r = np.concatenate([rng.uniform(0.85, 1.0, n_rim), np.sqrt(rng.random(n_core))]) * r_det
    phi = rng.uniform(0, 2 * np.pi, n_rim + n_core)
    x, y = r * np.cos(phi), r * np.sin(phi)
    ion = np.concatenate([np.zeros(n_rim, np.int16), np.ones(n_core, np.int16)])
    assert np.bincount(ion).argmax() == 0
    assert _reference_range(ion, x, y, r_det, 3) == 1
    rim = r > 0.6 * r_det
    assert _reference_range(ion[rim], x[rim], y[rim], r_det, 3) == 0
